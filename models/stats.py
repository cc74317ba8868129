"""95% confidence intervals for the figures the benches report.

    wilson(k, n)       a proportion (sensitivity): Wilson score interval
    poisson_rate(k, exposure)   a count per unit of exposure (false alarms per patient-day
                       or -year): exact Garwood interval from the chi-square distribution
    bootstrap_median(values)    a median (lead time): percentile bootstrap, fixed seed

With 100 lows a sensitivity near 0.85 is known to about +-0.07; the intervals say so
beside every figure, so that two figures are not read as different when they are not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2

Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def poisson_rate(k: int, exposure: float) -> tuple[float, float]:
    if exposure <= 0:
        return (math.nan, math.nan)
    lo = 0.0 if k == 0 else float(chi2.ppf(0.025, 2 * k)) / 2
    hi = float(chi2.ppf(0.975, 2 * (k + 1))) / 2
    return (lo / exposure, hi / exposure)


def bootstrap_median(
    values: Sequence[float], repeats: int = 2000, seed: int = 0
) -> tuple[float, float]:
    if not values:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    medians = np.median(rng.choice(data, (repeats, len(data))), axis=1)
    return (float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975)))


def rounded(interval: tuple[float, float], digits: int = 3) -> list[float]:
    return [round(interval[0], digits), round(interval[1], digits)]


def detection(
    prefix: str,
    detected: int,
    events: int,
    false: int,
    exposure: float,
    leads: Sequence[float],
    rate: str,
    lead: str,
) -> dict[str, float | list[float]]:
    """An alarm's figures with their 95% intervals, as the benches print them: under
    ``{prefix}sensitivity``, ``{prefix}{rate}`` (false alarms per unit of ``exposure``) and
    ``{prefix}{lead}`` (median lead), each beside its ``..._ci95``."""
    return {
        f"{prefix}sensitivity": round(detected / events, 3) if events else math.nan,
        f"{prefix}sensitivity_ci95": rounded(wilson(detected, events)),
        f"{prefix}{rate}": round(false / exposure, 3) if exposure > 0 else math.nan,
        f"{prefix}{rate}_ci95": rounded(poisson_rate(false, exposure)),
        f"{prefix}{lead}": round(float(np.median(leads)), 1) if len(leads) else math.nan,
        f"{prefix}{lead}_ci95": rounded(bootstrap_median(leads), 1),
    }
