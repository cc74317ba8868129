"""Where upstream sync stands, per patient: for ``/health``, ``/sync`` and
``edge-twin sync status``."""

from __future__ import annotations

from typing import Any

from edge_twin.clock import to_iso
from edge_twin.store import Store, consumers, devices, upstream
from edge_twin.store.upstream import CONSUMERS, READINGS_CONSUMER

_NAMES = {c.name for c in CONSUMERS}


def sync_status(store: Store, now: float, per_patient: bool = True) -> dict[str, Any]:
    """``per_patient=False``: counts only, no patient ids (for ``/health``)."""
    conn = store.conn
    mine = {c.name: c for c in consumers.statuses(conn) if c.name in _NAMES}
    status = mine.get(READINGS_CONSUMER.name)
    waiting = upstream.oldest_unsent(conn, upstream.positions(conn))
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
    failing = [c for c in mine.values() if c.failures]
    last = max(failing, key=lambda c: c.last_error_at or 0.0, default=None)
    return {
        "backlog": 0 if status is None else status.backlog,
        "logs": {
            c.name: {"position": c.position, "backlog": c.backlog, "failures": c.failures}
            for c in mine.values()
        },
        "failures": max((c.failures for c in mine.values()), default=0),
        "last_error": None if last is None else last.last_error,
        "last_error_at": None
        if last is None or last.last_error_at is None
        else to_iso(last.last_error_at),
        "pending_summaries": upstream.pending_windows(conn),
        "parked": sum(n for n, _ in parked.values()),
        "patients_waiting": sum(1 for p in patients if p["waiting_s"] is not None),
        **({"patients": patients} if per_patient else {}),
    }
