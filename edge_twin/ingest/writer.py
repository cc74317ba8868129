"""Committing a batch of raw messages: decode each, then one transaction for all.

    [RawMessage] -> decode -> INSERT readings (idempotent) + quarantine + device status
                 -> COMMIT -> BatchResult

The MQTT subscriber acknowledges a batch only after ``commit`` returns; ``edge-twin
replay`` calls the same ``commit`` with messages read from files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_twin.config import Config
from edge_twin.domain import Device, DeviceStatus, Reading, Rejection
from edge_twin.ingest.decode import DecodeLimits, Decoder
from edge_twin.store import Store, devices, quarantine, readings


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    payload: bytes
    received_at: float  # gateway clock


@dataclass(slots=True)
class BatchResult:
    messages: int = 0
    readings_new: int = 0
    readings_duplicate: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(slots=True)
class IngestTotals:
    """What a run of commits added up to: live ingest's stats and replay's summary."""

    messages: int = 0
    batches: int = 0
    readings_new: int = 0
    readings_duplicate: int = 0
    rejected: int = 0
    largest_batch: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, result: BatchResult) -> None:
        self.messages += result.messages
        self.batches += 1
        self.largest_batch = max(self.largest_batch, result.messages)
        self.readings_new += result.readings_new
        self.readings_duplicate += result.readings_duplicate
        self.rejected += result.rejected
        for rejection in result.rejections:
            key = rejection.reason.value
            self.rejected_by_reason[key] = self.rejected_by_reason.get(key, 0) + 1


class DeviceRegistry:
    """Provisioned devices, cached. A miss re-reads the store, so a newly provisioned
    device is accepted without a restart; and the whole cache is dropped when a binding
    changed (from the CLI in another process, say), so a device moved to another patient
    is never bound to the old one."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, Device] = {}
        self._version = devices.bindings_version(store)

    def refresh(self) -> None:
        """Called before each batch: one cheap read of the bindings' version."""
        version = devices.bindings_version(self._store)
        if version != self._version:
            self._cache.clear()
            self._version = version

    def lookup(self, device_id: str) -> Device | None:
        device = self._cache.get(device_id)
        if device is None:
            device = devices.get(self._store, device_id)
            if device is not None:
                self._cache[device_id] = device
        return device


class IngestWriter:
    def __init__(self, store: Store, config: Config) -> None:
        self._store = store
        self.registry = DeviceRegistry(store)
        self.decoder = Decoder(
            prefix=config.mqtt.topic_prefix,
            limits=DecodeLimits(
                max_payload_bytes=config.ingest.max_payload_bytes,
                backfill_after_s=config.ingest.backfill_after_s,
                future_tolerance_s=config.ingest.future_tolerance_s,
                clock_skew_tolerance_s=config.ingest.clock_skew_tolerance_s,
            ),
            lookup=self.registry.lookup,
            latest=lambda device_id, signal: readings.latest_time(store, device_id, signal),
        )

    def commit(self, messages: Sequence[RawMessage], statuses: bool = True) -> BatchResult:
        """Decode and durably store ``messages``; raises StoreError if the commit fails
        (then nothing of the batch is stored and none of it may be acknowledged).
        ``statuses=False``: what the devices said about themselves (status reports, clock
        offsets) is not recorded (a capture replayed again over times already lived)."""
        result = BatchResult(messages=len(messages))
        self.registry.refresh()
        accepted: list[Reading] = []
        rejected: list[tuple[float, str, bytes, Rejection, str | None]] = []
        reported: list[tuple[DeviceStatus, float]] = []
        for msg in messages:
            decoded = self.decoder.decode(msg.topic, msg.payload, msg.received_at)
            accepted.extend(decoded.readings)
            for rejection in decoded.rejections:
                rejected.append(
                    (msg.received_at, msg.topic, msg.payload, rejection, decoded.device_id)
                )
            if decoded.status is not None:
                reported.append((decoded.status, msg.received_at))
        try:
            with self._store.transaction() as conn:
                new = readings.insert(conn, accepted) if accepted else 0
                if rejected:
                    quarantine.insert(conn, rejected)
                for status, at in reported if statuses else ():
                    devices.record_status(conn, status, at)
        except BaseException:
            # The decoder remembered these readings as the newest; they were not stored.
            self.decoder.forget_latest()
            raise
        result.readings_new = new
        result.readings_duplicate = len(accepted) - new
        result.rejected = len(rejected)
        result.rejections = [r[3] for r in rejected]
        return result
