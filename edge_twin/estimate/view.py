"""Reading the twin: a persisted filter state -> a StateEstimate at event time ``now``.

Between measurements the estimate is the filter's *prediction* to ``now`` (no update), so
its uncertainty grows with the time since the last reading. A signal is *stale* when its
last measurement is older than ``stale_after_s`` for that signal (docs/estimation.md):
its estimate is still shown, with its wide interval, but nothing clinical may act on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from filterpy.kalman import predict

from edge_twin.domain import Forecast, Provenance, StateEstimate
from edge_twin.estimate.models import DEFAULT_MODELS, SignalModel
from edge_twin.estimate.tracker import SignalFilter
from edge_twin.store import Store, twin_state
from edge_twin.store.twin_state import FilterRecord


def estimate_at(
    record: FilterRecord,
    now: float,
    model: SignalModel | None = None,
    forecasts: bool = True,
) -> StateEstimate:
    """``forecasts=False`` leaves them out (the alarm path needs only the state)."""
    model = model or DEFAULT_MODELS[record.signal]
    t = max(now, record.t)
    x, p = SignalFilter.from_record(record, model).at(t)
    predicted = []
    for horizon in model.forecast_horizons_min if forecasts else ():
        fx, fp = predict(x, p, F=model.F(horizon), Q=model.Q(horizon))
        predicted.append(Forecast(horizon * 60.0, float(fx[0]), math.sqrt(float(fp[0, 0]))))
    return StateEstimate(
        patient_id=record.patient_id,
        signal=record.signal,
        t=t,
        mean=float(x[0]),
        sd=math.sqrt(float(p[0, 0])),
        rate_per_min=float(x[1]) if model.has_rate else None,
        rate_sd=math.sqrt(float(p[1, 1])) if model.has_rate else None,
        last_measured_at=record.last_measured_at,
        provenance=Provenance(
            model=record.model,
            model_version=record.model_version,
            device_ids=record.device_ids,
            through_reading_id=record.through_reading_id,
            n_measurements=record.n_measurements,
            n_rejected=record.n_gated,
        ),
        forecasts=tuple(predicted),
    )


def patient_estimates(store: Store, patient_id: str, now: float) -> list[StateEstimate]:
    return [estimate_at(rec, now) for rec in twin_state.load(store, patient_id)]


def is_stale(estimate: StateEstimate, now: float, stale_after_s: Mapping[str, float]) -> bool:
    return estimate.age(now) > stale_after_s.get(estimate.signal, math.inf)


def baseline_level(record: FilterRecord) -> tuple[float, float] | None:
    """The person's own slowly moving level (mean, SD) behind the day's values, for a
    signal whose model carries a personal baseline (blood pressure, vital signs); None
    for one without, or a state of another model."""
    model = DEFAULT_MODELS[record.signal]
    if not model.has_baseline or record.model != model.name:
        return None
    i = model.dim - 1  # the baseline is the last block of the state (estimate/models.py)
    return record.x[i], math.sqrt(record.p[i][i])


def runs_current_model(record: FilterRecord) -> bool:
    """True if the state was made by the model the twin runs now for its signal."""
    return record.model == DEFAULT_MODELS[record.signal].name
