"""What looks like a decompensation and is not: the confounders a heart-failure alert meets.

    infection        3-10 days: heart rate +8-20 /min, respiratory rate +2-5 /min, SpO2
                     -1-3 %, activity -30-60 %, skin temperature +0.8-1.8 C (fever),
                     weight -0.3-1 kg (poor intake); ~1.5 a year
    holiday          5-14 days away from routine: weight +0.5-2 kg (salt, food, drink),
                     systolic +3-8 mmHg, peaking as it ends and fading over about four
                     times its length after (labelled until five lengths); ~1 a year
    scale_change     a new scale or another floor: every weighing from then on reads
                     0.4-1.5 kg higher or lower (the body is unchanged: the scale firmware
                     applies the offset); ~0.3 a year
    post_discharge   after each admission, diuresis leaves the patient 1-2.5 kg under their
                     usual weight, regained over 2-4 weeks: a steady "gain" that is
                     recovery, not a new decompensation (the deficit starts at the
                     admission itself, a simplification: the first 10 days after one are
                     not judged by the benches)

Only patients with heart failure have them (body.py). Each is labelled (kind, start, end)
in the simulated truth, so that a benchmark can say which of a model's false alerts each
explains (bench/risk.py); the cohort files do not carry the labels yet. The rates and
sizes are plausible choices, to be argued with: infections are the commonest precipitant
of admissions in heart failure cohorts and the commonest mimic of one in remote
monitoring; the others are the weight rule's classic false alarms. They come from a
random stream of their own: adding them changed no other random draw (the patients who
have them have different signals, and fewer steps during an infection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim.physiology.processes import Array, add_bump

MIN_PER_DAY = 1440
INFECTIONS_PER_YEAR = 1.5
HOLIDAYS_PER_YEAR = 1.0
SCALE_CHANGES_PER_YEAR = 0.3
EFFECTS = ("heart_rate", "resp_rate", "spo2", "activity", "skin_temp", "weight_kg", "systolic")


@dataclass(frozen=True)
class Confounder:
    # infection | holiday | scale_change | post_discharge | subclinical_congestion (the
    # last drawn by heart_failure.py, labelled here beside the others)
    kind: str
    start: float  # epoch s
    end: float  # epoch s
    scale_offset_kg: float = 0.0  # scale_change: what every later weighing adds


def _count(rng: np.random.Generator, per_year: float, days: float) -> int:
    return int(rng.poisson(per_year * days / 365.0))


def simulate(
    rng: np.random.Generator, start: float, minutes: int, admissions: list[float]
) -> tuple[dict[str, Array], list[Confounder]]:
    """Per-minute effects on the body's signals, and the labelled confounders.
    ``admissions``: the decompensations' peaks (epoch s), for post-discharge recovery."""
    effects = {k: np.zeros(minutes) for k in EFFECTS}
    found: list[Confounder] = []
    days = minutes / MIN_PER_DAY

    def at(m: float) -> float:
        return start + m * 60.0

    for _ in range(_count(rng, INFECTIONS_PER_YEAR, days)):
        begin = rng.uniform(-5, days) * MIN_PER_DAY
        length = rng.uniform(3, 10) * MIN_PER_DAY
        size = {
            "heart_rate": rng.uniform(8, 20),
            "resp_rate": rng.uniform(2, 5),
            "spo2": rng.uniform(1, 3),
            "activity": rng.uniform(0.3, 0.6),
            "skin_temp": rng.uniform(0.8, 1.8),
            "weight_kg": -rng.uniform(0.3, 1.0),
        }
        for name, amount in size.items():
            add_bump(effects[name], begin, length / 3.0, float(amount))
        # The bump peaks a third of the way in and has faded by five thirds.
        found.append(Confounder("infection", at(begin), at(begin + 5 * length / 3)))
    for _ in range(_count(rng, HOLIDAYS_PER_YEAR, days)):
        begin = rng.uniform(-5, days) * MIN_PER_DAY
        length = rng.uniform(5, 14) * MIN_PER_DAY
        add_bump(effects["weight_kg"], begin, length, float(rng.uniform(0.5, 2.0)))
        add_bump(effects["systolic"], begin, length, float(rng.uniform(3, 8)))
        found.append(Confounder("holiday", at(begin), at(begin + 5 * length)))
    for _ in range(_count(rng, SCALE_CHANGES_PER_YEAR, days)):
        when = rng.uniform(0, days) * MIN_PER_DAY
        offset = float(rng.uniform(0.4, 1.5) * rng.choice([-1.0, 1.0]))
        # The body does not change: the label lasts as long as a 4-week norm remembers it.
        found.append(Confounder("scale_change", at(when), at(when + 28 * MIN_PER_DAY), offset))
    t = np.arange(minutes, dtype=float)
    for peak in admissions:
        m = (peak - start) / 60.0
        deficit = float(rng.uniform(1.0, 2.5))
        regain = rng.uniform(14, 28) * MIN_PER_DAY
        after = t - m
        dry = np.where((after >= 0) & (after < regain), deficit * (1.0 - after / regain), 0.0)
        effects["weight_kg"] -= dry
        found.append(Confounder("post_discharge", at(m), at(m + regain)))
    return effects, found


def scale_offset(confounders: list[Confounder], t: float) -> float:
    """What a weighing at ``t`` reads above the body: every scale change before it."""
    return sum(c.scale_offset_kg for c in confounders if c.kind == "scale_change" and c.start <= t)
