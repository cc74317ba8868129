"""The twin's estimate over a past period, for a plot: what the filter believed after
each reading.

The live twin keeps only its current state and a snapshot at each midnight (event time,
tracker.SignalFilter.day_starts). The path between is rebuilt here with the same filter:
from the last snapshot at or before the period's start, every stored reading of the
series is applied in time order. What this gives is the twin as it would be had every
reading arrived in order; where readings came late it is what the live twin became after
reprocessing them, not what it showed at the time. A filter that started inside the
period starts from its first reading, as the live one did. The live filter predicts
across a midnight in one step, this one in two (through the snapshot): the same but for
the model's discretisation of the process noise, ~1e-4 mg/dL (tests/test_history_views.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_twin.domain import Signal
from edge_twin.estimate.models import DEFAULT_MODELS, SignalModel
from edge_twin.estimate.tracker import DAY_S, SignalFilter, state_from_row
from edge_twin.store import Store, readings, twin_state

# Rebuilding costs one filter step per reading (~35 us): a plot of a minute-by-minute
# signal over weeks reads its bins instead (readings.binned).
MAX_TRACE_S = 3 * DAY_S


@dataclass(frozen=True, slots=True)
class TracePoint:
    t: float
    mean: float
    sd: float
    gated: bool  # the reading at t was rejected by the innovation gate


def trace(
    store: Store,
    patient_id: str,
    signal: Signal,
    device_ids: list[str],
    start: float,
    end: float,
    model: SignalModel | None = None,
) -> list[TracePoint]:
    """The filter's estimate after each reading with start <= t < end (at most
    MAX_TRACE_S long: a longer period is cut to its last MAX_TRACE_S)."""
    model = model or DEFAULT_MODELS[signal]
    start = max(start, end - MAX_TRACE_S)
    day = math.floor(start / DAY_S) * DAY_S
    snapshots = twin_state.load_day_starts(
        store, patient_id, signal, (model.name, model.version), day - DAY_S
    )
    before = [s for s in snapshots if s.t <= start]
    f: SignalFilter | None = None
    since = start
    if before:
        s = state_from_row(before[-1])
        f = SignalFilter(model, s.x, s.P, s.t, s.last_measured_at, s.n_measurements)
        since = s.t
    # series() takes (after, through]: a reading at the snapshot's midnight is the new day's.
    found = readings.series(store, device_ids, signal, since - 0.001, end)
    out = []
    for r in found:
        if r.t >= end:
            break
        if r.patient_id != patient_id:
            continue  # the device served someone else then
        gated = False
        if f is None:
            f = SignalFilter.start(model, r)
        else:
            gated = not f.step(r)
        if r.t >= start:
            out.append(TracePoint(r.t, float(f.x[0]), math.sqrt(float(f.P[0, 0])), gated))
    return out
