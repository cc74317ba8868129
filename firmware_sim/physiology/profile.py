"""Who a virtual patient is: conditions, baselines and habits, drawn from a seed.

Heterogeneity is the point: baselines, comorbidity mix and adherence vary between
patients, so a model that fits one average patient does not pass the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CohortMix:
    """Fractions of the cohort with each condition (independent draws)."""

    heart_failure: float = 0.5
    diabetes: float = 0.5
    type1_given_diabetes: float = 0.4
    hypertension: float = 0.6


@dataclass(frozen=True)
class Profile:
    heart_failure: bool
    diabetes: str | None  # "T1", "T2" or None
    hypertension: bool
    # Baselines at rest (canonical units)
    weight_kg: float
    systolic: float
    diastolic: float
    heart_rate: float
    resp_rate: float
    spo2: float
    skin_temp: float
    # Habits
    wake_h: float
    sleep_h: float
    activity: float  # walking bouts per day
    adherence: float  # probability of taking a scheduled cuff / scale reading
    wear: float  # probability of wearing the wrist device on a given day
    # Heart failure: decompensations per year (0 without HF)
    decompensations_per_year: float

    @classmethod
    def draw(cls, rng: np.random.Generator, mix: CohortMix) -> Profile:
        hf = bool(rng.random() < mix.heart_failure)
        diabetic = bool(rng.random() < mix.diabetes)
        diabetes = None
        if diabetic:
            diabetes = "T1" if rng.random() < mix.type1_given_diabetes else "T2"
        htn = bool(rng.random() < mix.hypertension)
        return cls(
            heart_failure=hf,
            diabetes=diabetes,
            hypertension=htn,
            weight_kg=float(rng.uniform(55, 120)),
            systolic=float(rng.uniform(135, 160) if htn else rng.uniform(108, 130)),
            diastolic=float(rng.uniform(82, 98) if htn else rng.uniform(65, 80)),
            heart_rate=float(rng.uniform(62, 84) + (4 if hf else 0)),
            resp_rate=float(rng.uniform(13, 17) + (1 if hf else 0)),
            spo2=float(rng.uniform(95, 98) - (1 if hf else 0)),
            skin_temp=float(rng.uniform(32.8, 34.2)),
            wake_h=float(rng.uniform(6.0, 8.0)),
            sleep_h=float(rng.uniform(22.0, 23.8)),
            activity=float(rng.uniform(2, 10) * (0.6 if hf else 1.0)),
            adherence=float(rng.uniform(0.55, 0.97)),
            wear=float(rng.uniform(0.7, 0.98)),
            decompensations_per_year=float(rng.uniform(0.8, 3.0)) if hf else 0.0,
        )
