"""Where upstream sync stands, per patient: for ``/health``, ``/sync`` and
``edge-twin sync status``."""

from __future__ import annotations

from typing import Any

from edge_twin.clock import to_iso
from edge_twin.store import Store, consumers, devices, upstream
from edge_twin.store.upstream import READINGS_CONSUMER


def sync_status(store: Store, now: float) -> dict[str, Any]:
    conn = store.conn
    status = next((c for c in consumers.statuses(conn) if c.name == READINGS_CONSUMER.name), None)
    position = 0 if status is None else status.position
    waiting = upstream.oldest_unsent(conn, position)
    parked = upstream.parked_by_patient(conn)
    consenting = upstream.consenting(conn)
    patients = []
    for pid in devices.patient_ids(store):
        oldest = waiting.get(pid)
        n_parked, parked_since = parked.get(pid, (0, None))
        patients.append(
            {
                "patient_id": pid,
                "consent": pid in consenting,
                "oldest_unsent_at": None if oldest is None else to_iso(oldest),
                "waiting_s": None if oldest is None else round(max(0.0, now - oldest)),
                "parked": n_parked,
                "parked_since": None if parked_since is None else to_iso(parked_since),
            }
        )
    return {
        "position": position,
        "backlog": 0 if status is None else status.backlog,
        "failures": 0 if status is None else status.failures,
        "last_error": None if status is None else status.last_error,
        "last_error_at": None
        if status is None or status.last_error_at is None
        else to_iso(status.last_error_at),
        "pending_summaries": upstream.pending_windows(conn),
        "parked": sum(n for n, _ in parked.values()),
        "patients": patients,
    }
