"""Predicted low: the probability that glucose falls below the low threshold within the
predictor's horizon, from the twin's estimate and the last 45 minutes of CGM readings.

    StateEstimate (level, rate) + recent readings -> features -> logistic -> probability

Why not the twin's trend alone: the glucose filter carries the CGM's correlated error as a
state (estimation.md), so at the start of a fall it explains much of the drop as sensor
error and its rate lags: on simulated insulin-error lows the truth fell at 3-4 mg/dL/min
while the filter's rate read -0.9. Straight-line projections of the twin (P >= 0.5 within
30 min) alarmed for 73% of lows, a median of 7 min ahead (bench/alerts.py, seed 7007).
Least-squares slopes of the raw readings over 10, 20 and 30 min see the fall sooner but
are noisy on their own (linear extrapolation: 5 false alarms a day). A logistic model
weighs both, trained on simulated patients (``python -m models train-hypo``: seeds and
figures in shipped/hypo_predictor.json); bench/alerts.py scores it on a held-out cohort.

Features (``FEATURES``; levels are shifted by ``low - 70`` so that a patient's own low
threshold plays the part of the 70 mg/dL the model was trained on):

    slope_10/20/30     least-squares slope of the readings in the last 10/20/30 min
                       (mg/dL/min); a 20- or 30-min window with fewer than 3 readings
                       widens to 30 and then 45 min; slope_10 is 0 with fewer than 3
    twin_rate          the twin's rate (mg/dL/min)
    level_20           the 20-min fit's value now, minus 100
    level_20_capped    the same, capped at 200 mg/dL (a high level matters less)
    projection_20/10   the 20/10-min fit projected 30 min ahead, minus 70
    projection_twin    the twin's level + 30 x its rate, minus 70
    residual_sd_20     the spread of the readings about the 20-min fit (noise)
    fall_agreement     min(slope_10, 0) x min(slope_20, 0): both windows falling

The probability is only computed while both the twin's level and the 20-min fit are at or
above the threshold (below it the low alarms speak) and 3 readings lie within 45 min.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edge_twin.domain import PredictedLow, Reading, StateEstimate
from edge_twin.errors import ModelError

FEATURES = (
    "slope_10",
    "slope_20",
    "slope_30",
    "twin_rate",
    "level_20",
    "level_20_capped",
    "projection_20",
    "projection_10",
    "projection_twin",
    "residual_sd_20",
    "fall_agreement",
)
TRAINED_LOW_MGDL = 70.0
PROJECTION_MIN = 30.0
MIN_READINGS = 3
WINDOW_S = 45 * 60.0  # the readings the features look at (the widest fallback window)
SHIPPED = Path(__file__).resolve().parent / "shipped" / "hypo_predictor.json"


@dataclass(frozen=True)
class LineFit:
    level: float  # the fitted value at the newest reading's time
    slope: float  # per minute
    residual_sd: float


def fit_line(times: Sequence[float], values: Sequence[float], window_min: float) -> LineFit | None:
    """Least squares over the readings within ``window_min`` of the newest one (times
    ascending, seconds); None with fewer than MIN_READINGS there. Closed form: a handful
    of points, on the alarm path of every reading (numpy's lstsq costs ~15x more)."""
    end = times[-1]
    chosen = [
        ((t - end) / 60.0, v)
        for t, v in zip(times, values, strict=True)
        if end - t <= window_min * 60 + 1
    ]
    n = len(chosen)
    if n < MIN_READINGS:
        return None
    mx = sum(x for x, _ in chosen) / n
    my = sum(y for _, y in chosen) / n
    sxx = sum((x - mx) ** 2 for x, _ in chosen)
    slope = sum((x - mx) * (y - my) for x, y in chosen) / sxx if sxx > 0 else 0.0
    level = my - slope * mx  # the line at x = 0, the newest reading's time
    sse = sum((y - level - slope * x) ** 2 for x, y in chosen)
    return LineFit(level, slope, math.sqrt(sse / max(1, n - 2)))


def features(
    level: float,
    rate: float,
    times: Sequence[float],
    values: Sequence[float],
    low_mgdl: float = TRAINED_LOW_MGDL,
) -> dict[str, float] | None:
    """The model's inputs, or None when it does not apply (too few recent readings, or
    already below the threshold). ``times``/``values``: recent readings, ascending."""
    if not times:
        return None
    f10 = fit_line(times, values, 10.0)
    # Sparse data (a third of a real CGM's samples can be missing): a window short of
    # readings widens rather than silencing the prediction.
    f20 = (
        fit_line(times, values, 20.0)
        or fit_line(times, values, 30.0)
        or fit_line(times, values, WINDOW_S / 60.0)
    )
    f30 = fit_line(times, values, 30.0) or fit_line(times, values, WINDOW_S / 60.0)
    shift = low_mgdl - TRAINED_LOW_MGDL
    if f20 is None or level < low_mgdl or f20.level < low_mgdl:
        return None
    s10 = f10.slope if f10 else 0.0
    s30 = f30.slope if f30 else 0.0
    level_20 = f20.level - shift
    return {
        "slope_10": s10,
        "slope_20": f20.slope,
        "slope_30": s30,
        "twin_rate": rate,
        "level_20": level_20 - 100.0,
        "level_20_capped": min(level_20, 200.0) - 100.0,
        "projection_20": level_20 + PROJECTION_MIN * f20.slope - TRAINED_LOW_MGDL,
        "projection_10": (
            f10.level - shift + PROJECTION_MIN * f10.slope - TRAINED_LOW_MGDL if f10 else 0.0
        ),
        "projection_twin": level - shift + PROJECTION_MIN * rate - TRAINED_LOW_MGDL,
        "residual_sd_20": f20.residual_sd,
        "fall_agreement": min(s10, 0.0) * min(f20.slope, 0.0),
    }


@dataclass(frozen=True)
class HypoPredictor:
    """A standardised logistic model: p = 1 / (1 + exp(-(b + w . (x - mean) / scale)))."""

    version: str
    horizon_min: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    alarm_probability: float  # the default alarm level chosen on the training cohorts
    card: dict[str, Any]

    def probability(self, inputs: dict[str, float]) -> float:
        z = self.intercept + sum(
            w * (inputs[name] - m) / s
            for name, w, m, s in zip(FEATURES, self.coef, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "hypo_predictor",
            "version": self.version,
            "features": list(FEATURES),
            "horizon_min": self.horizon_min,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "alarm_probability": self.alarm_probability,
            "card": self.card,
        }


def from_json(doc: dict[str, Any]) -> HypoPredictor:
    try:
        if tuple(doc["features"]) != FEATURES:
            raise ModelError(
                f"hypo predictor features {doc['features']} are not this gateway's {FEATURES}"
            )
        predictor = HypoPredictor(
            version=str(doc["version"]),
            horizon_min=float(doc["horizon_min"]),
            mean=tuple(float(v) for v in doc["mean"]),
            scale=tuple(float(v) for v in doc["scale"]),
            coef=tuple(float(v) for v in doc["coef"]),
            intercept=float(doc["intercept"]),
            alarm_probability=float(doc["alarm_probability"]),
            card=dict(doc.get("card", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"hypo predictor file is malformed: {exc!r}") from exc
    sizes = {len(predictor.mean), len(predictor.scale), len(predictor.coef)}
    if sizes != {len(FEATURES)} or not all(s > 0 for s in predictor.scale):
        raise ModelError("hypo predictor needs one mean, positive scale and weight per feature")
    return predictor


def load(path: Path = SHIPPED) -> HypoPredictor:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the hypo predictor {path}: {exc}") from exc
    return from_json(doc)


@cache
def shipped() -> HypoPredictor:
    return load(SHIPPED)


def predict_low(e: StateEstimate, recent: Sequence[Reading], low_mgdl: float) -> PredictedLow:
    """The predicted-low risk at the newest of the twin's time and the readings' (a reading
    may be ahead of a twin still busy with a backlog), from the readings of the window up
    to then. Never raises: a missing or broken predictor file is a ``why_not``."""
    t = max([e.t, *(r.t for r in recent)])
    try:
        predictor = shipped()
    except ModelError as exc:
        return PredictedLow(
            e.patient_id, t, low_mgdl, 0.0, None, None, "hypo_predictor", "", f"unavailable: {exc}"
        )
    window = sorted((r for r in recent if t - WINDOW_S <= r.t <= t), key=lambda r: r.t)
    inputs = features(
        e.mean, e.rate_per_min or 0.0, [r.t for r in window], [r.value for r in window], low_mgdl
    )
    return PredictedLow(
        e.patient_id,
        t,
        low_mgdl,
        predictor.horizon_min * 60.0,
        None if inputs is None else predictor.probability(inputs),
        None if inputs is None else inputs["slope_20"],
        "hypo_predictor",
        predictor.version,
        None
        if inputs is not None
        else f"needs {MIN_READINGS} readings in {WINDOW_S / 60:.0f} min while glucose is"
        " above the low threshold",
    )
