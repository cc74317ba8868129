"""Heart-failure fluid status: a congestion index c(t) >= 0 with decompensation episodes.

Each decompensation builds over ``build_days`` (7-30 days, shared/guides/domain.md: weight
starts rising up to ~30 days before admission) as c = ((t - onset) / build)^1.7, peaks at 1
at the event (the admission), then resolves over 3-7 days of treatment. Between events,
subclinical bumps (amplitude 0.15-0.45, resolving on their own) give the rules and the
model realistic opportunities for false alarms.

Each episode has its own expression: how much weight it adds (about a third of episodes
add none: only 11% of patients gain >= 2 kg in 3 days), and how much it raises heart rate
and respiratory rate (+2.1 /min before events, NOTICE-HF), lowers SpO2 and activity, and
moves blood pressure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim.physiology.processes import Array, add_bump

MIN_PER_DAY = 1440


@dataclass(frozen=True)
class Expression:
    """What congestion c = 1 does to each signal in this episode."""

    weight_kg: float
    heart_rate: float
    resp_rate: float
    spo2: float  # a drop, positive
    activity: float  # fraction of steps lost
    systolic: float


@dataclass(frozen=True)
class Subclinical:
    """Congestion that resolved without an event: the twin may rightly see it, but no
    admission follows (a labelled cause of false alerts)."""

    start: float  # epoch s
    end: float  # epoch s: faded (five widths of its bump)


@dataclass(frozen=True)
class Decompensation:
    onset: float  # epoch s: congestion starts to build
    peak: float  # epoch s: the event (admission)
    expression: Expression


def draw_expression(rng: np.random.Generator) -> Expression:
    no_weight_gain = rng.random() < 0.35
    return Expression(
        weight_kg=0.0 if no_weight_gain else float(rng.uniform(1.0, 4.0)),
        heart_rate=float(rng.uniform(4, 14)),
        resp_rate=float(rng.uniform(1.5, 5.0)),
        spo2=float(rng.uniform(0.5, 3.5)),
        activity=float(rng.uniform(0.25, 0.6)),
        systolic=float(rng.uniform(-12, 10)),
    )


def simulate(
    rng: np.random.Generator, start: float, minutes: int, per_year: float
) -> tuple[dict[str, Array], list[Decompensation], list[Subclinical]]:
    """Per-minute effects on each signal (add to the baselines), the episodes and the
    subclinical bumps."""
    t = np.arange(minutes, dtype=float)
    effects = {
        k: np.zeros(minutes)
        for k in ("weight_kg", "heart_rate", "resp_rate", "spo2", "activity", "systolic")
    }
    episodes: list[Decompensation] = []
    bumps: list[Subclinical] = []
    if per_year <= 0:
        return effects, episodes, bumps
    days = minutes / MIN_PER_DAY
    # Events at least 30 days apart; the first may be building up already at start.
    n = rng.poisson(per_year * days / 365.0)
    peaks = np.sort(rng.uniform(5 * MIN_PER_DAY, minutes + 20 * MIN_PER_DAY, n))
    kept: list[float] = []
    for p in peaks:
        if not kept or p - kept[-1] > 30 * MIN_PER_DAY:
            kept.append(float(p))
    for peak in kept:
        build = rng.uniform(7, 30) * MIN_PER_DAY
        recover = rng.uniform(3, 7) * MIN_PER_DAY
        onset = peak - build
        rising = np.clip((t - onset) / build, 0.0, 1.0) ** 1.7 * (t <= peak)
        falling = np.exp(-np.maximum(t - peak, 0.0) / (recover / 3.0)) * (t > peak)
        c = rising + falling
        expression = draw_expression(rng)
        for name in effects:
            effects[name] += c * getattr(expression, name)
        if peak < minutes:  # the event happens inside the simulated period
            episodes.append(Decompensation(start + onset * 60, start + peak * 60, expression))
    # Subclinical congestion that resolves without an event: ~1 a month.
    for _ in range(rng.poisson(days / 30.0)):
        at = rng.uniform(-10, days) * MIN_PER_DAY
        width = rng.uniform(3, 8) * MIN_PER_DAY
        amplitude = rng.uniform(0.15, 0.45)
        expression = draw_expression(rng)
        for name in effects:
            add_bump(effects[name], at, width, amplitude * getattr(expression, name))
        bumps.append(Subclinical(start + at * 60.0, start + (at + 5 * width) * 60.0))
    return effects, episodes, bumps
