"""The twin of one patient as stored on the gateway, read as the risk features expect.

    twin_state (live filters) + twin_day_start (their midnight snapshots) + readings (steps)
      -> StoredHistory (features.PatientHistory)

A midnight the filter has not passed yet (no reading since) is the live filter predicted
to it, which is what the snapshot will be unless a late reading arrives first.
"""

from __future__ import annotations

from edge_twin.assess.features import SIGNALS, WINDOW_DAYS, day_start
from edge_twin.domain import Signal
from edge_twin.estimate import DAY_S, DEFAULT_MODELS, FilterState, SignalFilter, state_from_row
from edge_twin.store import Store, readings, twin_state


class StoredHistory:
    def __init__(self, store: Store, patient_id: str, t: float) -> None:
        self._store = store
        since = day_start(t) - WINDOW_DAYS * DAY_S
        self._live: dict[Signal, SignalFilter] = {}
        self._days: dict[Signal, dict[float, FilterState]] = {}
        self._step_devices: tuple[str, ...] = ()
        for rec in twin_state.load(store, patient_id):
            model = DEFAULT_MODELS[rec.signal]
            if (rec.model, rec.model_version) != (model.name, model.version):
                continue
            if rec.signal is Signal.STEPS:
                self._step_devices = rec.device_ids
            if rec.signal not in SIGNALS:
                continue
            self._live[rec.signal] = SignalFilter.from_record(rec, model)
            rows = twin_state.load_day_starts(
                store, patient_id, rec.signal, (model.name, model.version), since
            )
            self._days[rec.signal] = {r.t: state_from_row(r) for r in rows}

    def state(self, signal: Signal, t: float, *, before: bool) -> FilterState | None:
        live = self._live.get(signal)
        if live is None:
            return None
        if before and t <= live.t:
            return self._days[signal].get(t)
        x, p = live.at(max(t, live.t))
        return FilterState(t, x, p, live.n_measurements, live.last_measured_at)

    def steps(self, t0: float, t1: float) -> tuple[float, int]:
        return readings.sum_between(self._store, self._step_devices, Signal.STEPS, t0, t1)
