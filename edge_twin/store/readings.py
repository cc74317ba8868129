"""The readings log: accepted readings, idempotent on (device, signal, device time)."""

from __future__ import annotations

import heapq
import itertools
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from edge_twin.domain import Reading, ReadingFlag, Signal
from edge_twin.store.database import Store
from edge_twin.store.devices import device_ids_of

_COLUMNS = "id, patient_id, device_id, signal, t, value, seq, received_at, flags"


def insert(conn: sqlite3.Connection, readings: Sequence[Reading]) -> int:
    """Insert inside the caller's transaction; returns how many were new (not duplicates)."""
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO readings"
        " (patient_id, device_id, signal, t, value, seq, received_at, flags)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r.patient_id, r.device_id, r.signal.value, r.t, r.value, r.seq, r.received_at, r.flags)
            for r in readings
        ],
    )
    return conn.total_changes - before


def latest_time(store: Store, device_id: str, signal: Signal) -> float | None:
    """Newest device time stored for this device and signal (uses the UNIQUE index)."""
    row = store.conn.execute(
        "SELECT max(t) FROM readings WHERE device_id = ? AND signal = ?", (device_id, signal.value)
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def series(
    store: Store, device_ids: Sequence[str], signal: Signal, after_t: float, through_t: float
) -> list[Reading]:
    """One signal from these devices with after_t < t <= through_t, in time order (ties in
    commit order). Uses the UNIQUE (device_id, signal, t) index."""
    marks = ",".join("?" * len(device_ids))
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE device_id IN ({marks}) AND signal = ?"
        " AND t > ? AND t <= ? ORDER BY t, id",
        (*device_ids, signal.value, after_t, through_t),
    )
    return [_reading(row) for row in rows]


def points(
    store: Store,
    patient_id: str,
    device_ids: Sequence[str],
    signal: Signal,
    start: float,
    end: float,
) -> list[tuple[float, float, int]]:
    """(t, value, flags) of one signal of the patient from these devices with start <= t
    < end, in time order: what a plot draws (the UNIQUE (device_id, signal, t) index, one
    probe each). The patient is checked too: a device may have served someone else."""
    if not device_ids:
        return []
    marks = ",".join("?" * len(device_ids))
    rows = store.conn.execute(
        f"SELECT t, value, flags FROM readings WHERE device_id IN ({marks}) AND signal = ?"
        " AND t >= ? AND t < ? AND patient_id = ? ORDER BY t, id",
        (*device_ids, signal.value, start, end, patient_id),
    )
    return [(float(t), float(v), int(f)) for t, v, f in rows]


def binned(
    store: Store,
    patient_id: str,
    device_ids: Sequence[str],
    signal: Signal,
    start: float,
    end: float,
    bin_s: float,
) -> list[tuple[float, float, float, float, int]]:
    """(bin start, mean, min, max, count) of one signal of the patient over bins of
    ``bin_s`` seconds from the epoch (every zone's local midnight falls on a quarter
    hour); the database does the sums, so weeks of minute data cost one scan."""
    if not device_ids:
        return []
    marks = ",".join("?" * len(device_ids))
    rows = store.conn.execute(
        "SELECT CAST(t / ? AS INTEGER) AS b, avg(value), min(value), max(value), count(*)"
        f" FROM readings WHERE device_id IN ({marks}) AND signal = ? AND t >= ? AND t < ?"
        " AND patient_id = ? GROUP BY b ORDER BY b",
        (bin_s, *device_ids, signal.value, start, end, patient_id),
    )
    return [(b * bin_s, float(m), float(lo), float(hi), int(n)) for b, m, lo, hi, n in rows]


def after(store: Store, after_id: int, limit: int) -> list[Reading]:
    """Readings with id > ``after_id`` in commit order: how downstream stages consume."""
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
    )
    return [_reading(row) for row in rows]


def for_patient(
    store: Store, patient_id: str, signal: Signal | None = None, limit: int = 1000
) -> list[Reading]:
    """Newest first. Each of the patient's devices' series (every device ever bound to
    them) is read newest first through the UNIQUE (device_id, signal, t) index and the
    series merged: the log has no index by patient, and a scan of it takes seconds."""
    ids = device_ids_of(store, patient_id)
    signals = [signal] if signal is not None else list(Signal)
    series = [
        [
            _reading(row)
            for row in store.conn.execute(
                f"SELECT {_COLUMNS} FROM readings WHERE device_id = ? AND signal = ?"
                " AND patient_id = ? ORDER BY t DESC LIMIT ?",
                (device_id, s.value, patient_id, limit),
            )
        ]
        for device_id in ids
        for s in signals
    ]
    merged = heapq.merge(*series, key=lambda r: r.t, reverse=True)
    return list(itertools.islice(merged, limit))


def newest(
    store: Store,
    device_ids: Sequence[str],
    signal: Signal,
    limit: int,
    since: float = -math.inf,
) -> list[Reading]:
    """The newest readings of one signal from these devices (by device time), newest
    first, at most ``limit`` and none before ``since``; through the UNIQUE (device_id,
    signal, t) index, not a scan by patient."""
    if not device_ids:
        return []
    marks = ",".join("?" * len(device_ids))
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE device_id IN ({marks}) AND signal = ?"
        " AND t >= ? ORDER BY t DESC LIMIT ?",
        (*device_ids, signal.value, since, limit),
    )
    return [_reading(row) for row in rows]


def nearest(
    store: Store, device_ids: Sequence[str], signal: Signal, t: float, tolerance_s: float
) -> tuple[float, float] | None:
    """(time, value) of the reading of these devices nearest to ``t`` within the tolerance."""
    if not device_ids:
        return None
    marks = ",".join("?" * len(device_ids))
    row = store.conn.execute(
        f"SELECT t, value FROM readings WHERE device_id IN ({marks}) AND signal = ?"
        " AND t BETWEEN ? AND ? ORDER BY abs(t - ?) LIMIT 1",
        (*device_ids, signal.value, t - tolerance_s, t + tolerance_s, t),
    ).fetchone()
    return None if row is None else (float(row[0]), float(row[1]))


def patients_between(store: Store, after_id: int, through_id: int) -> set[str]:
    """The patients with readings stored in the id range (after_id, through_id]."""
    rows = store.conn.execute(
        "SELECT DISTINCT patient_id FROM readings WHERE id > ? AND id <= ?", (after_id, through_id)
    )
    return {r[0] for r in rows}


def close_gaps(
    store: Store, after_id: int, through_id: int, under_s: float
) -> dict[tuple[str, Signal], list[float]]:
    """Per device and signal, the gaps in device time shorter than ``under_s`` between
    consecutive readings stored in the id range (after_id, through_id] (a range of the
    primary key: cheap however long the log; only short gaps come back)."""
    rows = store.conn.execute(
        "SELECT device_id, signal, gap FROM (SELECT device_id, signal, t - lag(t) OVER"
        " (PARTITION BY device_id, signal ORDER BY t) AS gap FROM readings"
        " WHERE id > ? AND id <= ?) WHERE gap < ?",
        (after_id, through_id, under_s),
    )
    out: dict[tuple[str, Signal], list[float]] = {}
    for device_id, signal, gap in rows:
        out.setdefault((device_id, _SIGNALS[signal]), []).append(float(gap))
    return out


def count(store: Store) -> int:
    return int(store.conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def newest_arrival(store: Store) -> float:
    """The latest gateway time any reading came in (-inf: none yet). Scans the log: for
    a one-off (a replay's start); pages ask ``last_arrival``."""
    row = store.conn.execute("SELECT max(received_at) FROM readings").fetchone()
    return -math.inf if row[0] is None else float(row[0])


def last_arrival(store: Store) -> float:
    """When the last committed reading came in (-inf: none yet): one probe of the log's
    end (ids are commit order), for what asks every second."""
    row = store.conn.execute("SELECT received_at FROM readings ORDER BY id DESC LIMIT 1")
    found = row.fetchone()
    return -math.inf if found is None else float(found[0])


def max_id(store: Store) -> int:
    return int(store.conn.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()[0])


# Enum lookups by value are a dict away; calling the enum cost a third of reading a row.
_SIGNALS = {s.value: s for s in Signal}
_FLAGS = {int(f): f for f in (ReadingFlag(v) for v in range(2 ** len(ReadingFlag)))}


def _reading(row: tuple[Any, ...]) -> Reading:
    rid, patient, device, signal, t, value, seq, received, flags = row
    # Positional, in Reading's field order: patient_id, device_id, signal, t, value,
    # received_at, seq, flags, id (SQLite gives TEXT as str, REAL as float).
    return Reading(
        patient,
        device,
        _SIGNALS[signal],
        float(t),
        float(value),
        float(received),
        None if seq is None else int(seq),
        _FLAGS[flags] if flags in _FLAGS else ReadingFlag(flags),  # NONE is falsy
        rid,
    )


def sum_between(
    store: Store, device_ids: Sequence[str], signal: Signal, t0: float, t1: float
) -> tuple[float, int]:
    """(sum of values, count) of one signal from these devices with t0 <= t < t1."""
    if not device_ids:
        return 0.0, 0
    marks = ",".join("?" * len(device_ids))
    total, n = store.conn.execute(
        f"SELECT coalesce(sum(value), 0), count(*) FROM readings WHERE device_id IN ({marks})"
        " AND signal = ? AND t >= ? AND t < ?",
        (*device_ids, signal.value, t0, t1),
    ).fetchone()
    return float(total), int(n)


def samples(
    store: Store, device_id: str, signal: Signal, start: float, end: float, received_since: float
) -> list[tuple[float, float]]:
    """One device's signal with start <= t < end as (t, value), in time order: those
    that arrived at or after ``received_since``."""
    rows = store.conn.execute(
        "SELECT t, value FROM readings WHERE device_id = ? AND signal = ? AND t >= ?"
        " AND t < ? AND received_at >= ? ORDER BY t, id",
        (device_id, signal.value, start, end, received_since),
    )
    return [(float(t), float(v)) for t, v in rows]


def at(store: Store, device_id: str, signal: Signal, t: float) -> Reading | None:
    """The reading a device took of a signal at time ``t``, if stored."""
    row = store.conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE device_id = ? AND signal = ? AND t = ?",
        (device_id, signal.value, t),
    ).fetchone()
    return None if row is None else _reading(row)


def latest_of(
    store: Store, device_ids: Sequence[str], signal: Signal, until: float
) -> Reading | None:
    """The newest reading of a signal from these devices at or before event time ``until``
    (one index probe per device)."""
    newest: Reading | None = None
    for device_id in device_ids:
        row = store.conn.execute(
            f"SELECT {_COLUMNS} FROM readings WHERE device_id = ? AND signal = ? AND t <= ?"
            " ORDER BY t DESC LIMIT 1",
            (device_id, signal.value, until),
        ).fetchone()
        if row is not None:
            r = _reading(row)
            newest = r if newest is None or r.t > newest.t else newest
    return newest
