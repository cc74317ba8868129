"""A documented glucose model of our own, on a 1-minute grid (mg/dL).

    G(t) = basal
         + sum over meals i of  A_i * h((t - t_i) / tp_meal)       meal excursions
         - sum over hypo episodes j of  D_j * h((t - t_j) / tp_hypo) insulin-driven lows
         + d(t)                                                      slow physiological drift
    h(u) = u * exp(1 - u) for u >= 0, else 0     (peak 1 at u = 1, back near 0 by u ~ 5)
    d    : Ornstein-Uhlenbeck, SD ``drift_sd``, time constant ``drift_tau_min``

Meals come three times a day at jittered times; a hypo episode happens on a given day with
probability ``hypo_per_day`` and its depth takes glucose to ~45-60 mg/dL at its nadir.
Values are clipped to 30-450 mg/dL. Every draw comes from the seeded generator, so the
same seed gives the same patient. (Issue #3 brings UVA/Padova via simglucose.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MEAL_HOURS = (7.5, 12.5, 19.0)


@dataclass(frozen=True)
class GlucosePatient:
    basal: float = 120.0
    meal_rise: tuple[float, float] = (40.0, 110.0)
    meal_peak_min: float = 55.0
    hypo_per_day: float = 0.3
    hypo_peak_min: float = 40.0
    drift_sd: float = 12.0
    drift_tau_min: float = 120.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> GlucosePatient:
        return cls(
            basal=float(rng.uniform(100, 160)),
            meal_rise=(float(rng.uniform(30, 50)), float(rng.uniform(80, 140))),
            meal_peak_min=float(rng.uniform(45, 75)),
            hypo_per_day=float(rng.uniform(0.1, 0.5)),
        )


@dataclass(frozen=True)
class Episode:
    kind: str  # "hypoglycaemia"
    onset: float  # epoch s
    peak: float  # epoch s, the nadir


def _h(u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(u >= 0, u * np.exp(1 - u), 0.0)


def simulate(
    patient: GlucosePatient, start: float, minutes: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], list[Episode]]:
    """True glucose each minute from ``start`` (epoch s) and the hypo episodes within."""
    t_min = np.arange(minutes, dtype=float)
    g = np.full(minutes, patient.basal)
    days = math.ceil(minutes / 1440) + 1
    day0 = math.floor(start / 86400) * 86400
    offset_min = (start - day0) / 60.0
    episodes: list[Episode] = []
    for day in range(-1, days):
        for hour in MEAL_HOURS:
            at = day * 1440 + hour * 60 + rng.normal(0, 25) - offset_min
            rise = rng.uniform(*patient.meal_rise)
            g += rise * _h((t_min - at) / patient.meal_peak_min)
        if rng.random() < patient.hypo_per_day:
            at = day * 1440 + rng.uniform(0, 1440) - offset_min
            nadir = rng.uniform(45, 60)
            idx = round(at + patient.hypo_peak_min)
            if 0 <= idx < minutes:
                depth = g[idx] - nadir
                g -= depth * _h((t_min - at) / patient.hypo_peak_min)
                episodes.append(Episode("hypoglycaemia", start + at * 60, start + idx * 60))
    # Ornstein-Uhlenbeck drift, exact discretisation at 1-min steps.
    a = math.exp(-1.0 / patient.drift_tau_min)
    shocks = rng.normal(0, patient.drift_sd * math.sqrt(1 - a * a), minutes)
    drift = np.empty(minutes)
    level = rng.normal(0, patient.drift_sd)
    for i in range(minutes):
        level = a * level + shocks[i]
        drift[i] = level
    return np.clip(g + drift, 30.0, 450.0), episodes
