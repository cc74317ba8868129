"""Treatments an uploader reported (carbohydrates, insulin), one row per (device, time,
event type): a client that sends the same record again stores it once, and one that
edits it (xDrip+'s PUT is an upsert; AndroidAPS and Loop edit carbohydrates) updates it."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from edge_twin.domain import Treatment, TreatmentKind
from edge_twin.store.database import Store


def insert(conn: sqlite3.Connection, items: Sequence[Treatment]) -> int:
    """Insert or update inside the caller's transaction; returns how many rows were new or
    changed (the same record again changes nothing)."""
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO treatments (patient_id, device_id, t, kind, event_type,"
        " carbs_g, insulin_u, received_at, source_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id, t, event_type) DO UPDATE SET kind = excluded.kind,"
        " carbs_g = excluded.carbs_g, insulin_u = excluded.insulin_u,"
        " received_at = excluded.received_at, source_id = excluded.source_id"
        " WHERE carbs_g IS NOT excluded.carbs_g OR insulin_u IS NOT excluded.insulin_u",
        [
            (
                x.patient_id,
                x.device_id,
                x.t,
                x.kind.value,
                x.event_type,
                x.carbs_g,
                x.insulin_u,
                x.received_at,
                x.source_id,
            )
            for x in items
        ],
    )
    return conn.total_changes - before


def between(store: Store, patient_id: str, start: float, end: float) -> list[Treatment]:
    """The patient's treatments with start <= t < end, in time order."""
    rows = store.conn.execute(
        "SELECT patient_id, device_id, t, kind, event_type, carbs_g, insulin_u, received_at,"
        " source_id FROM treatments WHERE patient_id = ? AND t >= ? AND t < ? ORDER BY t, id",
        (patient_id, start, end),
    )
    return [
        Treatment(r[0], r[1], r[2], TreatmentKind(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows
    ]
