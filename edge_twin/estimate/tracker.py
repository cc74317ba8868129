"""The twin's filters: one per (patient, signal), fed from the readings log.

    readings log (id > cursor) -> predict to the reading's device time -> update
                               -> save states + cursor in one transaction

Because states and cursor are saved together, every stored reading is applied exactly
once, even across crashes: a restarted gateway loads the states and resumes at the cursor.

Late readings (device time before the filter's time) are not applied yet: the bounded
re-processing window that puts them in order is issue #5. They are counted, and the
readings stay in the store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from filterpy.kalman import predict, update

from edge_twin.domain import Reading, Signal
from edge_twin.estimate.models import DEFAULT_MODELS, Matrix, SignalModel
from edge_twin.store import Store, readings, twin_state
from edge_twin.store.twin_state import FilterRecord

CURSOR = "estimate"
BATCH = 5000


@dataclass(slots=True)
class SignalFilter:
    """x, P at event time t (epoch s), and the evidence that shaped them."""

    model: SignalModel
    x: Matrix
    P: Matrix
    t: float
    last_measured_at: float
    n_measurements: int
    device_ids: set[str] = field(default_factory=set)
    through_reading_id: int = 0

    @classmethod
    def start(cls, model: SignalModel, reading: Reading) -> SignalFilter:
        """A filter initialised from its first measurement."""
        x, p = model.initial(reading.value)
        return cls(model, x, p, reading.t, reading.t, 1, {reading.device_id})

    @classmethod
    def from_record(cls, rec: FilterRecord, model: SignalModel) -> SignalFilter:
        return cls(
            model=model,
            x=np.array(rec.x, dtype=float),
            P=np.array(rec.p, dtype=float),
            t=rec.t,
            last_measured_at=rec.last_measured_at,
            n_measurements=rec.n_measurements,
            device_ids=set(rec.device_ids),
            through_reading_id=rec.through_reading_id,
        )

    def at(self, t: float) -> tuple[Matrix, Matrix]:
        """The state at event time ``t`` >= self.t without a measurement: the prior
        x = F x, P = F P F' + Q. Does not change the filter."""
        dt_min = (t - self.t) / 60.0
        if dt_min <= 0:
            return self.x, self.P
        x, p = predict(self.x, self.P, F=self.model.F(dt_min), Q=self.model.Q(dt_min))
        return np.asarray(x, dtype=float), np.asarray(p, dtype=float)

    def step(self, reading: Reading) -> None:
        dt_min = (reading.t - self.t) / 60.0
        m = self.model
        # prior: x = F x ; P = F P F' + Q
        self.x, self.P = predict(self.x, self.P, F=m.F(dt_min), Q=m.Q(dt_min))
        # posterior: y = z - H x ; K = P H' (H P H' + R)^-1 ; x += K y ; P = (I - K H) P
        self.x, self.P = update(self.x, self.P, reading.value, R=m.R(), H=m.H())
        self.t = reading.t
        self.last_measured_at = reading.t
        self.n_measurements += 1
        self.device_ids.add(reading.device_id)

    def record(self, patient_id: str, signal: Signal) -> FilterRecord:
        return FilterRecord(
            patient_id=patient_id,
            signal=signal,
            model=self.model.name,
            model_version=self.model.version,
            t=self.t,
            x=tuple(float(v) for v in self.x),
            p=tuple(tuple(float(v) for v in row) for row in self.P),
            last_measured_at=self.last_measured_at,
            n_measurements=self.n_measurements,
            device_ids=tuple(sorted(self.device_ids)),
            through_reading_id=self.through_reading_id,
        )


class TwinEstimator:
    def __init__(self, store: Store, models: dict[Signal, SignalModel] | None = None) -> None:
        self._store = store
        self._models = models or DEFAULT_MODELS
        self._filters: dict[tuple[str, Signal], SignalFilter] = {}
        for rec in twin_state.load(store):
            model = self._models[rec.signal]
            if (rec.model, rec.model_version) != (model.name, model.version):
                continue  # a changed model starts cold rather than misreading old numbers
            self._filters[(rec.patient_id, rec.signal)] = SignalFilter.from_record(rec, model)
        self.cursor = twin_state.cursor(store, CURSOR)
        self.outcomes: Counter[str] = Counter()

    def lag(self) -> bool:
        """True if readings were stored that the twin has not applied yet."""
        return readings.max_id(self._store) > self.cursor

    def catch_up(self, limit: int | None = None) -> int:
        """Apply the readings stored after the cursor, all of them or at most ``limit``;
        returns how many were read."""
        total = 0
        while limit is None or total < limit:
            size = BATCH if limit is None else min(BATCH, limit - total)
            batch = readings.after(self._store, self.cursor, size)
            if not batch:
                return total
            touched = {self.apply(r) for r in batch}
            touched.discard(None)
            last_id = batch[-1].id
            assert last_id is not None
            with self._store.transaction(derived=True) as conn:
                twin_state.save(
                    conn, [self._filters[k].record(*k) for k in touched if k is not None]
                )
                twin_state.set_cursor(conn, CURSOR, last_id)
            self.cursor = last_id
            total += len(batch)
        return total

    def apply(self, reading: Reading) -> tuple[str, Signal] | None:
        """Update the reading's filter; returns its key, or None if it was not applied."""
        key = (reading.patient_id, reading.signal)
        f = self._filters.get(key)
        if f is None:
            f = SignalFilter.start(self._models[reading.signal], reading)
            self._filters[key] = f
            self.outcomes["started"] += 1
        elif reading.t < f.t:
            self.outcomes["late_not_applied"] += 1
            return None
        else:
            f.step(reading)
            self.outcomes["updated"] += 1
        f.through_reading_id = reading.id or f.through_reading_id
        return key
