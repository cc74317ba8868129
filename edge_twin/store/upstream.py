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

from edge_twin.domain import DeviceType, Signal
from edge_twin.errors import ProvisioningError
from edge_twin.store.consumers import Consumer, Log, position
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
    device_id: str | None = None  # the readings it carries: device, device time span
    t_from: float | None = None
    t_to: float | None = None

    @property
    def span(self) -> tuple[str, float, float] | None:
        if self.device_id is None or self.t_from is None or self.t_to is None:
            return None
        return (self.device_id, self.t_from, self.t_to)


@dataclass(frozen=True, slots=True)
class Window:
    patient_id: str
    device_id: str
    device_type: DeviceType
    signal: Signal
    start: float
    first_dirty_at: float  # since when it holds readings the upstream has not seen
    dirty_at: float  # when the last of them was added


def positions(conn: sqlite3.Connection) -> dict[str, int]:
    """How far the upstream has accepted each log, by consumer name."""
    return {c.name: position(conn, c) for c in CONSUMERS}


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


def consenting(conn: sqlite3.Connection) -> dict[str, float]:
    """The patients who consent, each with when they gave it: what the gateway stored
    before (or while consent was withdrawn) never leaves it."""
    rows = conn.execute(
        "SELECT patient_id, coalesce(consent_changed_at, 0) FROM patients WHERE upstream_consent"
    )
    return {r[0]: float(r[1]) for r in rows}


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
    span: tuple[str, float, float] | None = None,
) -> None:
    """Keep a refused resource with the server's reason (the same one again replaces it);
    ``span`` (device, first and last device time): the readings it carries, which
    retention then keeps."""
    device_id, t_from, t_to = span or (None, None, None)
    conn.execute(
        "INSERT INTO sync_parked (patient_id, resource_type, identifier, resource, status,"
        " outcome, parked_at, device_id, t_from, t_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (identifier) DO UPDATE SET resource = excluded.resource,"
        " status = excluded.status, outcome = excluded.outcome, parked_at = excluded.parked_at",
        (
            patient_id,
            resource_type,
            identifier,
            resource,
            status,
            outcome[:OUTCOME_MAX],
            at,
            device_id,
            t_from,
            t_to,
        ),
    )


def parked(conn: sqlite3.Connection, limit: int = 1000) -> list[Parked]:
    rows = conn.execute(
        "SELECT id, patient_id, resource_type, identifier, resource, status, outcome, parked_at,"
        " device_id, t_from, t_to FROM sync_parked ORDER BY id LIMIT ?",
        (limit,),
    )
    return [Parked(*row) for row in rows]


def unpark(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM sync_parked WHERE id = ?", [(i,) for i in ids])


def unpark_identifiers(conn: sqlite3.Connection, identifiers: Iterable[str]) -> None:
    """A newer version of these resources was accepted: what was parked is superseded."""
    conn.executemany("DELETE FROM sync_parked WHERE identifier = ?", [(i,) for i in identifiers])


def parked_by_patient(conn: sqlite3.Connection) -> dict[str, tuple[int, float]]:
    """Per patient: how many resources are parked, and since when."""
    rows = conn.execute(
        "SELECT patient_id, count(*), min(parked_at) FROM sync_parked GROUP BY patient_id"
    )
    return {r[0]: (int(r[1]), float(r[2])) for r in rows}


# --- summary windows -------------------------------------------------------------------


def mark_windows(conn: sqlite3.Connection, windows: Iterable[Window]) -> None:
    conn.executemany(
        "INSERT INTO sync_windows (patient_id, device_id, device_type, signal, start,"
        " first_dirty_at, dirty_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id, signal, start) DO UPDATE SET dirty_at = excluded.dirty_at",
        [
            (
                w.patient_id,
                w.device_id,
                w.device_type.value,
                w.signal.value,
                w.start,
                w.first_dirty_at,
                w.dirty_at,
            )
            for w in windows
        ],
    )


def due_windows(
    conn: sqlite3.Connection, ended_before: float, length_s: float, limit: int
) -> list[Window]:
    """Windows whose hour ended before ``ended_before``, oldest first."""
    rows = conn.execute(
        "SELECT patient_id, device_id, device_type, signal, start, first_dirty_at, dirty_at"
        " FROM sync_windows WHERE start + ? <= ? ORDER BY start, device_id, signal LIMIT ?",
        (length_s, ended_before, limit),
    )
    return [Window(r[0], r[1], DeviceType(r[2]), Signal(r[3]), r[4], r[5], r[6]) for r in rows]


def clear_window(conn: sqlite3.Connection, w: Window) -> None:
    """Done with a window, unless a reading was added to it since it was read."""
    conn.execute(
        "DELETE FROM sync_windows WHERE device_id = ? AND signal = ? AND start = ?"
        " AND dirty_at = ?",
        (w.device_id, w.signal.value, w.start, w.dirty_at),
    )


def pending_windows(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM sync_windows").fetchone()[0])


def oldest_unsent(conn: sqlite3.Connection, positions: dict[str, int]) -> dict[str, float]:
    """Per consenting patient: when the oldest of their data not yet accepted upstream
    was stored (readings, alarm events and risks after the consumers' positions, stored
    since the consent; readings in pending windows). ``positions`` by consumer name."""
    out: dict[str, float] = {}
    if not consenting(conn):
        return out  # nothing may leave: no log need be read (a scan of all of them)
    rows = conn.execute(
        "SELECT r.patient_id, min(r.received_at) FROM readings r JOIN patients p"
        " ON p.patient_id = r.patient_id AND p.upstream_consent WHERE r.id > ?"
        " AND r.received_at >= coalesce(p.consent_changed_at, 0) GROUP BY r.patient_id",
        (positions[READINGS_CONSUMER.name],),
    ).fetchall()
    rows += conn.execute(
        "SELECT w.patient_id, min(w.first_dirty_at) FROM sync_windows w JOIN patients p"
        " ON p.patient_id = w.patient_id AND p.upstream_consent GROUP BY w.patient_id"
    ).fetchall()
    rows += conn.execute(
        "SELECT a.patient_id, min(e.recorded_at) FROM alarm_events e"
        " JOIN alarms a ON a.id = e.alarm_id"
        " JOIN patients p ON p.patient_id = a.patient_id AND p.upstream_consent"
        " WHERE e.id > ? AND e.recorded_at >= coalesce(p.consent_changed_at, 0)"
        " GROUP BY a.patient_id",
        (positions[ALARMS_CONSUMER.name],),
    ).fetchall()
    rows += conn.execute(
        "SELECT k.patient_id, min(k.computed_at) FROM risk_assessments k JOIN patients p"
        " ON p.patient_id = k.patient_id AND p.upstream_consent WHERE k.id > ?"
        " AND k.computed_at >= coalesce(p.consent_changed_at, 0) GROUP BY k.patient_id",
        (positions[RISKS_CONSUMER.name],),
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
    ``arrived_before``, not in a wrist hour (``window_s`` long) still to be sent, not in
    a parked resource. Returns how many."""
    return conn.execute(
        "DELETE FROM readings WHERE id IN (SELECT r.id FROM readings r"
        " JOIN patients p ON p.patient_id = r.patient_id AND p.upstream_consent"
        # The newest row always stays: SQLite gives a new row max(id) + 1, and ids
        # behind the consumers' positions would never be read.
        " WHERE r.id <= ? AND r.id < (SELECT max(id) FROM readings)"
        " AND r.received_at < ? AND r.received_at >= p.consent_changed_at"
        " AND NOT EXISTS (SELECT 1 FROM sync_windows w WHERE w.device_id = r.device_id"
        " AND w.signal = r.signal AND r.t >= w.start AND r.t < w.start + ?)"
        " AND NOT EXISTS (SELECT 1 FROM sync_parked k WHERE k.device_id = r.device_id"
        " AND r.t >= k.t_from AND r.t <= k.t_to)"
        " ORDER BY r.id LIMIT ?)",
        (safe_position, arrived_before, window_s, limit),
    ).rowcount
