"""The one exception tree of edge-twin.

Foreign errors (paho, sqlite3, onnxruntime, OS) are translated where the adapter meets
them, with ``raise X(...) from exc``, so callers only ever catch these::

    EdgeTwinError
    ├── ConfigError          a setting is missing or invalid; the message says how to fix it
    ├── StoreError           the SQLite store cannot be opened, migrated or written
    │   └── StoreMisuse      SQLite refused a statement for what it is (a bug of ours)
    ├── BrokerError          the MQTT broker cannot be started, reached or subscribed to
    ├── IngestUnavailable    an upload could not be stored now (busy, stopped, commit failed)
    ├── DeviceLinkError      a Bluetooth device is away, refused pairing or broke the link
    ├── ProvisioningError    a device binding is invalid (unknown type, already bound, ...)
    ├── UnknownPatientError  a patient id the gateway has never seen
    ├── ModelError           a model (filter or ONNX) is invalid or cannot be loaded
    ├── AlarmError           an alarm action that cannot be done (unknown alarm, resolved)
    └── UpstreamError        the FHIR upstream cannot take data now (down, 5xx, 429, auth)
        └── UpstreamRefused  the upstream refused what was sent (4xx): parked, not retried

Rejected *readings* are not exceptions: decoding returns a ``Rejection`` that is kept in
quarantine, because bad input is expected and must never stop the gateway.
"""

from __future__ import annotations


class EdgeTwinError(Exception):
    """Base of every error edge-twin raises on purpose."""


class ConfigError(EdgeTwinError):
    """A configuration value is missing or invalid."""


class StoreError(EdgeTwinError):
    """The SQLite store failed."""


class StoreMisuse(StoreError):
    """SQLite refused a statement for what it is, not for the store's state (a value of
    the wrong type, a constraint broken, an API misused): a bug, which trying again does
    not cure, unlike a full disk or a lock."""


class BrokerError(EdgeTwinError):
    """The MQTT broker failed or could not be reached."""


class IngestUnavailable(EdgeTwinError):
    """An upload through the API could not be stored now: the client may retry."""


class DeviceLinkError(EdgeTwinError):
    """A Bluetooth device cannot be reached, paired or read now (ble_bridge): retried."""


class ProvisioningError(EdgeTwinError):
    """A device cannot be bound to a patient as asked."""


class UnknownPatientError(EdgeTwinError):
    """The patient id is not known to this gateway."""

    def __init__(self, patient_id: str) -> None:
        super().__init__(f"unknown patient {patient_id!r}")
        self.patient_id = patient_id


class ModelError(EdgeTwinError):
    """A model is invalid or cannot be loaded."""


class AlarmError(EdgeTwinError):
    """An alarm action that cannot be done (unknown alarm, already resolved, ...)."""


class UpstreamError(EdgeTwinError):
    """The FHIR upstream cannot take data now: retried later with back-off."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamRefused(UpstreamError):
    """The upstream refused a request for what it holds (4xx): sending it again unchanged
    will not help. ``outcome`` is the server's OperationOutcome (JSON text)."""

    def __init__(self, message: str, status: int, outcome: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
