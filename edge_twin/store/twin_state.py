"""Persisted filter states, so a restarted gateway resumes warm.

The twin saves its states and its position in the readings log (store/consumers.py) in one
transaction: after a crash it resumes from that position, so every stored reading is applied
to the twin exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from edge_twin.domain import Signal
from edge_twin.store.database import Store


@dataclass(frozen=True, slots=True)
class FilterRecord:
    patient_id: str
    signal: Signal
    model: str
    model_version: str
    t: float
    x: tuple[float, ...]
    p: tuple[tuple[float, ...], ...]
    last_measured_at: float
    n_measurements: int
    device_ids: tuple[str, ...]
    through_reading_id: int
    n_gated: int = 0
    gated_since: float | None = None


def save(conn: sqlite3.Connection, records: Iterable[FilterRecord]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO twin_state (patient_id, signal, model, model_version, t, x, p,"
        " last_measured_at, n_measurements, device_ids, through_reading_id, n_gated,"
        " gated_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.patient_id,
                r.signal.value,
                r.model,
                r.model_version,
                r.t,
                json.dumps(r.x),
                json.dumps(r.p),
                r.last_measured_at,
                r.n_measurements,
                json.dumps(r.device_ids),
                r.through_reading_id,
                r.n_gated,
                r.gated_since,
            )
            for r in records
        ],
    )


def load(
    store: Store, patient_id: str | None = None, signals: Iterable[Signal] | None = None
) -> list[FilterRecord]:
    """Filter states, all or one patient's, all signals or these (a reader on the hot path
    decodes only the states it needs)."""
    clauses, args = [], []
    if patient_id:
        clauses.append("patient_id = ?")
        args.append(patient_id)
    if signals is not None:
        wanted = [s.value for s in signals]
        clauses.append(f"signal IN ({','.join('?' * len(wanted))})")
        args += wanted
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = store.conn.execute(
        "SELECT patient_id, signal, model, model_version, t, x, p, last_measured_at,"
        f" n_measurements, device_ids, through_reading_id, n_gated, gated_since"
        f" FROM twin_state {where}"
        " ORDER BY patient_id, signal",
        args,
    )
    return [
        FilterRecord(
            patient_id=r[0],
            signal=Signal(r[1]),
            model=r[2],
            model_version=r[3],
            t=r[4],
            x=tuple(json.loads(r[5])),
            p=tuple(tuple(row) for row in json.loads(r[6])),
            last_measured_at=r[7],
            n_measurements=r[8],
            device_ids=tuple(json.loads(r[9])),
            through_reading_id=r[10],
            n_gated=r[11],
            gated_since=r[12],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class DayStartRow:
    """A filter's state at a UTC midnight, from the readings before it."""

    t: float
    x: tuple[float, ...]
    p: tuple[tuple[float, ...], ...]
    n_measurements: int
    last_measured_at: float


def save_day_starts(
    conn: sqlite3.Connection,
    patient_id: str,
    signal: Signal,
    model: tuple[str, str],
    states: Iterable[DayStartRow],
) -> None:
    """Upsert: a re-processed day replaces what was saved for it."""
    conn.executemany(
        "INSERT OR REPLACE INTO twin_day_start (patient_id, signal, day_start, model,"
        " model_version, x, p, n_measurements, last_measured_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                patient_id,
                signal.value,
                s.t,
                model[0],
                model[1],
                json.dumps(s.x),
                json.dumps(s.p),
                s.n_measurements,
                s.last_measured_at,
            )
            for s in states
        ],
    )


def load_day_starts(
    store: Store, patient_id: str, signal: Signal, model: tuple[str, str], since: float
) -> list[DayStartRow]:
    """Snapshots of this model (other versions' numbers mean other things) from ``since``."""
    rows = store.conn.execute(
        "SELECT day_start, x, p, n_measurements, last_measured_at FROM twin_day_start"
        " WHERE patient_id = ? AND signal = ? AND model = ? AND model_version = ?"
        " AND day_start >= ? ORDER BY day_start",
        (patient_id, signal.value, model[0], model[1], since),
    )
    return [
        DayStartRow(r[0], tuple(json.loads(r[1])), tuple(map(tuple, json.loads(r[2]))), r[3], r[4])
        for r in rows
    ]


def latest_time(store: Store, patient_id: str) -> float | None:
    """The newest event time any of the patient's filters has reached."""
    row = store.conn.execute(
        "SELECT max(t) FROM twin_state WHERE patient_id = ?", (patient_id,)
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def has_any(store: Store, patient_id: str, signals: Iterable[Signal]) -> bool:
    """Whether the patient has a filter for any of these signals."""
    wanted = [s.value for s in signals]
    marks = ",".join("?" * len(wanted))
    row = store.conn.execute(
        f"SELECT 1 FROM twin_state WHERE patient_id = ? AND signal IN ({marks}) LIMIT 1",
        (patient_id, *wanted),
    ).fetchone()
    return row is not None


def time_of(store: Store, patient_id: str, signal: Signal) -> float | None:
    """The event time one filter has reached (cheap: no state decoded)."""
    row = store.conn.execute(
        "SELECT t FROM twin_state WHERE patient_id = ? AND signal = ?",
        (patient_id, signal.value),
    ).fetchone()
    return None if row is None else float(row[0])
