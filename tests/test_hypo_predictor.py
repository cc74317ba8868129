"""The predicted-low model: the shipped file loads and agrees with the alarm defaults; its
probability rises on a fall and stays low when steady; it does not apply without enough
readings or below the threshold; malformed files are refused; training makes a file the
gateway loads."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_twin.alert.catalog import AlarmSettings
from edge_twin.alert.conditions import glucose
from edge_twin.alert.engine import AlarmEngine
from edge_twin.assess import hypo_predictor
from edge_twin.assess.hypo_predictor import FEATURES, features, fit_line
from edge_twin.domain import Provenance, Signal, StateEstimate
from edge_twin.errors import ModelError
from edge_twin.store import Store, alarms
from models.hypo import train

STEP = 300.0


def times(n: int) -> list[float]:
    return [i * STEP for i in range(n)]


def test_the_shipped_predictor_loads_and_sets_the_default_alarm_level() -> None:
    shipped = hypo_predictor.shipped()
    assert shipped.horizon_min == 45.0
    assert shipped.card["budget_met"] is True
    assert AlarmSettings().predicted_low_probability == shipped.alarm_probability


def test_a_steady_glucose_is_quiet_and_a_fall_alarms() -> None:
    p = hypo_predictor.shipped()
    steady = [118.0, 122.0, 119.0, 121.0, 120.0, 118.0, 121.0]
    quiet = features(120.0, 0.0, times(7), steady)
    assert quiet is not None
    assert p.probability(quiet) < 0.05
    falling = [150.0 - 15.0 * i for i in range(7)]  # -3 mg/dL/min, now 60 ... too late
    assert features(60.0, -3.0, times(7), falling) is None  # already low: the low alarms speak
    early = falling[:5]  # now 90 mg/dL and falling 3 mg/dL/min
    inputs = features(95.0, -1.0, times(5), early)
    assert inputs is not None
    assert inputs["slope_20"] == pytest.approx(-3.0)
    assert p.probability(inputs) > p.alarm_probability


def test_it_needs_three_readings_in_twenty_minutes() -> None:
    assert features(100.0, -1.0, [0.0, STEP], [110.0, 100.0]) is None
    assert fit_line([0.0, 1500.0, 1800.0], [1.0, 2.0, 3.0], 20.0) is None


def test_the_line_fit_is_least_squares() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(3, 9))
        t = np.sort(rng.choice(np.arange(0.0, 3000.0, 60.0), n, replace=False))
        v = rng.normal(120, 20, n)
        fit = fit_line(t.tolist(), v.tolist(), 60.0)
        x = (t - t[-1]) / 60.0
        design = np.vstack([np.ones_like(x), x]).T
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        residuals = v - design @ coef
        assert fit is not None
        assert (fit.level, fit.slope) == pytest.approx((coef[0], coef[1]))
        assert fit.residual_sd == pytest.approx(math.sqrt(residuals @ residuals / max(1, n - 2)))


def test_another_low_threshold_shifts_the_levels() -> None:
    p = hypo_predictor.shipped()
    values = [140.0, 132.0, 125.0, 119.0, 110.0]
    at_70 = features(110.0, -1.5, times(5), values)
    at_80 = features(120.0, -1.5, times(5), [v + 10 for v in values], low_mgdl=80.0)
    assert at_70 is not None
    assert at_80 is not None
    assert p.probability(at_80) == pytest.approx(p.probability(at_70))


def test_malformed_predictors_are_refused(tmp_path: Path) -> None:
    doc = hypo_predictor.shipped().to_json()
    for change in (
        {"features": list(FEATURES[:-1])},
        {"scale": [0.0] * len(FEATURES)},
        {"coef": [1.0]},
        {"intercept": "x"},
    ):
        path = tmp_path / "hp.json"
        path.write_text(json.dumps({**doc, **change}))
        with pytest.raises(ModelError):
            hypo_predictor.load(path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ModelError, match="cannot read"):
        hypo_predictor.load(tmp_path / "broken.json")


def test_a_retired_stored_setting_is_ignored(db_path: Path) -> None:
    with Store(db_path) as store:
        with store.transaction() as conn:
            alarms.set_settings(
                conn, "pt-1", {"predicted_low_horizon_min": 30.0, "low_mgdl": 75.0}, 0.0, "old"
            )
        engine = AlarmEngine(store, lambda: 0.0)
        assert engine.settings("pt-1").low_mgdl == 75.0
        assert engine.set_settings("pt-1", {"high_mgdl": 260.0}, "nurse", 1.0).high_mgdl == 260.0
        assert "predicted_low_horizon_min" not in alarms.settings(store.conn, "pt-1")


def test_training_makes_a_predictor_the_gateway_loads(tmp_path: Path) -> None:
    out = tmp_path / "hypo_predictor.json"
    trained = train(out, seeds=(11,), patients=4)
    loaded = hypo_predictor.load(out)
    assert loaded == trained
    assert 0.05 <= loaded.alarm_probability <= 0.5
    assert loaded.card["training"]["seeds"] == [11]
    assert all(math.isfinite(c) for c in loaded.coef)


def test_a_broken_predictor_does_not_silence_the_low_alarms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> hypo_predictor.HypoPredictor:
        raise ModelError("cannot read the hypo predictor: damaged")

    monkeypatch.setattr(hypo_predictor, "shipped", broken)
    estimate = StateEstimate(
        "pt-1", Signal.GLUCOSE, 600.0, 50.0, 3.0, -1.0, 0.3, 600.0, Provenance("m", "1", (), 1, 1)
    )
    s = AlarmSettings()
    low = hypo_predictor.predict_low(estimate, [], s.low_mgdl)
    assert low.probability is None
    out = {o.alarm_type: o for o in glucose(estimate, [], low, s, lambda _: False, True)}
    assert out["urgent_low"].present
    assert not out["predicted_low"].present
    assert "unavailable: cannot read the hypo predictor" in out["predicted_low"].reason
