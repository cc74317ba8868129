"""Invariants of the twin's filters."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from filterpy.kalman import predict

from edge_twin.domain import Reading, Signal
from edge_twin.estimate.models import DEFAULT_MODELS
from edge_twin.estimate.tracker import TwinEstimator
from edge_twin.estimate.view import estimate_at, is_stale, patient_estimates
from edge_twin.store import Store, devices, readings, twin_state
from tests.conftest import T0


def store_readings(
    store: Store, values: list[tuple[float, float]], signal: Signal = Signal.GLUCOSE
) -> None:
    device = "cgm-1" if signal is Signal.GLUCOSE else "wr-1"
    with store.transaction() as conn:
        readings.insert(
            conn, [Reading("pt-1", device, signal, t, v, received_at=t) for t, v in values]
        )


@pytest.fixture
def store(db_path: Path) -> Store:
    s = Store(db_path)
    devices.provision(s, "cgm-1", "pt-1", "cgm", T0)
    devices.provision(s, "wr-1", "pt-1", "wrist", T0)
    return s


def glucose_series(n: int, step_s: float = 300.0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(7)
    return [(T0 + i * step_s, 120 + 30 * math.sin(i / 10) + rng.normal(0, 8)) for i in range(n)]


def test_no_reading_leaves_posterior_equal_to_prior(store: Store) -> None:
    store_readings(store, glucose_series(20))
    TwinEstimator(store).catch_up()
    (rec,) = twin_state.load(store, "pt-1")
    later = rec.t + 25 * 60
    est = estimate_at(rec, later)
    model = DEFAULT_MODELS[Signal.GLUCOSE]
    x, p = predict(np.array(rec.x), np.array(rec.p), F=model.F(25.0), Q=model.Q(25.0))
    assert est.mean == pytest.approx(float(x[0]), abs=1e-9)
    assert est.sd == pytest.approx(math.sqrt(float(p[0, 0])), abs=1e-9)
    assert est.last_measured_at == rec.t  # a prediction is not a measurement


@pytest.mark.parametrize("signal", [Signal.GLUCOSE, Signal.HEART_RATE])
def test_uncertainty_grows_monotonically_through_a_gap(store: Store, signal: Signal) -> None:
    values = (
        glucose_series(12) if signal is Signal.GLUCOSE else [(T0 + 60 * i, 70.0) for i in range(12)]
    )
    store_readings(store, values, signal)
    TwinEstimator(store).catch_up()
    (rec,) = twin_state.load(store, "pt-1")
    sds = [estimate_at(rec, rec.t + minutes * 60).sd for minutes in range(0, 24 * 60, 5)]
    assert all(b > a for a, b in itertools.pairwise(sds))


def test_measurements_shrink_uncertainty_and_track_the_level(store: Store) -> None:
    store_readings(store, [(T0 + 300 * i, 150.0) for i in range(30)])
    TwinEstimator(store).catch_up()
    (est,) = patient_estimates(store, "pt-1", T0 + 300 * 29)
    assert est.mean == pytest.approx(150.0, abs=0.5)
    assert est.sd < DEFAULT_MODELS[Signal.GLUCOSE].r  # better than one sensor reading
    assert est.rate_per_min == pytest.approx(0.0, abs=0.05)
    assert est.provenance.n_measurements == 30
    assert est.provenance.device_ids == ("cgm-1",)
    lo, hi = est.interval95
    assert lo < 150 < hi


def test_restart_resumes_exactly_where_it_stopped(store: Store, db_path: Path) -> None:
    series = glucose_series(40)
    store_readings(store, series[:25])
    TwinEstimator(store).catch_up()
    store_readings(store, series[25:])
    # A "restarted gateway": new estimator objects over the same file.
    resumed = TwinEstimator(Store(db_path))
    assert resumed.cursor == 25
    resumed.catch_up()
    (split,) = twin_state.load(store, "pt-1")

    other = Store(db_path.with_name("other.sqlite"))
    devices.provision(other, "cgm-1", "pt-1", "cgm", T0)
    store_readings(other, series)
    TwinEstimator(other).catch_up()
    (whole,) = twin_state.load(other, "pt-1")
    assert split.x == pytest.approx(whole.x, abs=1e-9)
    assert np.allclose(split.p, whole.p, atol=1e-9)
    assert split.through_reading_id == whole.through_reading_id == 40


def test_late_reading_is_counted_not_applied_yet(store: Store) -> None:
    store_readings(store, [(T0, 100.0), (T0 + 600, 110.0)])
    est = TwinEstimator(store)
    est.catch_up()
    store_readings(store, [(T0 + 300, 300.0)])
    est.catch_up()
    assert est.outcomes["late_not_applied"] == 1
    (rec,) = twin_state.load(store, "pt-1")
    assert rec.n_measurements == 2


def test_stale_policy_uses_the_signal_threshold(store: Store) -> None:
    store_readings(store, [(T0, 100.0)])
    TwinEstimator(store).catch_up()
    (est,) = patient_estimates(store, "pt-1", T0 + 60)
    assert not is_stale(est, T0 + 15 * 60, {"glucose": 900})
    assert is_stale(est, T0 + 15 * 60 + 1, {"glucose": 900})
