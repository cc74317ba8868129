"""Stage 2, estimate: Kalman filters per patient and signal (filterpy).

    Reading (from the readings log) -> tracker.TwinEstimator -> persisted filter state
    persisted filter state + now    -> view.estimate_at      -> StateEstimate + Forecasts
    the twin moved                  -> scorekeeper.Scorekeeper -> forecast_log, scored
                                       against the readings that come (ForecastSkill)

``models`` holds the state-space matrices with their equations. What other stages use is
exported here; the modules behind it are this stage's own.
"""

from edge_twin.estimate.models import DEFAULT_MODELS, SignalModel
from edge_twin.estimate.rebuild import MAX_TRACE_S, TracePoint, trace
from edge_twin.estimate.scorekeeper import Scorekeeper
from edge_twin.estimate.tracker import (
    DAY_S,
    GATE_PERSIST_S,
    FilterState,
    SignalFilter,
    TwinEstimator,
    state_from_row,
)
from edge_twin.estimate.view import (
    baseline_level,
    estimate_at,
    is_stale,
    patient_estimates,
    runs_current_model,
)

__all__ = [
    "DAY_S",
    "DEFAULT_MODELS",
    "GATE_PERSIST_S",
    "MAX_TRACE_S",
    "FilterState",
    "Scorekeeper",
    "SignalFilter",
    "SignalModel",
    "TracePoint",
    "TwinEstimator",
    "baseline_level",
    "estimate_at",
    "is_stale",
    "patient_estimates",
    "runs_current_model",
    "state_from_row",
    "trace",
]
