"""The forecast log: forecasts the twin issued, and how each fared (estimate/scorekeeper.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from edge_twin.domain import ForecastSkill, IssuedForecast, Signal
from edge_twin.store.database import Store

Z95 = 1.959963984540054
SKILL_WINDOW_S = 7 * 86400.0  # the recent window a patient's forecast skill covers


def insert(conn: sqlite3.Connection, forecasts: Iterable[IssuedForecast]) -> None:
    conn.executemany(
        "INSERT INTO forecast_log (patient_id, signal, issued_at, horizon_s, target_t, mean,"
        " sd, reading_mean, reading_sd, model, model_version) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                f.patient_id,
                f.signal.value,
                f.issued_at,
                f.horizon_s,
                f.target_t,
                f.mean,
                f.sd,
                f.reading_mean,
                f.reading_sd,
                f.model,
                f.model_version,
            )
            for f in forecasts
        ],
    )


def last_issued(store: Store, patient_id: str, signal: Signal) -> float | None:
    row = store.conn.execute(
        "SELECT max(issued_at) FROM forecast_log WHERE patient_id = ? AND signal = ?",
        (patient_id, signal.value),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def earliest_open_target(store: Store, patient_id: str, signal: Signal) -> float | None:
    """The earliest target time of a series' unscored forecasts (uses forecast_log_open)."""
    row = store.conn.execute(
        "SELECT min(target_t) FROM forecast_log WHERE patient_id = ? AND signal = ?"
        " AND scored_at IS NULL",
        (patient_id, signal.value),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def due(store: Store, patient_id: str, signal: Signal, until: float) -> list[tuple[int, float]]:
    """(id, target time) of the unscored forecasts of a series whose target is <= until."""
    rows = store.conn.execute(
        "SELECT id, target_t FROM forecast_log WHERE patient_id = ? AND signal = ?"
        " AND scored_at IS NULL AND target_t <= ? ORDER BY target_t",
        (patient_id, signal.value, until),
    )
    return [(int(i), float(t)) for i, t in rows]


def score(
    conn: sqlite3.Connection, results: Sequence[tuple[int, float | None, float | None]], at: float
) -> None:
    """(id, observed value, its time) per forecast; None: no reading came at its target."""
    conn.executemany(
        "UPDATE forecast_log SET observed = ?, observed_t = ?, scored_at = ? WHERE id = ?",
        [(value, t, at, fid) for fid, value, t in results],
    )


def prune(conn: sqlite3.Connection, before: float) -> int:
    cur = conn.execute("DELETE FROM forecast_log WHERE issued_at < ?", (before,))
    return cur.rowcount


def skill(
    store: Store, patient_id: str | None = None, window_s: float = SKILL_WINDOW_S
) -> list[ForecastSkill]:
    """Per patient, signal and horizon, over the forecasts scored with targets in the
    ``window_s`` up to that patient's newest scored target: event time, so that a replay
    of a recording gives the figures that living it gave."""
    where, args = "observed IS NOT NULL", []
    if patient_id is not None:
        where += " AND patient_id = ?"
        args.append(patient_id)
    rows = store.conn.execute(
        "SELECT f.patient_id, f.signal, f.horizon_s, count(*),"
        " avg((f.observed - f.reading_mean) * (f.observed - f.reading_mean)),"
        f" avg(abs(f.observed - f.reading_mean) <= {Z95} * f.reading_sd),"
        f" avg(2 * {Z95} * f.reading_sd), n.newest"
        " FROM forecast_log f JOIN (SELECT patient_id, max(target_t) AS newest FROM"
        f" forecast_log WHERE {where} GROUP BY patient_id) n ON n.patient_id = f.patient_id"
        " WHERE f.observed IS NOT NULL AND f.target_t >= n.newest - ?"
        " GROUP BY f.patient_id, f.signal, f.horizon_s"
        " ORDER BY f.patient_id, f.signal, f.horizon_s",
        [*args, window_s],
    )
    return [
        ForecastSkill(
            str(pid),
            Signal(sig),
            float(h),
            int(n),
            float(mse) ** 0.5,
            float(cov),
            float(w),
            float(newest) - window_s,
        )
        for pid, sig, h, n, mse, cov, w, newest in rows
    ]


EXPORT_COLUMNS = (
    "patient_id",
    "signal",
    "issued_at",
    "horizon_s",
    "target_t",
    "mean",
    "sd",
    "reading_mean",
    "reading_sd",
    "model",
    "model_version",
    "observed",
    "observed_t",
)


def export_rows(
    store: Store, since: float, until: float, patient_id: str | None
) -> Iterator[dict[str, Any]]:
    """Every logged forecast issued in [since, until), oldest first, by column name."""
    where = "issued_at >= ? AND issued_at < ?"
    args: list[object] = [since, until]
    if patient_id is not None:
        where += " AND patient_id = ?"
        args.append(patient_id)
    rows = store.conn.execute(
        f"SELECT {', '.join(EXPORT_COLUMNS)} FROM forecast_log WHERE {where}"
        " ORDER BY issued_at, id",
        args,
    )
    for row in rows:
        yield dict(zip(EXPORT_COLUMNS, row, strict=True))
