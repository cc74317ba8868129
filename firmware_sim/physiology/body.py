"""A patient's true physiology, minute by minute: every signal the devices can measure.

    Profile + seed -> Truth(signals per minute, labelled episodes)

    steps       walking bouts while awake (``profile.activity`` a day), fewer when congested
    heart_rate  baseline - 6 asleep + 0.12 x recent steps + congestion + OU noise
    resp_rate   baseline - 1 asleep + congestion + OU noise
    spo2        baseline - 0.6 asleep - congestion + OU noise, at most 100
    skin_temp   baseline + 0.7 asleep - activity + OU noise
    systolic    baseline + day-to-day offset (SD 8.6 mmHg) - 12% asleep (dipping)
                + congestion + OU noise; diastolic likewise (SD 5.8, 10% dip)
    weight      baseline + slow drift (OU, 0.8 kg, 20 days) + 0.4 kg evening swing
                + congestion
    confounders for patients with heart failure: infections, holidays, post-discharge
                recovery (physiology/confounders.py) added to the signals they move;
                scale changes are the scale's
    glucose     physiology/glucose.py, for patients with diabetes (NaN otherwise)

Numbers come from shared/guides/domain.md where it has them; the rest are plausible
choices, documented here so that they can be argued with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_sim.physiology import confounders, heart_failure
from firmware_sim.physiology import glucose as glucose_model
from firmware_sim.physiology.processes import Array, hour_of_day, night_weight, ou, smooth
from firmware_sim.physiology.profile import Profile

SIGNALS = (
    "glucose",
    "systolic",
    "diastolic",
    "heart_rate",
    "spo2",
    "resp_rate",
    "weight",
    "skin_temp",
    "steps",
)


@dataclass
class Truth:
    start: float
    minutes: int
    signals: dict[str, Array]
    hypoglycaemias: list[glucose_model.Hypoglycaemia] = field(default_factory=list)
    decompensations: list[heart_failure.Decompensation] = field(default_factory=list)
    awake: Array = field(default_factory=lambda: np.zeros(0))
    confounders: list[confounders.Confounder] = field(default_factory=list)

    def at(self, signal: str, t: float) -> float:
        i = int((t - self.start) // 60)
        return float(self.signals[signal][min(max(i, 0), self.minutes - 1)])


def simulate(
    profile: Profile,
    start: float,
    minutes: int,
    rng: np.random.Generator,
    confounder_rng: np.random.Generator | None = None,
) -> Truth:
    """``confounder_rng``: a stream of its own for the confounders of a patient with heart
    failure (none without it, and none for other patients: their data stays as it was)."""
    hours = hour_of_day(start, minutes)
    night = night_weight(hours, profile.wake_h, profile.sleep_h)
    hf_effects, decompensations, subclinical = heart_failure.simulate(
        rng, start, minutes, profile.decompensations_per_year
    )
    mimics = [confounders.Confounder("subclinical_congestion", b.start, b.end) for b in subclinical]
    if confounder_rng is not None and profile.heart_failure:
        more, found = confounders.simulate(
            confounder_rng, start, minutes, [d.peak for d in decompensations]
        )
        mimics += found
        hf_effects = {k: v + more[k] for k, v in hf_effects.items()}
        hf_effects["skin_temp"] = more["skin_temp"]
    else:
        hf_effects["skin_temp"] = np.zeros(minutes)
    steps = _steps(rng, profile, start, minutes, night) * np.clip(
        1.0 - hf_effects["activity"], 0.1, 1.0
    )
    recent = smooth(steps, 10)
    day_index = ((start / 60.0 + np.arange(minutes)) // 1440).astype(int)
    day_index -= day_index[0]
    n_days = int(day_index[-1]) + 1
    sys_day = rng.normal(0, 8.6, n_days)[day_index]
    dia_day = rng.normal(0, 5.8, n_days)[day_index]
    signals: dict[str, Array] = {
        "steps": steps,
        "heart_rate": profile.heart_rate
        - 6.0 * night
        + 0.12 * recent
        + hf_effects["heart_rate"]
        + ou(rng, minutes, 2.5, 20),
        "resp_rate": profile.resp_rate
        - 1.0 * night
        + 0.01 * recent
        + hf_effects["resp_rate"]
        + ou(rng, minutes, 0.8, 30),
        "spo2": np.minimum(
            100.0,
            profile.spo2 - 0.6 * night - hf_effects["spo2"] + ou(rng, minutes, 0.6, 30),
        ),
        "skin_temp": profile.skin_temp
        + 0.7 * night
        - 0.004 * recent
        + hf_effects["skin_temp"]
        + ou(rng, minutes, 0.25, 40),
        "systolic": profile.systolic * (1 - 0.12 * night)
        + sys_day
        + 0.05 * recent
        + hf_effects["systolic"]
        + ou(rng, minutes, 4.0, 60),
        "diastolic": profile.diastolic * (1 - 0.10 * night)
        + dia_day
        + 0.03 * recent
        + 0.5 * hf_effects["systolic"]
        + ou(rng, minutes, 3.0, 60),
        "weight": profile.weight_kg
        + ou(rng, minutes, 0.8, 20 * 1440)
        + 0.4 * np.sin(2 * np.pi * (hours - 13.0) / 24.0)
        + hf_effects["weight_kg"],
    }
    hypos: list[glucose_model.Hypoglycaemia] = []
    if profile.diabetes is not None:
        model = glucose_model.GlucoseModel.draw(profile.diabetes, rng)
        signals["glucose"], hypos = glucose_model.simulate(model, start, steps, rng)
    else:
        signals["glucose"] = np.full(minutes, np.nan)
    return Truth(start, minutes, signals, hypos, decompensations, 1.0 - night, mimics)


def _steps(
    rng: np.random.Generator, profile: Profile, start: float, minutes: int, night: Array
) -> Array:
    """Walking bouts (5-40 min at 60-110 steps/min) while awake, plus pottering."""
    steps = rng.poisson(2.0, minutes).astype(float) * (rng.random(minutes) < 0.25)
    offset_min = (start % 86400) / 60.0
    for day in range(-1, minutes // 1440 + 2):
        for _ in range(rng.poisson(profile.activity)):
            hour = rng.uniform(profile.wake_h + 0.5, profile.sleep_h - 0.5)
            at = int(day * 1440 + hour * 60 - offset_min)
            length = int(rng.uniform(5, 40))
            lo, hi = max(0, at), min(minutes, at + length)
            if lo < hi:
                steps[lo:hi] = rng.uniform(60, 110) + rng.normal(0, 8, hi - lo)
    return np.maximum(steps * (1.0 - night), 0.0)
