"""Glycaemic threshold risk from the twin's forecast distribution.

    StateEstimate(glucose, forecasts at 5..60 min) -> ThresholdRisk

P(glucose < threshold at some time within the horizon) is approximated by the largest
per-step probability over the forecast steps within the horizon,
    max_k Phi((threshold - mu_k) / sigma_k),
which is a lower bound of the crossing probability (the path could dip between steps and
the steps are correlated). It is monotone in the horizon and exact for a single step.

The twin's forecast damps the trend and pulls toward the baseline, which is right on
average (bench/estimate.py scores it) but late for a fall: the predicted-low alarm uses
``hypo_predictor.py`` instead (docs/alerts.md).
"""

from __future__ import annotations

import math

from edge_twin.domain import Signal, StateEstimate, ThresholdRisk

HYPO_MGDL = 70.0
URGENT_LOW_MGDL = 55.0
RISK_HORIZON_S = 30 * 60.0


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def probability_below(
    estimate: StateEstimate, threshold: float, horizon_s: float, kind: str = ""
) -> ThresholdRisk:
    if estimate.signal is not Signal.GLUCOSE:
        raise ValueError(f"glycaemic risk needs a glucose estimate, got {estimate.signal}")
    steps = [(0.0, estimate.mean, estimate.sd)] + [
        (f.horizon_s, f.mean, f.sd) for f in estimate.forecasts if f.horizon_s <= horizon_s
    ]
    p = max(
        normal_cdf((threshold - mean) / sd) if sd > 0 else float(mean < threshold)
        for _, mean, sd in steps
    )
    return ThresholdRisk(Signal.GLUCOSE, threshold, True, horizon_s, min(1.0, max(0.0, p)), kind)


def threshold_risks(
    estimate: StateEstimate,
    low_mgdl: float = HYPO_MGDL,
    urgent_low_mgdl: float = URGENT_LOW_MGDL,
    horizon_s: float = RISK_HORIZON_S,
) -> list[ThresholdRisk]:
    """The risks of crossing the patient's own low and urgent-low thresholds (their alarm
    settings) within the horizon."""
    return [
        probability_below(estimate, low_mgdl, horizon_s, "low"),
        probability_below(estimate, urgent_low_mgdl, horizon_s, "urgent_low"),
    ]
