"""Feature rows of simulated patients: what the model learns from and is judged on."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_twin.assess.features import features
from models.cohort import DAY_S, CohortSpec, history
from models.evaluate import (
    HORIZON_DAYS,
    WARMUP_DAYS,
    PatientScores,
    eval_times,
    in_recovery,
    label,
    rule_of_thumb,
    weight_macd,
)

FloatArray = npt.NDArray[np.float64]


@dataclass
class PatientRows:
    patient_id: str
    t: FloatArray
    X: FloatArray  # (n, len(FEATURES))
    label: npt.NDArray[np.bool_]
    peaks: list[float]
    end: float
    missing: float
    rule: FloatArray  # weight rule of thumb score at t
    macd: FloatArray  # weight MACD at t
    # labelled mimics of a decompensation: (kind, start, end), epoch s
    confounders: list[tuple[str, float, float]] = field(default_factory=list)

    def scores(self, score: FloatArray) -> PatientScores:
        return PatientScores(self.t, score, self.label, self.peaks, self.end)


def training_times(spec: CohortSpec, index: int, start: float, end: float) -> FloatArray:
    """One time a day at a random hour (the gateway assesses at any hour), follow-up only."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(index, 98)))
    days = np.arange(WARMUP_DAYS, int((end - start) / DAY_S))
    return start + days * DAY_S + rng.uniform(0, DAY_S, len(days))


def patient_rows(spec: CohortSpec, index: int, *, random_hour: bool) -> PatientRows:
    h = history(spec, index)
    if random_hour:
        t = training_times(spec, index, h.start, h.end)
        t = t[[not in_recovery(h, x) and x < h.end - HORIZON_DAYS * DAY_S for x in t]]
    else:
        t = eval_times(h)
    x = np.array([features(h, ti) for ti in t.tolist()]).reshape(len(t), -1)
    return PatientRows(
        h.patient_id,
        t,
        x,
        np.array([label(h, ti) for ti in t.tolist()], dtype=bool),
        h.event_peaks,
        h.end,
        h.missing,
        rule_of_thumb(h, t),
        weight_macd(h, t),
        h.confounders,
    )


def cohort_rows(spec: CohortSpec, *, random_hour: bool, jobs: int = 2) -> Iterator[PatientRows]:
    """Every patient's rows, computed in ``jobs`` processes, in patient order."""
    args = [(spec, i, random_hour) for i in range(spec.patients)]
    if jobs <= 1:
        yield from map(_rows, args)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(_rows, args)


def _rows(args: tuple[CohortSpec, int, bool]) -> PatientRows:
    spec, index, random_hour = args
    return patient_rows(spec, index, random_hour=random_hour)
