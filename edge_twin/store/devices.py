"""Provisioning: which device belongs to which patient. The payload never says."""

from __future__ import annotations

import re
import sqlite3

from edge_twin.domain import Device, DeviceStatus, DeviceType
from edge_twin.errors import ProvisioningError
from edge_twin.store.database import Store

# Device and patient ids appear in MQTT topics and URLs: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_id(kind: str, value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ProvisioningError(
            f"{kind} id {value!r} is invalid: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


def provision(
    store: Store, device_id: str, patient_id: str, device_type: str, now: float
) -> Device:
    """Bind ``device_id`` to ``patient_id``. Re-provisioning the same binding is a no-op;
    moving a device to another patient must be done explicitly with ``unprovision`` first,
    so a typo cannot silently send one patient's readings to another."""
    check_id("device", device_id)
    check_id("patient", patient_id)
    try:
        kind = DeviceType(device_type)
    except ValueError:
        known = ", ".join(t.value for t in DeviceType)
        raise ProvisioningError(
            f"unknown device type {device_type!r}: use one of {known}"
        ) from None
    existing = get(store, device_id)
    if existing is not None:
        if existing.patient_id != patient_id or existing.device_type != kind:
            raise ProvisioningError(
                f"device {device_id} is already bound to patient {existing.patient_id} as"
                f" {existing.device_type}; unprovision it first"
            )
        return existing
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO patients (patient_id, created_at) VALUES (?, ?)",
            (patient_id, now),
        )
        conn.execute(
            "INSERT INTO devices (device_id, patient_id, device_type, provisioned_at)"
            " VALUES (?, ?, ?, ?)",
            (device_id, patient_id, kind.value, now),
        )
    return Device(device_id, patient_id, kind)


def unprovision(store: Store, device_id: str) -> None:
    with store.transaction() as conn:
        if conn.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)).rowcount == 0:
            raise ProvisioningError(f"device {device_id} is not provisioned")
        # A phone's upload secret goes with its binding (store/uploaders.py).
        conn.execute("DELETE FROM uploaders WHERE device_id = ?", (device_id,))


def get(store: Store, device_id: str) -> Device | None:
    row = store.conn.execute(
        "SELECT device_id, patient_id, device_type FROM devices WHERE device_id = ?", (device_id,)
    ).fetchone()
    return Device(row[0], row[1], DeviceType(row[2])) if row else None


def all_devices(store: Store) -> list[Device]:
    rows = store.conn.execute(
        "SELECT device_id, patient_id, device_type FROM devices ORDER BY patient_id, device_id"
    )
    return [Device(r[0], r[1], DeviceType(r[2])) for r in rows]


def patient_ids(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT patient_id FROM patients ORDER BY 1")]


def patient_exists(store: Store, patient_id: str) -> bool:
    row = store.conn.execute("SELECT 1 FROM patients WHERE patient_id = ?", (patient_id,))
    return row.fetchone() is not None


def record_status(conn: sqlite3.Connection, status: DeviceStatus, at: float) -> None:
    """Merge what the device said at gateway time ``at`` into its status row (fields it
    did not send are kept); an older report (a message decoded again from the
    quarantine) never overwrites a newer one."""
    conn.execute(
        "INSERT INTO device_status"
        " (device_id, online, battery_pct, firmware, clock_offset_s, sensor_expires_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
        " online = coalesce(excluded.online, online),"
        " battery_pct = coalesce(excluded.battery_pct, battery_pct),"
        " firmware = coalesce(excluded.firmware, firmware),"
        " clock_offset_s = coalesce(excluded.clock_offset_s, clock_offset_s),"
        " sensor_expires_at = coalesce(excluded.sensor_expires_at, sensor_expires_at),"
        " updated_at = excluded.updated_at"
        " WHERE excluded.updated_at >= device_status.updated_at",
        (
            status.device_id,
            status.online,
            status.battery_pct,
            status.firmware,
            status.clock_offset_s,
            status.sensor_expires_at,
            at,
        ),
    )


def statuses(store: Store) -> dict[str, DeviceStatus]:
    rows = store.conn.execute(
        "SELECT device_id, online, battery_pct, firmware, clock_offset_s, sensor_expires_at"
        " FROM device_status"
    )
    return {
        r[0]: DeviceStatus(r[0], None if r[1] is None else bool(r[1]), r[2], r[3], r[4], r[5])
        for r in rows
    }


def retired(store: Store, device_id: str, patient_id: str) -> Device | None:
    """The device as it was bound to ``patient_id`` before it was unprovisioned."""
    row = store.conn.execute(
        "SELECT device_id, patient_id, device_type FROM devices_retired"
        " WHERE device_id = ? AND patient_id = ? ORDER BY retired_at DESC LIMIT 1",
        (device_id, patient_id),
    ).fetchone()
    return Device(row[0], row[1], DeviceType(row[2])) if row else None


def device_ids_of(store: Store, patient_id: str) -> list[str]:
    """Every device that has been bound to the patient, now or before (their readings are
    the patient's history)."""
    rows = store.conn.execute(
        "SELECT device_id FROM devices WHERE patient_id = ?"
        " UNION SELECT device_id FROM devices_retired WHERE patient_id = ? ORDER BY 1",
        (patient_id, patient_id),
    )
    return [r[0] for r in rows]


def bindings_version(store: Store) -> int:
    """Bumped by every provision and unprovision, from any process (migration 0009)."""
    return store.version("devices")
