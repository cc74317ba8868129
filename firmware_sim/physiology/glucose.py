"""A documented glucose model of our own, on a 1-minute grid (mg/dL).

    G(t) = basal
         + sum over meals i of  A_i h((t - t_i) / tp_meal)           meal excursions
         - sum over insulin errors j of  D_j h((t - t_j) / tp_hypo)^2  over-bolus lows
         - k_ex * (steps over the last 60 min)                        exercise
         + d(t)                                                       slow drift (OU)
    h(u) = u exp(1 - u) for u >= 0 (peak 1 at u = 1, back near 0 by u ~ 5)

Type 1: larger and more variable meal excursions, frequent insulin-error lows (the dip
takes glucose to ~40-65 mg/dL at its nadir), a strong exercise effect. Type 2: higher
basal, milder excursions, rare lows. Clipped to 30-450 mg/dL.

Hypoglycaemia labels are read off the truth, not off the plan: every stretch below
70 mg/dL lasting at least 15 minutes, with its onset and its nadir.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware_sim.physiology.processes import Array, add_bump, ou, smooth

MEAL_HOURS = (7.5, 12.5, 19.0)
HYPO_MGDL = 70.0
HYPO_MIN_MINUTES = 15


@dataclass(frozen=True)
class GlucoseModel:
    basal: float
    meal_rise: tuple[float, float]
    meal_peak_min: float
    lows_per_day: float
    nadir: tuple[float, float]
    exercise_per_step: float  # mg/dL per step in the last hour
    drift_sd: float
    drift_tau_min: float = 120.0

    @classmethod
    def draw(cls, kind: str, rng: np.random.Generator) -> GlucoseModel:
        if kind == "T1":
            return cls(
                basal=float(rng.uniform(110, 160)),
                meal_rise=(float(rng.uniform(40, 60)), float(rng.uniform(110, 170))),
                meal_peak_min=float(rng.uniform(45, 75)),
                lows_per_day=float(rng.uniform(0.2, 0.7)),
                nadir=(40.0, 65.0),
                exercise_per_step=float(rng.uniform(0.008, 0.02)),
                drift_sd=float(rng.uniform(12, 22)),
            )
        return cls(
            basal=float(rng.uniform(130, 180)),
            meal_rise=(float(rng.uniform(25, 40)), float(rng.uniform(60, 100))),
            meal_peak_min=float(rng.uniform(60, 90)),
            lows_per_day=float(rng.uniform(0.02, 0.12)),
            nadir=(50.0, 68.0),
            exercise_per_step=float(rng.uniform(0.002, 0.008)),
            drift_sd=float(rng.uniform(10, 18)),
        )


@dataclass(frozen=True)
class Hypoglycaemia:
    onset: float  # epoch s: first minute below 70 mg/dL
    peak: float  # epoch s: the nadir
    nadir: float  # mg/dL


def simulate(
    model: GlucoseModel, start: float, steps: Array, rng: np.random.Generator
) -> tuple[Array, list[Hypoglycaemia]]:
    """True glucose each minute (len(steps) minutes from ``start``) and its hypos."""
    minutes = len(steps)
    g = np.full(minutes, model.basal)
    offset_min = (start % 86400) / 60.0
    for day in range(-1, math.ceil(minutes / 1440) + 1):
        for hour in MEAL_HOURS:
            at = day * 1440 + hour * 60 + rng.normal(0, 25) - offset_min
            add_bump(g, at, model.meal_peak_min, rng.uniform(*model.meal_rise))
    g -= model.exercise_per_step * smooth(steps, 60) * 60
    g += ou(rng, minutes, model.drift_sd, model.drift_tau_min)
    # Insulin errors: each pulls glucose down to a nadir 45-150 min later, with a smooth
    # onset: falls of 0.7-3 mg/dL/min, as insulin-induced lows are (the steepest slope is
    # 1.7 x depth / tp): a mistimed meal bolus acts within an hour or two, an excess of
    # basal or a late correction over two to three (rapid-acting insulin peaks 1-3 h after
    # the dose). A sensor artefact drops faster than that; a low does not.
    for _ in range(rng.poisson(model.lows_per_day * minutes / 1440)):
        at = rng.uniform(-150, minutes)
        tp = rng.uniform(45, 150)
        idx = int(at + tp)
        if 0 <= idx < minutes:
            depth = max(0.0, g[idx] - rng.uniform(*model.nadir))
            add_bump(g, at, tp, -depth, smooth=True)
    g = np.clip(g, 30.0, 450.0)
    return g, hypoglycaemias(g, start)


def hypoglycaemias(g: Array, start: float) -> list[Hypoglycaemia]:
    below = np.concatenate(([False], g < HYPO_MGDL, [False]))
    edges = np.flatnonzero(np.diff(below.astype(np.int8)))
    out = []
    for first, end in zip(edges[::2], edges[1::2], strict=True):
        if end - first >= HYPO_MIN_MINUTES:
            nadir_at = first + int(np.argmin(g[first:end]))
            out.append(
                Hypoglycaemia(start + first * 60.0, start + nadir_at * 60.0, float(g[nadir_at]))
            )
    return out
