"""What FHIR upstream sync keeps in the store (migration 0011): each patient's consent,
the resources the upstream refused (parked), and the wrist streams' hourly windows that
hold readings the upstream has not received yet.

Sync follows three logs (``CONSUMERS``): readings, alarm events, risk assessments; each
position says what the upstream has accepted. The alert stage reads the readings
position to tell the care team when their data stops arriving.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from edge_twin.domain import Signal
from edge_twin.errors import ProvisioningError
from edge_twin.store.consumers import Consumer, Log
from edge_twin.store.database import Store

READINGS_CONSUMER = Consumer("fhir-readings", Log.READINGS)
ALARMS_CONSUMER = Consumer("fhir-alarms", Log.ALARM_EVENTS)
RISKS_CONSUMER = Consumer("fhir-risks", Log.RISKS)
CONSUMERS = (READINGS_CONSUMER, ALARMS_CONSUMER, RISKS_CONSUMER)
# An OperationOutcome is kept up to this size (a server may answer with megabytes).
OUTCOME_MAX = 4096


@dataclass(frozen=True, slots=True)
class Parked:
    id: int
    patient_id: str
    resource_type: str
    identifier: str
    resource: str  # the JSON that was refused
    status: int  # the HTTP status of the refusal
    outcome: str  # the server's OperationOutcome (JSON), cut to OUTCOME_MAX
    parked_at: float


@dataclass(frozen=True, slots=True)
class Window:
    patient_id: str
    device_id: str
    signal: Signal
    start: float
    dirty_at: float  # when a reading the upstream has not seen was added to it


# --- consent ---------------------------------------------------------------------------


def set_consent(store: Store, patient_id: str, granted: bool, at: float, by: str) -> None:
    """Record whether the patient agreed to upstream sharing. Without it nothing of theirs
    leaves the gateway; readings stored while it was not given are never sent."""
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE patients SET upstream_consent = ?, consent_changed_at = ?,"
            " consent_changed_by = ? WHERE patient_id = ?",
            (int(granted), at, by, patient_id),
        ).rowcount
        if not changed:
            raise ProvisioningError(f"patient {patient_id} is not provisioned")


def consenting(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT patient_id FROM patients WHERE upstream_consent")}


# --- parked resources ------------------------------------------------------------------


def park(
    conn: sqlite3.Connection,
    patient_id: str,
    resource_type: str,
    identifier: str,
    resource: str,
    status: int,
    outcome: str,
    at: float,
) -> None:
    """Keep a refused resource with the server's reason (the same one again replaces it)."""
    conn.execute(
        "INSERT INTO sync_parked (patient_id, resource_type, identifier, resource, status,"
        " outcome, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (identifier) DO UPDATE"
        " SET resource = excluded.resource, status = excluded.status,"
        " outcome = excluded.outcome, parked_at = excluded.parked_at",
        (patient_id, resource_type, identifier, resource, status, outcome[:OUTCOME_MAX], at),
    )


def parked(conn: sqlite3.Connection, limit: int = 1000) -> list[Parked]:
    rows = conn.execute(
        "SELECT id, patient_id, resource_type, identifier, resource, status, outcome, parked_at"
        " FROM sync_parked ORDER BY id LIMIT ?",
        (limit,),
    )
    return [Parked(*row) for row in rows]


def unpark(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM sync_parked WHERE id = ?", [(i,) for i in ids])


def parked_by_patient(conn: sqlite3.Connection) -> dict[str, tuple[int, float]]:
    """Per patient: how many resources are parked, and since when."""
    rows = conn.execute(
        "SELECT patient_id, count(*), min(parked_at) FROM sync_parked GROUP BY patient_id"
    )
    return {r[0]: (int(r[1]), float(r[2])) for r in rows}


# --- summary windows -------------------------------------------------------------------


def mark_windows(conn: sqlite3.Connection, windows: Iterable[Window]) -> None:
    conn.executemany(
        "INSERT INTO sync_windows (patient_id, device_id, signal, start, dirty_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, signal, start) DO UPDATE"
        " SET dirty_at = excluded.dirty_at",
        [(w.patient_id, w.device_id, w.signal.value, w.start, w.dirty_at) for w in windows],
    )


def due_windows(
    conn: sqlite3.Connection, ended_before: float, length_s: float, limit: int
) -> list[Window]:
    """Windows whose hour ended before ``ended_before``, oldest first."""
    rows = conn.execute(
        "SELECT patient_id, device_id, signal, start, dirty_at FROM sync_windows"
        " WHERE start + ? <= ? ORDER BY start, device_id, signal LIMIT ?",
        (length_s, ended_before, limit),
    )
    return [Window(r[0], r[1], Signal(r[2]), r[3], r[4]) for r in rows]


def clear_window(conn: sqlite3.Connection, w: Window) -> None:
    """Done with a window, unless a reading was added to it since it was read."""
    conn.execute(
        "DELETE FROM sync_windows WHERE device_id = ? AND signal = ? AND start = ?"
        " AND dirty_at = ?",
        (w.device_id, w.signal.value, w.start, w.dirty_at),
    )


def pending_windows(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM sync_windows").fetchone()[0])


def oldest_unsent(
    conn: sqlite3.Connection, readings_position: int, alarms_position: int
) -> dict[str, float]:
    """Per consenting patient: when the oldest of their data not yet accepted upstream
    was stored (readings and alarm events after the consumers' positions, readings in
    pending windows)."""
    out: dict[str, float] = {}
    rows = conn.execute(
        "SELECT r.patient_id, min(r.received_at) FROM readings r JOIN patients p"
        " ON p.patient_id = r.patient_id AND p.upstream_consent WHERE r.id > ?"
        " GROUP BY r.patient_id",
        (readings_position,),
    ).fetchall()
    rows += conn.execute(
        "SELECT w.patient_id, min(w.dirty_at) FROM sync_windows w JOIN patients p"
        " ON p.patient_id = w.patient_id AND p.upstream_consent GROUP BY w.patient_id"
    ).fetchall()
    rows += conn.execute(
        "SELECT a.patient_id, min(e.recorded_at) FROM alarm_events e"
        " JOIN alarms a ON a.id = e.alarm_id"
        " JOIN patients p ON p.patient_id = a.patient_id AND p.upstream_consent"
        " WHERE e.id > ? GROUP BY a.patient_id",
        (alarms_position,),
    ).fetchall()
    for pid, at in rows:
        out[pid] = min(float(at), out.get(pid, float(at)))
    return out


def purge_confirmed(
    conn: sqlite3.Connection, arrived_before: float, safe_position: int, window_s: float, limit: int
) -> int:
    """Delete up to ``limit`` readings the upstream has confirmed: sent while their patient
    consented (arrived at or after the consent), at or before ``safe_position`` (the
    lowest position of every consumer of the readings log), arrived before
    ``arrived_before``, and not in a wrist hour (``window_s`` long) still to be sent.
    Returns how many."""
    return conn.execute(
        "DELETE FROM readings WHERE id IN (SELECT r.id FROM readings r"
        " JOIN patients p ON p.patient_id = r.patient_id AND p.upstream_consent"
        # The newest row always stays: SQLite gives a new row max(id) + 1, and ids
        # behind the consumers' positions would never be read.
        " WHERE r.id <= ? AND r.id < (SELECT max(id) FROM readings)"
        " AND r.received_at < ? AND r.received_at >= p.consent_changed_at"
        " AND NOT EXISTS (SELECT 1 FROM sync_windows w WHERE w.device_id = r.device_id"
        " AND w.signal = r.signal AND r.t >= w.start AND r.t < w.start + ?)"
        " ORDER BY r.id LIMIT ?)",
        (safe_position, arrived_before, window_s, limit),
    ).rowcount
