"""A patient's days: meals, insulin therapy with human errors, corrections and rescues.

The UVA/Padova model itself is never changed; only this behaviour around it is tuned.

* Meals around 07:30, 12:30 and 19:00 (normal jitter, SD 25 min) as our simulator does
  (firmware_sim.physiology.glucose.MEAL_HOURS), 0-2 snacks a day.
* Basal at the patient's u2ss rate (BBController's u2ss * BW / 6000 U/min) times a
  per-patient misestimate (lognormal); meal boluses grams / CR with dosing errors:
  lognormal SD 20 %, missed, over-boluses x1.5-2, late by 15-45 min.
* Correction boluses (glucose / CF) when subcutaneous glucose (what a CGM shows, without
  its noise) has been high for hours, while awake.
* Rescue carbs 10-30 min after plasma glucose fell below 70 mg/dL, so lows are real.
* Titration: simglucose's Quest.csv ratios make every child hypoglycaemic after a
  correctly dosed meal (a 50 g meal with its Quest bolus takes child#004 to 35 mg/dL).
  A clinic would not leave a patient on such a ratio, so a patient's CR is raised (less
  insulin per gram) to the one whose correctly dosed 50 g meal bottoms out at
  ``TITRATED_NADIR`` mg/dL, when the Quest CR goes below that; CF is scaled alike.
  Lows then come from dosing errors, as they do in life.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from firmware_sim.physiology.glucose import MEAL_HOURS
from validation.uva_padova import FloatArray, UvaPadova, VirtualPatient

MEAL_JITTER_MIN = 25.0  # as firmware_sim's meals: rng.normal(0, 25) minutes
MEAL_GRAMS = ((30.0, 70.0), (40.0, 90.0), (50.0, 100.0))
SNACK_WINDOWS_H = ((10.0, 11.5), (15.0, 17.0), (21.0, 22.5))
SNACK_GRAMS = (10.0, 30.0)
SNACK_BOLUSED = 0.5
BASAL_SD = 0.10  # per-patient lognormal basal misestimate ...
BASAL_CLIP = (0.8, 1.2)  # ... within 20 %: a larger error would be noticed and fixed
CARB_SCALE = {"child": 0.65}  # children (24-46 kg) eat smaller meals; others 1.0
DOSE_SD = 0.20  # lognormal multiplicative error on each bolus
P_MISSED = 0.05
P_OVER = 0.05
OVER_FACTOR = (1.5, 2.0)
P_LATE = 0.10
LATE_MIN = (15.0, 45.0)
TARGET = 140.0  # mg/dL, BBController's target
MEAL_CORRECT_ABOVE = 180.0  # a meal bolus adds (CGM - target) / CF above this
CORRECT_ABOVE = 250.0
CORRECT_AFTER_MIN = 120
CORRECT_COOLDOWN_MIN = 180
AWAKE_H = (7.0, 23.0)
HYPO = 70.0
RESCUE_DELAY_MIN = (10.0, 30.0)
RESCUE_GRAMS = (15.0, 20.0)
RESCUE_RECHECK_MIN = 20
TITRATION_MEAL_G = 50.0
TITRATED_NADIR = 90.0


@dataclass(frozen=True)
class Therapy:
    basal_u_per_min: float  # delivered basal, misestimate included
    basal_factor: float
    cr: float  # g/U used for boluses (titrated)
    cf: float  # mg/dL per U used for corrections
    carb_scale: float  # meal and snack sizes relative to the adult ranges


@dataclass(frozen=True)
class Course:
    """What happened, minute by minute from the start."""

    plasma: FloatArray
    interstitial: FloatArray
    meals: tuple[tuple[float, float], ...]  # (minute, grams), rescue carbs included
    boluses: tuple[tuple[float, float], ...]  # (minute, units)


def _nadir_after_meal(vp: VirtualPatient, bolus_u: float, minutes: int = 360) -> float:
    sim = UvaPadova(vp)
    sim.eat(TITRATION_MEAL_G)
    lowest = sim.bg
    for m in range(minutes):
        sim.step(vp.basal_u_per_min + (bolus_u if m == 0 else 0.0))
        lowest = min(lowest, sim.bg)
    return lowest


@cache
def titrated_cr(vp: VirtualPatient) -> float:
    """Quest's CR, or the larger CR whose correct 50 g bolus bottoms out at 90 mg/dL."""
    quest_bolus = TITRATION_MEAL_G / vp.cr
    if _nadir_after_meal(vp, quest_bolus) >= TITRATED_NADIR:
        return vp.cr
    lo, hi = 0.0, quest_bolus  # nadir(lo) >= target > nadir(hi)
    for _ in range(10):
        mid = (lo + hi) / 2
        if _nadir_after_meal(vp, mid) >= TITRATED_NADIR:
            lo = mid
        else:
            hi = mid
    return TITRATION_MEAL_G / max(lo, 1e-3)


def therapy(vp: VirtualPatient, rng: np.random.Generator) -> Therapy:
    factor = float(np.clip(np.exp(rng.normal(0.0, BASAL_SD)), *BASAL_CLIP))
    cr = titrated_cr(vp)
    scale = CARB_SCALE.get(vp.group, 1.0)
    return Therapy(vp.basal_u_per_min * factor, factor, cr, vp.cf * cr / vp.cr, scale)


def _dose(units: float, rng: np.random.Generator) -> float:
    """A bolus as the patient gives it: lognormal error, sometimes missed or doubled."""
    u = rng.random()
    if u < P_MISSED:
        return 0.0
    units *= float(np.exp(rng.normal(0.0, DOSE_SD)))
    if u < P_MISSED + P_OVER:
        units *= float(rng.uniform(*OVER_FACTOR))
    return units


def plan(
    minutes: int, offset_min: float, tp: Therapy, rng: np.random.Generator
) -> tuple[dict[int, float], dict[int, float]]:
    """Planned carbs and meal boluses by minute (the rest is decided on the way)."""
    carbs: dict[int, float] = {}
    boluses: dict[int, float] = {}
    for day in range(-1, math.ceil(minutes / 1440) + 1):
        eats: list[tuple[float, float, bool]] = []
        for hour, span in zip(MEAL_HOURS, MEAL_GRAMS, strict=True):
            at = day * 1440 + hour * 60 + rng.normal(0.0, MEAL_JITTER_MIN) - offset_min
            eats.append((at, float(rng.uniform(*span)) * tp.carb_scale, True))
        n_snacks = int(rng.integers(0, 3))
        for w in rng.choice(len(SNACK_WINDOWS_H), size=n_snacks, replace=False):
            lo, hi = SNACK_WINDOWS_H[int(w)]
            at = day * 1440 + rng.uniform(lo, hi) * 60 - offset_min
            grams = float(rng.uniform(*SNACK_GRAMS)) * tp.carb_scale
            eats.append((at, grams, bool(rng.random() < SNACK_BOLUSED)))
        for at, grams, bolused in eats:
            m = round(at)
            units = _dose(grams / tp.cr, rng) if bolused else 0.0
            late = rng.uniform(*LATE_MIN) if rng.random() < P_LATE else 0.0
            if 0 <= m < minutes:
                carbs[m] = carbs.get(m, 0.0) + grams
            b = round(at + late)
            if units > 0 and 0 <= b < minutes:
                boluses[b] = boluses.get(b, 0.0) + units
    return carbs, boluses


def simulate(
    vp: VirtualPatient, tp: Therapy, minutes: int, offset_min: float, rng: np.random.Generator
) -> Course:
    """Run the patient for ``minutes`` from a time of day ``offset_min`` after midnight."""
    carbs, meal_boluses = plan(minutes, offset_min, tp, rng)
    sim = UvaPadova(vp)
    plasma = np.empty(minutes)
    inter = np.empty(minutes)
    meals: list[tuple[float, float]] = []
    boluses: list[tuple[float, float]] = []
    rescue_at = -1
    last_rescue = -(10**9)
    high_since = -1
    last_bolus = -(10**9)
    for m in range(minutes):
        bg, gs = sim.bg, sim.gsub
        plasma[m], inter[m] = bg, gs
        hour = ((m + offset_min) / 60.0) % 24.0
        units = 0.0
        if m in carbs:
            sim.eat(carbs[m])
            meals.append((m, carbs[m]))
        if m in meal_boluses:
            units = meal_boluses[m]
            if gs > MEAL_CORRECT_ABOVE:
                units += (gs - TARGET) / tp.cf
        # Rescue: the patient notices the low some minutes later and takes fast carbs.
        if bg < HYPO and rescue_at < 0 and m - last_rescue >= RESCUE_RECHECK_MIN:
            rescue_at = m + round(rng.uniform(*RESCUE_DELAY_MIN))
        if m == rescue_at:
            grams = float(rng.uniform(*RESCUE_GRAMS))
            sim.eat(grams)
            meals.append((m, grams))
            last_rescue, rescue_at = m, -1
        # Correction: high for hours, awake, no bolus for a while.
        high_since = (m if high_since < 0 else high_since) if gs > CORRECT_ABOVE else -1
        if (
            high_since >= 0
            and m - high_since >= CORRECT_AFTER_MIN
            and m - last_bolus >= CORRECT_COOLDOWN_MIN
            and AWAKE_H[0] <= hour < AWAKE_H[1]
        ):
            units += _dose((gs - TARGET) / tp.cf, rng)
            high_since = m  # wait again before another
        if units > 0:
            boluses.append((m, units))
            last_bolus = m
        sim.step(tp.basal_u_per_min + units)
    return Course(plasma, inter, tuple(meals), tuple(boluses))
