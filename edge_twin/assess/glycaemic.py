"""Glycaemic threshold risk from the twin's forecast distribution.

    StateEstimate(glucose, forecasts at 5..60 min) -> ThresholdRisk

P(glucose < threshold at some time within the horizon) is approximated by the largest
per-step probability over the forecast steps within the horizon,
    max_k Phi((threshold - mu_k) / sigma_k),
which is a lower bound of the crossing probability (the path could dip between steps and
the steps are correlated). It is monotone in the horizon and exact for a single step.

``trend_probability_below`` is the predicted-low alarm's view: the twin's level and rate
projected as a straight line (the current trend persists; no damping, no return to the
person's baseline), mean_k = level + rate k, var_k = sd^2 + (rate_sd k)^2 (level and rate
taken as independent). The twin's own forecast damps the trend and pulls toward the
baseline, which is right on average (bench/estimate.py scores it) but late for a fall:
on 12 T1-heavy patients x 5 days (glucose model v2), the forecast-based probability at
>= 0.2 alarmed for 85% of lows with 0.75 false alarms a day and a median lead of 9 min,
this projection at >= 0.5 for 92% with 0.40 and 9.5 min. bench/alerts.py has the current
figures (docs/performance.md).
"""

from __future__ import annotations

import math

from edge_twin.domain import Signal, StateEstimate, ThresholdRisk

HYPO_MGDL = 70.0
URGENT_LOW_MGDL = 55.0


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def probability_below(estimate: StateEstimate, threshold: float, horizon_s: float) -> ThresholdRisk:
    if estimate.signal is not Signal.GLUCOSE:
        raise ValueError(f"glycaemic risk needs a glucose estimate, got {estimate.signal}")
    steps = [(0.0, estimate.mean, estimate.sd)] + [
        (f.horizon_s, f.mean, f.sd) for f in estimate.forecasts if f.horizon_s <= horizon_s
    ]
    p = max(
        normal_cdf((threshold - mean) / sd) if sd > 0 else float(mean < threshold)
        for _, mean, sd in steps
    )
    return ThresholdRisk(Signal.GLUCOSE, threshold, True, horizon_s, min(1.0, max(0.0, p)))


def trend_probability_below(
    estimate: StateEstimate, threshold: float, horizon_s: float, step_s: float = 300.0
) -> ThresholdRisk:
    if estimate.signal is not Signal.GLUCOSE or estimate.rate_per_min is None:
        raise ValueError(f"a trend needs a glucose estimate with a rate, got {estimate.signal}")
    rate, rate_sd = estimate.rate_per_min, estimate.rate_sd or 0.0
    p = 0.0
    k = 0.0
    while k <= horizon_s:
        minutes = k / 60.0
        mean = estimate.mean + rate * minutes
        sd = math.sqrt(estimate.sd**2 + (rate_sd * minutes) ** 2)
        p = max(p, normal_cdf((threshold - mean) / sd) if sd > 0 else float(mean < threshold))
        k += step_s
    return ThresholdRisk(Signal.GLUCOSE, threshold, True, horizon_s, min(1.0, max(0.0, p)))
