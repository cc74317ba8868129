"""Phones that upload like a Nightscout client, each a provisioned device with its own
secret. A client sends the SHA-1 hex digest of its secret in the ``api-secret`` header
(Nightscout's convention); the store keeps the SHA-256 of that digest, so the header can
be looked up but the secret (192 random bits) is never stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edge_twin.domain import Device
from edge_twin.errors import ProvisioningError
from edge_twin.store import devices
from edge_twin.store.database import Store


@dataclass(frozen=True, slots=True)
class Uploader:
    device_id: str
    patient_id: str
    issued_at: float
    revoked_at: float | None


def api_secret(secret: str) -> str:
    """What a Nightscout client sends for ``secret``: its SHA-1 hex digest."""
    # SHA-1: the protocol's choice, not ours; the store hashes it again (SHA-256).
    return hashlib.sha1(secret.encode()).hexdigest()


def _digest(header: str) -> str:
    return hashlib.sha256(header.strip().lower().encode()).hexdigest()


def issue(store: Store, device_id: str, secret: str, at: float) -> None:
    """Give the provisioned ``device_id`` the upload secret ``secret`` (replacing any)."""
    if devices.get(store, device_id) is None:
        raise ProvisioningError(f"device {device_id} is not provisioned: provision it first")
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO uploaders (device_id, secret_digest, issued_at, revoked_at)"
            " VALUES (?, ?, ?, NULL) ON CONFLICT (device_id) DO UPDATE SET"
            " secret_digest = excluded.secret_digest, issued_at = excluded.issued_at,"
            " revoked_at = NULL",
            (device_id, _digest(api_secret(secret)), at),
        )


def revoke(store: Store, device_id: str, at: float) -> bool:
    """Stop ``device_id``'s secret; False if it had none (or it was revoked)."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "UPDATE uploaders SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
            (at, device_id),
        )
    return cursor.rowcount > 0


def device_for(store: Store, header: str) -> Device | None:
    """The device whose secret's SHA-1 hex digest is ``header`` (any case); None if no
    active uploader has it."""
    row = store.conn.execute(
        "SELECT device_id FROM uploaders WHERE secret_digest = ? AND revoked_at IS NULL",
        (_digest(header),),
    ).fetchone()
    return None if row is None else devices.get(store, str(row[0]))


def listing(store: Store) -> list[Uploader]:
    rows = store.conn.execute(
        "SELECT u.device_id, d.patient_id, u.issued_at, u.revoked_at FROM uploaders u"
        " JOIN devices d USING (device_id) ORDER BY u.device_id"
    )
    return [Uploader(r[0], r[1], r[2], r[3]) for r in rows]
