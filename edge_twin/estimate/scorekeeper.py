"""The twin keeps score of itself: the forecasts it issued, against the readings that came.

    the twin moved (patient, signal)
      -> issue: at most once per ``issue_every_s`` of event time, the forecasts at the
         signal's SCORED_HORIZONS_MIN -> forecast_log, each with what a reading should
         show then (the level's forecast plus the sensor's own error and noise: a reading
         is scored against that, not against the body's level the twin shows)
      -> score: every logged forecast whose target time the series has passed, against
         the reading nearest its target (within ``tolerance_s``); none there: scored as
         missing and left out of the figures
    skill(patient) (store.forecasts.skill): per signal and horizon, RMSE, 95% coverage
      and interval width over the last forecasts.SKILL_WINDOW_S of targets (7 days)

A forecast is issued from the state the twin has when it moves: live, every reading; in a
drain of a backlog the twin moves in batches, so fewer are issued (the figures stay
honest, there are only fewer of them). Rows older than LOG_DAYS are deleted.

Why: the filters were tuned on simulated patients (docs/estimation.md). A patient whose
readings leave the 95% interval far more often than 5% of the time is one the models do
not fit, and the care team should know before trusting the forecasts (a technical alarm,
alert/conditions.forecast_fit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from filterpy.kalman import predict

from edge_twin.domain import IssuedForecast, Signal
from edge_twin.estimate.models import DEFAULT_MODELS, SignalModel
from edge_twin.estimate.tracker import SignalFilter
from edge_twin.store import Store, forecasts, readings, twin_state
from edge_twin.store.twin_state import FilterRecord

# The horizons that are logged and scored (minutes); a signal not listed logs its own
# forecast horizons (models.py: 60 min for vital signs, a day for blood pressure, weight).
SCORED_HORIZONS_MIN: dict[Signal, tuple[float, ...]] = {Signal.GLUCOSE: (30.0, 60.0)}
# Signals whose forecasts are not worth scoring: step counts are not a level.
UNSCORED = frozenset({Signal.STEPS})
LOG_DAYS = 30
PRUNE_EVERY_S = 3600.0


def horizons_min(signal: Signal) -> tuple[float, ...]:
    return SCORED_HORIZONS_MIN.get(signal, DEFAULT_MODELS[signal].forecast_horizons_min)


def issue_every_s(signal: Signal) -> float:
    """Half the shortest scored horizon, at least 15 min: forecasts that overlap less."""
    return max(900.0, min(horizons_min(signal)) * 30.0)


def tolerance_s(signal: Signal) -> float:
    """How far from its target a reading may be to score a forecast: 2.5 min, or 5% of
    the horizon for the slow signals (a weighing is not at the minute of the forecast)."""
    return max(150.0, min(horizons_min(signal)) * 3.0)


def issued(record: FilterRecord, model: SignalModel) -> list[IssuedForecast]:
    """The forecasts of ``record``'s state at its own time, at the scored horizons."""
    f = SignalFilter.from_record(record, model)
    h, r = model.H(), model.R()
    out = []
    for minutes in horizons_min(record.signal):
        x, p = predict(f.x, f.P, F=model.F(minutes), Q=model.Q(minutes))
        x, p = np.asarray(x, dtype=float), np.asarray(p, dtype=float)
        reading_var = float((h @ p @ h.T)[0, 0] + r[0, 0])
        if not (np.all(np.isfinite(x)) and p[0, 0] >= 0 and reading_var >= 0):
            continue  # a broken state is the tracker's problem; nothing to score here
        out.append(
            IssuedForecast(
                record.patient_id,
                record.signal,
                record.t,
                minutes * 60.0,
                float(x[0]),
                math.sqrt(float(p[0, 0])),
                float((h @ x)[0]),
                math.sqrt(reading_var),
                record.model,
                record.model_version,
            )
        )
    return out


class Scorekeeper:
    """Issues and scores the twin's forecasts (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._last_issued: dict[tuple[str, Signal], float] = {}
        # Per series, the earliest target of its unscored forecasts (inf: none), so that
        # a move with nothing to issue or score costs one small read, not a state decode.
        self._next_target: dict[tuple[str, Signal], float] = {}
        self._pruned_at = -math.inf

    def _has_work(self, pid: str, signal: Signal) -> bool:
        t = twin_state.time_of(self._store, pid, signal)
        if t is None:
            return False
        key = (pid, signal)
        if key not in self._next_target:
            found = forecasts.earliest_open_target(self._store, pid, signal)
            self._next_target[key] = math.inf if found is None else found
        return (
            t - self._last(pid, signal) >= issue_every_s(signal)
            or t - tolerance_s(signal) >= self._next_target[key]
        )

    def on_moved(self, moved: Iterable[tuple[str, Signal]]) -> int:
        """Issue and score for the series that moved; the number of forecasts scored."""
        wanted = {(p, s) for p, s in moved if s not in UNSCORED and self._has_work(p, s)}
        if not wanted:
            return 0
        new: list[IssuedForecast] = []
        issued_at: dict[tuple[str, Signal], float] = {}
        results: list[tuple[int, float | None, float | None]] = []
        newest = -math.inf
        for pid in sorted({p for p, _ in wanted}):
            for rec in twin_state.load(self._store, pid, {s for p, s in wanted if p == pid}):
                model = DEFAULT_MODELS[rec.signal]
                if rec.model != model.name or rec.model_version != model.version:
                    continue  # a state of another model version: not this model's forecast
                newest = max(newest, rec.t)
                results += self._score(rec)
                if rec.t - self._last(pid, rec.signal) >= issue_every_s(rec.signal):
                    new += issued(rec, model)
                    issued_at[(pid, rec.signal)] = rec.t
        for key in wanted:
            self._next_target.pop(key, None)  # read again when next needed
        if not new and not results:
            return 0
        # Bookkeeping, not acknowledged data: its commit need not be fsynced.
        with self._store.transaction(derived=True) as conn:
            forecasts.insert(conn, new)
            forecasts.score(conn, results, newest)
            if newest - self._pruned_at >= PRUNE_EVERY_S:
                forecasts.prune(conn, newest - LOG_DAYS * 86400.0)
                self._pruned_at = newest
        self._last_issued.update(issued_at)  # only once they are stored
        return len(results)

    def _last(self, pid: str, signal: Signal) -> float:
        key = (pid, signal)
        if key not in self._last_issued:
            found = forecasts.last_issued(self._store, pid, signal)
            self._last_issued[key] = -math.inf if found is None else found
        return self._last_issued[key]

    def _score(self, rec: FilterRecord) -> list[tuple[int, float | None, float | None]]:
        """The forecasts whose target the series has passed (by more than the tolerance,
        so a reading at the target had its chance to arrive)."""
        tol = tolerance_s(rec.signal)
        out: list[tuple[int, float | None, float | None]] = []
        for fid, target in forecasts.due(self._store, rec.patient_id, rec.signal, rec.t - tol):
            found = readings.nearest(self._store, rec.device_ids, rec.signal, target, tol)
            out.append((fid, None, None) if found is None else (fid, found[1], found[0]))
        return out
