"""Decompensation risk recomputed as the twin takes in new evidence.

    TwinEstimator (patients whose filters moved) -> StoredHistory -> RiskModel.assess
      -> risk_assessments (with features, contributions, provenance)

Event time drives it: a patient is assessed at the newest device time of its filters,
once at least ``every_s`` of event time has passed since its last assessment. A backlog
drained at once is assessed at its end (the final state reflects all of it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from edge_twin.assess.features import SIGNALS
from edge_twin.assess.history import StoredHistory
from edge_twin.assess.risk_model import RiskModel
from edge_twin.clock import Clock
from edge_twin.domain import DecompensationRisk
from edge_twin.store import Store, risks, twin_state

log = logging.getLogger(__name__)


class RiskAssessor:
    def __init__(self, store: Store, model: RiskModel, every_s: float, clock: Clock) -> None:
        self._store = store
        self.model = model
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def _last_assessed(self, patient_id: str) -> float:
        if patient_id not in self._last:
            newest = risks.latest(self._store, patient_id)
            self._last[patient_id] = newest[0].t if newest else float("-inf")
        return self._last[patient_id]

    def run(self, patient_ids: Iterable[str]) -> list[DecompensationRisk]:
        done = []
        for pid in sorted(set(patient_ids)):
            t = twin_state.latest_time(self._store, pid)
            if t is None or t - self._last_assessed(pid) < self._every_s:
                continue
            if not twin_state.has_any(self._store, pid, SIGNALS):
                continue  # nothing the model reads (e.g. a CGM-only patient)
            history = StoredHistory(self._store, pid, t)
            risk = self.model.assess(history, pid, t)
            with self._store.transaction(derived=True) as conn:
                risks.insert(conn, risk, self._clock.now())
            self._last[pid] = t
            done.append(risk)
        return done
