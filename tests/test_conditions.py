"""Alarm conditions as pure functions: the glucose rules that must never be slower than a
bare threshold on readings, and the decompensation confidence that must not doubt the
disease when it shows."""

import math
from collections.abc import Callable

import numpy as np
import pytest

from edge_twin.alert import conditions
from edge_twin.alert.catalog import AlarmSettings
from edge_twin.assess import hypo_predictor
from edge_twin.assess.features import DISEASE_DIRECTION, FEATURES
from edge_twin.assess.risk_model import load_model, shipped_dir
from edge_twin.domain import Observation, Provenance, Reading, Signal, StateEstimate
from tests.conftest import T0

STEP = 300.0


def estimate(mean: float, t: float, rate: float = -0.5) -> StateEstimate:
    return StateEstimate(
        "pt-001",
        Signal.GLUCOSE,
        t,
        mean,
        6.0,
        rate,
        0.3,
        t,
        Provenance("glucose_damped_trend", "3", ("cgm-001",), 1, 10),
    )


def recent(values: list[float]) -> list[Reading]:
    """Readings 5 min apart ending at T0 + len * STEP, newest first (as the store gives)."""
    out = [
        Reading("pt-001", "cgm-001", Signal.GLUCOSE, T0 + i * STEP, v, T0 + i * STEP + 5)
        for i, v in enumerate(values)
    ]
    return out[::-1]


def glucose_conditions(
    e: StateEstimate, rs: list[Reading], was: Callable[[str], bool]
) -> list[Observation]:
    """The glucose conditions with default settings, the predicted-low risk assessed as
    the alert stage does."""
    s = AlarmSettings()
    low = hypo_predictor.predict_low(e, rs, s.low_mgdl)
    return conditions.glucose(e, rs, low, s, was, True)


def present(kind: str, mean: float, values: list[float], was: frozenset[str] = frozenset()) -> bool:
    rs = recent(values)
    obs = glucose_conditions(estimate(mean, rs[0].t), rs, was.__contains__)
    return next(o for o in obs if o.alarm_type == kind).present


def test_a_reading_below_the_threshold_alarms_while_the_twin_lags() -> None:
    steady_fall = [130, 121, 112, 104, 96, 88, 80, 73, 67]  # -1.7 mg/dL/min
    assert present("low", 78.0, steady_fall)  # the twin still reads 78
    assert not present("urgent_low", 78.0, steady_fall)
    assert present("urgent_low", 62.0, [*steady_fall, 60, 54])


def test_low_clears_only_when_reading_and_twin_are_back_above_the_clear_level() -> None:
    was = frozenset({"low"})
    assert present("low", 76.0, [60, 65, 72, 78], was)  # reading 78 < clear 80
    assert present("low", 78.0, [60, 70, 80, 86], was)  # twin 78 < 80
    assert not present("low", 84.0, [60, 70, 80, 86], was)


def test_a_compression_low_holds_the_reading_rule() -> None:
    values = [120, 118, 121, 119, 62]  # -57 mg/dL in 5 min: faster than physiology
    assert not present("low", 110.0, values)
    assert not present("urgent_low", 110.0, [120, 118, 121, 119, 50])
    # ... but never takes down an alarm already raised
    assert present("urgent_low", 110.0, [120, 118, 121, 119, 50], frozenset({"urgent_low"}))


def test_predicted_low_is_assessed_on_sparse_readings() -> None:
    """Three readings in 45 min are enough: a third of a real sensor's samples can be
    missing, and a gap must not silence a fall the readings show."""
    rs = [
        Reading("pt-001", "cgm-001", Signal.GLUCOSE, T0 + m * 60.0, v, T0 + m * 60.0 + 5)
        for m, v in ((0, 125.0), (20, 105.0), (40, 88.0))
    ][::-1]
    obs = glucose_conditions(estimate(95.0, rs[0].t), rs, lambda _k: False)
    predicted = next(o for o in obs if o.alarm_type == "predicted_low")
    assert "not assessed" not in predicted.reason
    assert predicted.present  # -0.9 mg/dL/min from 88: below 70 within the horizon


def test_every_feature_declares_its_disease_direction() -> None:
    assert set(DISEASE_DIRECTION) == set(FEATURES)
    assert set(DISEASE_DIRECTION.values()) <= {-1, 0, 1}


def test_out_of_range_towards_decompensation_is_evidence_not_doubt() -> None:
    model = load_model(shipped_dir())
    stats = {s.name: s for s in model.card.feature_stats}
    row = np.array([stats[name].median for name in FEATURES], dtype=float)
    assert model.confidence(row)[0] == "high"

    def moved(names: tuple[str, ...], ranges: float, up: bool = True) -> np.ndarray:
        """The typical row with these features ``ranges`` training ranges beyond it."""
        out = row.copy()
        for name in names:
            s = stats[name]
            width = s.p99 - s.p01
            out[FEATURES.index(name)] = s.p99 + ranges * width if up else s.p01 - ranges * width
        return out

    level, reasons = model.confidence(moved(("rr_vs_norm", "hr_vs_norm", "rr_z", "hr_z"), 0.5))
    assert level == "high"
    assert all("towards decompensation" in r for r in reasons)
    # a scale 20 kg off: beyond by more than the whole range is a glitch, not a body
    glitches = moved(("weight_change_3d", "weight_change_7d", "weight_vs_norm"), 2.0)
    level, reasons = model.confidence(glitches)
    assert level == "low"
    assert all("implausibly far" in r for r in reasons)
    away = moved(("rr_vs_norm", "hr_vs_norm", "rr_z"), 0.5, up=False)
    assert model.confidence(away)[0] == "low"
    unknown = row.copy()
    unknown[[0, 1, 2]] = math.nan
    assert model.confidence(unknown)[0] == "low"


@pytest.mark.parametrize("direction", [1, -1])
def test_a_data_quality_feature_beyond_its_range_is_doubt(direction: int) -> None:
    model = load_model(shipped_dir())
    stats = {s.name: s for s in model.card.feature_stats}
    row = np.array([stats[name].median for name in FEATURES], dtype=float)
    s = stats["weight_days_since"]
    row[FEATURES.index("weight_days_since")] = s.p99 + 10 if direction > 0 else s.p01 - 10
    level, reasons = model.confidence(row)
    assert level == "medium"
    assert "towards decompensation" not in reasons[0]


def test_a_sudden_drop_out_of_a_flat_trend_is_held_but_a_steepening_fall_is_not() -> None:
    # flat, then -22 mg/dL in 5 min (4.4 mg/dL/min): a compression low's start
    assert not present("low", 90.0, [92, 93, 91, 92, 90, 68])
    # a real fall already under way (-2 mg/dL/min), steepening to -3.6: alarmed at once
    assert present("low", 78.0, [120, 110, 100, 90, 86, 68])
    # with too few readings before the drop to know the trend, the reading is believed
    assert present("low", 90.0, [92, 68])


def test_a_suspicion_never_takes_down_a_low_already_raised() -> None:
    """Readings near 66 for half an hour, then one step to 49 out of that flat trend: the
    low stays, and the urgent low is raised (a step is not evidence enough to hold it)."""
    values = [66, 67, 66, 65, 66, 66, 49]
    assert present("low", 63.0, values, frozenset({"low"}))
    assert present("urgent_low", 63.0, values, frozenset({"low"}))


def test_a_steady_steep_fall_out_of_a_flat_level_raises_urgent_low_on_the_first_reading() -> None:
    values = [100, 101, 100, 100, 83, 66, 49]  # -3.4 mg/dL/min from a flat level
    assert present("urgent_low", 75.0, values)
    # a fall faster than physiology still holds it: a compression low's signature
    assert not present("urgent_low", 95.0, [100, 101, 100, 100, 50])
