"""Invariants of the twin's filters."""

import itertools
import math
from collections import deque
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from filterpy.kalman import predict

from edge_twin.domain import Reading, Signal
from edge_twin.estimate.models import DEFAULT_MODELS
from edge_twin.estimate.tracker import SignalFilter, TwinEstimator
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
    store_readings(store, [(T0 + 60 * i, 72.0) for i in range(30)], Signal.HEART_RATE)
    TwinEstimator(store).catch_up()
    (est,) = patient_estimates(store, "pt-1", T0 + 60 * 29)
    assert est.mean == pytest.approx(72.0, abs=0.5)
    assert est.sd < DEFAULT_MODELS[Signal.HEART_RATE].r  # better than one (white-noise) reading
    assert est.provenance.n_measurements == 30
    assert est.provenance.device_ids == ("wr-1",)
    lo, hi = est.interval95
    assert lo < 72 < hi


def test_correlated_sensor_error_is_not_averaged_away(store: Store) -> None:
    """CGM error is AR(1): thirty readings five minutes apart share most of it, so the
    level's uncertainty stays near the sensor's (it is not divided by sqrt(30))."""
    store_readings(store, [(T0 + 300 * i, 150.0) for i in range(30)])
    TwinEstimator(store).catch_up()
    (est,) = patient_estimates(store, "pt-1", T0 + 300 * 29)
    model = DEFAULT_MODELS[Signal.GLUCOSE]
    single = math.sqrt(model.r**2 + model.sensor_sd**2)
    assert est.mean == pytest.approx(150.0, abs=0.5)
    assert single / 2 < est.sd < single
    assert est.rate_per_min == pytest.approx(0.0, abs=0.05)


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


def test_reordered_input_gives_the_same_state_as_ordered_input(db_path: Path) -> None:
    """Heart rate from two devices, delivered out of order (and in batches) within the
    window, ends exactly where the in-order delivery ends."""
    rng = np.random.default_rng(3)
    wrist = [
        ("wr-1", T0 + 60 * i, 70 + 5 * math.sin(i / 20) + rng.normal(0, 2)) for i in range(240)
    ]
    cuff = [("bp-1", T0 + 3600 * h + 30, 74.0) for h in range(4)]
    ordered = sorted(wrist + cuff, key=lambda r: r[1])
    shuffled = list(ordered)
    for i in range(0, len(shuffled) - 10, 7):  # local shuffles, up to ~10 min late
        j = i + int(rng.integers(1, 10))
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]

    def final_state(rows: list[tuple[str, float, float]], name: str) -> twin_state.FilterRecord:
        store = Store(db_path.with_name(f"{name}.sqlite"))
        devices.provision(store, "wr-1", "pt-1", "wrist", T0)
        devices.provision(store, "bp-1", "pt-1", "bp_cuff", T0)
        est = TwinEstimator(store)
        for start in range(0, len(rows), 25):  # the gateway commits and estimates in batches
            with store.transaction() as conn:
                readings.insert(
                    conn,
                    [
                        Reading("pt-1", d, Signal.HEART_RATE, t, v, t)
                        for d, t, v in rows[start : start + 25]
                    ],
                )
            est.catch_up()
        if name == "shuffled":
            assert est.outcomes["reprocessed"] > 10
            assert est.outcomes["late_not_applied"] == 0
        (rec,) = twin_state.load(store, "pt-1")
        return rec

    a, b = final_state(ordered, "ordered"), final_state(shuffled, "shuffled")
    assert b.x == pytest.approx(a.x, abs=1e-9)
    assert np.allclose(b.p, a.p, atol=1e-9)
    assert (b.t, b.n_measurements, b.n_gated) == (a.t, a.n_measurements, a.n_gated)


def test_a_reading_later_than_the_window_is_counted_not_applied(store: Store) -> None:
    store_readings(store, [(T0, 100.0), (T0 + 8 * 3600, 110.0)])
    est = TwinEstimator(store)
    est.catch_up()
    store_readings(store, [(T0 + 3600, 300.0)])  # 7 hours late: beyond the 6-hour window
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


def test_an_implausible_jump_is_gated_not_followed(store: Store) -> None:
    """250 -> 40 mg/dL within 5 minutes is not physiology (a compression low, a bad
    sensor): the reading is rejected and recorded, and the estimate stays put."""
    steady = [(T0 + 300 * i, 250.0) for i in range(24)]
    jump = [(T0 + 300 * 24, 40.0)]
    after = [(T0 + 300 * (25 + i), 251.0) for i in range(6)]
    store_readings(store, steady + jump)
    est = TwinEstimator(store)
    est.catch_up()
    (during,) = patient_estimates(store, "pt-1", jump[0][0])
    assert during.mean == pytest.approx(250.0, abs=2.0)
    assert during.provenance.n_rejected == 1
    assert during.last_measured_at == steady[-1][0]  # a rejected reading is no evidence
    store_readings(store, after)
    est.catch_up()
    (back,) = patient_estimates(store, "pt-1", after[-1][0])
    assert back.mean == pytest.approx(251.0, abs=2.0)
    assert est.outcomes["gated"] == 1


def test_a_real_sustained_drop_is_believed_within_30_minutes(store: Store) -> None:
    """The gate never holds a persisting change for longer than GATE_PERSIST_S: a real low
    cannot be gated away."""
    steady = [(T0 + 300 * i, 250.0) for i in range(24)]
    low = [(T0 + 300 * (24 + i), 40.0) for i in range(10)]  # 50 minutes at 40 mg/dL
    store_readings(store, steady + low)
    TwinEstimator(store).catch_up()
    (est,) = patient_estimates(store, "pt-1", low[-1][0])
    lo, hi = est.interval95
    assert lo <= 40.0 <= hi  # the twin believes the low ...
    assert est.mean < 60.0  # ... and says so, however long the patient sat at 250 before
    assert 1 <= est.provenance.n_rejected <= 6  # at most the first 30 minutes


def test_a_motion_artefact_in_heart_rate_is_gated(store: Store) -> None:
    values = [(T0 + 60 * i, 72.0 + (i % 3 - 1)) for i in range(60)]
    values[40] = (values[40][0], 125.0)  # a 53 /min spike for one minute
    store_readings(store, values, Signal.HEART_RATE)
    TwinEstimator(store).catch_up()
    (est,) = patient_estimates(store, "pt-1", values[-1][0])
    assert est.provenance.n_rejected == 1
    assert est.mean == pytest.approx(72.0, abs=2.0)


def test_a_filter_copy_carries_every_field() -> None:
    # SignalFilter._copy lists its fields by hand (dataclasses.replace was too slow): a
    # field added later and forgotten there would be lost at every checkpoint.
    model = DEFAULT_MODELS[Signal.GLUCOSE]
    f = SignalFilter.start(model, Reading("pt-1", "cgm-1", Signal.GLUCOSE, T0, 120.0, T0, id=7))
    f.n_gated, f.gated_since, f.through_reading_id = 2, T0 - 60, 7
    copy = f._copy(deque())
    for spec in fields(SignalFilter):
        mine, theirs = getattr(copy, spec.name), getattr(f, spec.name)
        if spec.name in ("x", "P"):
            assert np.array_equal(mine, theirs)
        elif spec.name not in ("history", "day_starts"):
            assert mine == theirs, spec.name
    assert copy.device_ids is not f.device_ids
