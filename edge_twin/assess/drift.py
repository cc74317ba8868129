"""Feature drift: are the live features still like the ones the model was trained on?

For each feature, the live values of recent assessments are binned by the training
deciles stored in the model card and compared with the training's 10% per bin by the
population stability index, PSI = sum (live - train) ln(live / train). Usual reading:
< 0.1 stable, 0.1-0.25 moderate shift, > 0.25 drift (the model's figures may not hold).
The share of unknown (imputed) values is compared with training's as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_twin.assess.model_card import ModelCard

MODERATE, DRIFT = 0.1, 0.25
MIN_ROWS = 30


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    live_missing: float
    train_missing: float
    status: str  # stable | moderate | drift | too few rows


def psi(values: Sequence[float], deciles: Sequence[float]) -> float:
    counts = np.bincount(np.searchsorted(np.asarray(deciles), values, side="right"), minlength=10)
    live = np.maximum(counts / max(1, len(values)), 1e-4)
    train = np.full(len(deciles) + 1, 1.0 / (len(deciles) + 1))
    return float(np.sum((live - train) * np.log(live / train)))


def drift_report(card: ModelCard, rows: Sequence[dict[str, float | None]]) -> list[FeatureDrift]:
    out = []
    for stats in card.feature_stats:
        column = [r.get(stats.name) for r in rows]
        known = [float(v) for v in column if v is not None and not math.isnan(v)]
        missing = 1.0 - len(known) / len(column) if column else math.nan
        if len(known) < MIN_ROWS or not stats.deciles:
            out.append(
                FeatureDrift(stats.name, math.nan, missing, stats.missing_fraction, "too few rows")
            )
            continue
        value = psi(known, stats.deciles)
        status = "drift" if value > DRIFT else "moderate" if value > MODERATE else "stable"
        out.append(FeatureDrift(stats.name, value, missing, stats.missing_fraction, status))
    return out
