"""Decompensation-risk features: what the twin's state says about the last four weeks.

    PatientHistory (the twin's filters and their midnight snapshots) -> features(t) -> row

The features are read from the twin's *state*, not from raw readings: levels and personal
baselines the filters hold, their uncertainty, and how much evidence they have had (a
missing scale shows as a growing weight SD and days since the last weighing, not as a
zero). Only activity is summed from the step readings themselves.

For a patient at event time t, with d the UTC day of t and B_k the midnight k days
before d's own (B_0 = start of today), "now" is the filter's state at t, "B_k" its state
at that midnight from the readings before it, and a personal norm is the median over
B_8 .. B_28 (the last week left out, so a slow decompensation does not hide in it):

    weight_change_3d        W(now) - W(B_3)                     kg
    weight_change_7d        W(now) - W(B_7)                     kg
    weight_vs_norm          W(now) - median W(B_8..B_28)        kg
    weight_sd               SD of W(now)                        kg
    weight_days_since       days since the last weighing
    weight_readings_7d      weighings since B_7
    hr_vs_norm              HR baseline(now) - its norm         /min
    hr_change_7d            HR baseline(now) - HR baseline(B_7) /min
    hr_baseline_sd          SD of the HR baseline now           /min
    rr_vs_norm              respiratory-rate baseline - norm    /min
    rr_change_7d            RR baseline(now) - RR baseline(B_7) /min
    spo2_vs_norm            SpO2 baseline - norm                %
    systolic_vs_norm        systolic baseline - norm            mmHg
    activity_ratio          steps per worn minute, last 3 days / days 7-28 before
    wear_3d                 fraction of the last 3 days' minutes with a heart-rate reading
    weight_change_14d       W(now) - W(B_14)                    kg
    hr_change_14d           HR baseline(now) - HR baseline(B_14) /min
    rr_change_14d           RR baseline(now) - RR baseline(B_14) /min
    temp_vs_norm            skin-temperature baseline - its norm  Cel (a fever: the
                            infection that mimics a decompensation, not one)
    weight_z, hr_z, rr_z    the *_vs_norm deviations in units of the person's own spread
                            over the norm days (1.4826 x median absolute deviation, with a
                            floor: 0.3 kg, 1 /min, 0.3 /min), so a person whose numbers
                            always wander is not read like one whose numbers never move

The two-week changes and the z-scores are there for lead time: a decompensation builds
over 7-30 days, and the earlier it shows, the smaller the change the model must trust.

W is the weight filter's level; "baseline" the personal-baseline state of the vital-sign
filters (estimate/models.py), which follows the person's normal and, slowly, its shifts.
A feature the history cannot give (no scale yet, too few days) is NaN: the model runtime
imputes it and lowers its confidence.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge_twin.domain import Signal
from edge_twin.estimate import DAY_S, DEFAULT_MODELS, FilterState

FEATURES: tuple[str, ...] = (
    "weight_change_3d",
    "weight_change_7d",
    "weight_vs_norm",
    "weight_sd",
    "weight_days_since",
    "weight_readings_7d",
    "hr_vs_norm",
    "hr_change_7d",
    "hr_baseline_sd",
    "rr_vs_norm",
    "rr_change_7d",
    "spo2_vs_norm",
    "systolic_vs_norm",
    "activity_ratio",
    "wear_3d",
    "weight_change_14d",
    "hr_change_14d",
    "rr_change_14d",
    "weight_z",
    "hr_z",
    "rr_z",
    "temp_vs_norm",
)
# Each feature in words, for the people who read an explanation (dashboard, FHIR note).
FEATURE_WORDS: dict[str, str] = {
    "weight_change_3d": "weight change over 3 days (kg)",
    "weight_change_7d": "weight change over 7 days (kg)",
    "weight_vs_norm": "weight above the person's usual (kg)",
    "weight_sd": "day-to-day weight variability (kg)",
    "weight_days_since": "days since the last weighing",
    "weight_readings_7d": "weighings in the last 7 days",
    "hr_vs_norm": "resting heart rate above usual (beats/min)",
    "hr_change_7d": "heart-rate change over 7 days (beats/min)",
    "hr_baseline_sd": "heart-rate variability of the usual level",
    "rr_vs_norm": "breathing rate above usual (breaths/min)",
    "rr_change_7d": "breathing-rate change over 7 days (breaths/min)",
    "spo2_vs_norm": "oxygen saturation against usual (%)",
    "systolic_vs_norm": "systolic pressure against usual (mmHg)",
    "activity_ratio": "activity against usual (ratio)",
    "wear_3d": "share of the last 3 days the wristband was worn",
    "weight_change_14d": "weight change over 14 days (kg)",
    "hr_change_14d": "heart-rate change over 14 days (beats/min)",
    "rr_change_14d": "breathing-rate change over 14 days (breaths/min)",
    "weight_z": "weight against the person's usual spread (SDs)",
    "hr_z": "heart rate against the person's usual spread (SDs)",
    "rr_z": "breathing rate against the person's usual spread (SDs)",
    "temp_vs_norm": "skin temperature against usual (°C)",
}
# Which way each feature moves as a decompensation builds (+1 up, -1 down; 0: a measure
# of evidence, not of the body, or no consistent direction). A value beyond the training
# range in the disease's direction is what a decompensation looks like, not a reason to
# doubt the model: only the other way, or a 0 feature, lowers the confidence.
DISEASE_DIRECTION: dict[str, int] = {
    "weight_change_3d": 1,
    "weight_change_7d": 1,
    "weight_vs_norm": 1,
    "weight_sd": 0,
    "weight_days_since": 0,
    "weight_readings_7d": 0,
    "hr_vs_norm": 1,
    "hr_change_7d": 1,
    "hr_baseline_sd": 0,
    "rr_vs_norm": 1,
    "rr_change_7d": 1,
    "spo2_vs_norm": -1,
    "systolic_vs_norm": 0,  # falls in low-output failure, rises in congestion
    "activity_ratio": -1,
    "wear_3d": 0,
    "weight_change_14d": 1,
    "hr_change_14d": 1,
    "rr_change_14d": 1,
    "weight_z": 1,
    "hr_z": 1,
    "rr_z": 1,
    "temp_vs_norm": 0,  # a fever points to an infection, the commonest mimic
}
# Floors of the personal spread in the z-scores (see above).
SPREAD_FLOOR = {Signal.WEIGHT: 0.3, Signal.HEART_RATE: 1.0, Signal.RESP_RATE: 0.3}
# The signals whose filters the features read (steps: only their readings).
SIGNALS = (
    Signal.WEIGHT,
    Signal.HEART_RATE,
    Signal.RESP_RATE,
    Signal.SPO2,
    Signal.SYSTOLIC,
    Signal.SKIN_TEMP,
)


def twin_models() -> dict[str, str]:
    """The twin's filter models the features are computed from, "name vVERSION" by signal:
    a risk model is only valid on the filters it was trained on (its card records them)."""
    return {s.value: f"{DEFAULT_MODELS[s].name} v{DEFAULT_MODELS[s].version}" for s in SIGNALS}


NORM_DAYS = range(8, 29)
WINDOW_DAYS = 29  # the history a feature row reads: today and 28 midnights before
MIN_NORM_DAYS = 5

FloatArray = npt.NDArray[np.float64]


class PatientHistory(Protocol):
    """The twin of one patient, as the features read it."""

    def state(self, signal: Signal, t: float, *, before: bool) -> FilterState | None:
        """The filter's state at t from the readings before t (``before``) or at/before t;
        None if the filter had no reading by then."""

    def steps(self, t0: float, t1: float) -> tuple[float, int]:
        """(sum of step counts, number of step readings) with t0 <= t < t1."""


def day_start(t: float) -> float:
    return math.floor(t / DAY_S) * DAY_S


def features(history: PatientHistory, t: float) -> FloatArray:
    """One feature row (order of FEATURES) for event time t."""
    b0 = day_start(t)

    def at_midnight(signal: Signal, k: int) -> FilterState | None:
        return history.state(signal, b0 - k * DAY_S, before=True)

    def value(state: FilterState | None) -> float:
        # weight: the level; vital signs: the personal-baseline state (the last one)
        return math.nan if state is None else float(state.x[-1])

    def norm_days(signal: Signal) -> list[float]:
        return [v for k in NORM_DAYS if not math.isnan(v := value(at_midnight(signal, k)))]

    def norm(signal: Signal) -> float:
        values = norm_days(signal)
        return float(np.median(values)) if len(values) >= MIN_NORM_DAYS else math.nan

    def z(signal: Signal, deviation: float) -> float:
        values = norm_days(signal)
        if len(values) < MIN_NORM_DAYS:
            return math.nan
        mad = float(np.median(np.abs(np.array(values) - np.median(values))))
        return deviation / max(1.4826 * mad, SPREAD_FLOOR[signal])

    now = {s: history.state(s, t, before=False) for s in SIGNALS}

    def sd_now(signal: Signal) -> float:
        state = now[signal]
        return math.nan if state is None else math.sqrt(float(state.P[-1, -1]))

    weight = value(now[Signal.WEIGHT])
    w = now[Signal.WEIGHT]
    w7 = at_midnight(Signal.WEIGHT, 7)
    hr = value(now[Signal.HEART_RATE])
    rr = value(now[Signal.RESP_RATE])
    recent_steps, recent_n = history.steps(t - 3 * DAY_S, t)
    usual_steps, usual_n = history.steps(t - 28 * DAY_S, t - 7 * DAY_S)
    hr_now, hr3 = now[Signal.HEART_RATE], at_midnight(Signal.HEART_RATE, 3)
    weight_dev = weight - norm(Signal.WEIGHT)
    hr_dev = hr - norm(Signal.HEART_RATE)
    rr_dev = rr - norm(Signal.RESP_RATE)
    row = [
        weight - value(at_midnight(Signal.WEIGHT, 3)),
        weight - value(w7),
        weight_dev,
        sd_now(Signal.WEIGHT),
        math.nan if w is None else (t - w.last_measured_at) / DAY_S,
        math.nan if w is None else float(w.n_measurements - (w7.n_measurements if w7 else 0)),
        hr_dev,
        hr - value(at_midnight(Signal.HEART_RATE, 7)),
        sd_now(Signal.HEART_RATE),
        rr_dev,
        rr - value(at_midnight(Signal.RESP_RATE, 7)),
        value(now[Signal.SPO2]) - norm(Signal.SPO2),
        value(now[Signal.SYSTOLIC]) - norm(Signal.SYSTOLIC),
        (recent_steps / recent_n) / (usual_steps / usual_n)
        if recent_n and usual_n and usual_steps > 0
        else math.nan,
        0.0
        if hr_now is None
        else (hr_now.n_measurements - (hr3.n_measurements if hr3 else 0))
        / ((t - (b0 - 3 * DAY_S)) / 60.0),
        weight - value(at_midnight(Signal.WEIGHT, 14)),
        hr - value(at_midnight(Signal.HEART_RATE, 14)),
        rr - value(at_midnight(Signal.RESP_RATE, 14)),
        z(Signal.WEIGHT, weight_dev),
        z(Signal.HEART_RATE, hr_dev),
        z(Signal.RESP_RATE, rr_dev),
        value(now[Signal.SKIN_TEMP]) - norm(Signal.SKIN_TEMP),
    ]
    return np.array(row, dtype=float)
