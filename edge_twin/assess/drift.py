"""Feature drift: are the live features still like the ones the model was trained on?

For each feature, the live values of recent assessments are binned by the training's bin
edges stored in the model card (its distinct deciles) and compared with the share of the
training data in each bin (also in the card: for a discrete feature such as
``weight_readings_7d``, deciles 1,2,3,3,4,5,5,6,7, the bins are not 10% each) by the
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
# An empty bin counts as this share (ln 0 is undefined): small against a 5-10% bin.
FLOOR = 1e-3


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    live_missing: float
    train_missing: float
    status: str  # stable | moderate | drift | too few rows | no reference


def bin_shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """The share of ``values`` in each of the len(edges) + 1 bins the edges make."""
    index = np.searchsorted(
        np.asarray(edges, dtype=float), np.asarray(values, dtype=float), "right"
    )
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [float(c) for c in counts / max(1, len(values))]


def psi(values: Sequence[float], edges: Sequence[float], train: Sequence[float]) -> float:
    live = np.maximum(np.asarray(bin_shares(values, edges)), FLOOR)
    ref = np.maximum(np.asarray(train, dtype=float), FLOOR)
    return float(np.sum((live - ref) * np.log(live / ref)))


def drift_report(card: ModelCard, rows: Sequence[dict[str, float | None]]) -> list[FeatureDrift]:
    out = []
    for stats in card.feature_stats:
        column = [r.get(stats.name) for r in rows]
        known = [float(v) for v in column if v is not None and not math.isnan(v)]
        missing = 1.0 - len(known) / len(column) if column else math.nan
        if not stats.bin_shares:
            status = "no reference"  # a card from before bin shares: retrain to get them
            out.append(FeatureDrift(stats.name, math.nan, missing, stats.missing_fraction, status))
            continue
        if len(known) < MIN_ROWS:
            out.append(
                FeatureDrift(stats.name, math.nan, missing, stats.missing_fraction, "too few rows")
            )
            continue
        value = psi(known, stats.bin_edges, stats.bin_shares)
        status = "drift" if value > DRIFT else "moderate" if value > MODERATE else "stable"
        out.append(FeatureDrift(stats.name, value, missing, stats.missing_fraction, status))
    return out
