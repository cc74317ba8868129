"""The offline (training) path gives the live filters' numbers."""

from pathlib import Path

import numpy as np
import pytest

from edge_twin.domain import Reading, Signal
from edge_twin.estimate import offline
from edge_twin.estimate.models import DEFAULT_MODELS
from edge_twin.estimate.tracker import SignalFilter, TwinEstimator, state_from_row
from edge_twin.store import Store, devices, readings, twin_state
from firmware_sim.home import Home
from firmware_sim.physiology.profile import CohortMix

START = 1_767_225_600.0  # a UTC midnight


@pytest.fixture(scope="module")
def patient_series() -> dict[Signal, list[Reading]]:
    home = Home(1, START + 7 * 3600, 9 * 24, seed=515, mix=CohortMix(heart_failure=1.0))
    p = home.patient(0)
    out: dict[Signal, list[Reading]] = {}
    for d in p.devices:
        for u in p.uploads[d.device_id]:
            for name, _, t, v, _ in u.records:
                out.setdefault(Signal(name), []).append(
                    Reading(p.patient_id, d.device_id, Signal(name), t, v, t)
                )
    for rs in out.values():
        rs.sort(key=lambda r: r.t)
    return out


@pytest.mark.parametrize(
    "signal", [Signal.HEART_RATE, Signal.RESP_RATE, Signal.SPO2, Signal.WEIGHT, Signal.SYSTOLIC]
)
def test_offline_run_equals_the_live_filter(
    patient_series: dict[Signal, list[Reading]], signal: Signal
) -> None:
    rs = patient_series[signal]
    # a spike the gate must reject, and a step the gate must restart on
    rs = list(rs)
    i = len(rs) // 3
    spike = rs[i]
    rs[i] = Reading(spike.patient_id, spike.device_id, signal, spike.t, spike.value * 1.6, spike.t)
    model = DEFAULT_MODELS[signal]
    live = SignalFilter.start(model, rs[0])
    states = [(live.x.copy(), live.P.copy(), live.n_measurements)]
    for r in rs[1:]:
        live.step(r)
        states.append((live.x.copy(), live.P.copy(), live.n_measurements))
    traj = offline.run(model, np.array([r.t for r in rs]), np.array([r.value for r in rs]))
    for k, (x, p, n) in enumerate(states):
        np.testing.assert_allclose(traj.x[k], x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(traj.p[k], p, rtol=1e-9, atol=1e-9)
        assert traj.n_measurements[k] == n
    assert live.n_gated >= 1
    # the live filter's midnight snapshots are the trajectory's states before midnight
    assert len(live.day_starts) >= 2
    for snap in live.day_starts:
        state = traj.state_before(snap.t)
        assert state is not None
        np.testing.assert_allclose(state.x, snap.x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(state.P, snap.P, rtol=1e-9, atol=1e-9)
        assert state.n_measurements == snap.n_measurements


def test_day_starts_are_stored_and_survive_reordering(
    tmp_path: Path, patient_series: dict[Signal, list[Reading]]
) -> None:
    hr = [r for r in patient_series[Signal.HEART_RATE] if r.t < START + 2 * 86400 + 7200]
    store = Store(tmp_path / "twin.sqlite")
    for device in {r.device_id for r in hr}:
        devices.provision(store, device, "pt-001", "wrist" if device[:2] == "wr" else "bp_cuff", 0)
    # the last reading before the second midnight arrives after everything else
    late = max((r for r in hr if r.t < START + 2 * 86400), key=lambda r: r.t)
    est = TwinEstimator(store)
    with store.transaction() as conn:
        readings.insert(conn, [r for r in hr if r is not late])
    est.catch_up()
    with store.transaction() as conn:
        readings.insert(conn, [late])
    est.catch_up()
    assert est.outcomes["reprocessed"] == 1
    model = DEFAULT_MODELS[Signal.HEART_RATE]
    rows = twin_state.load_day_starts(
        store, "pt-001", Signal.HEART_RATE, (model.name, model.version), 0.0
    )
    traj = offline.run(model, np.array([r.t for r in hr]), np.array([r.value for r in hr]))
    assert [row.t for row in rows] == [START + 86400, START + 2 * 86400]
    for row in rows:
        state = traj.state_before(row.t)
        assert state is not None
        np.testing.assert_allclose(state_from_row(row).x, state.x, rtol=1e-9)
        np.testing.assert_allclose(state_from_row(row).P, state.P, rtol=1e-9)
        assert row.n_measurements == state.n_measurements


def test_the_offline_path_refuses_models_it_does_not_cover() -> None:
    with pytest.raises(ValueError, match="level and baseline"):
        offline.run(DEFAULT_MODELS[Signal.GLUCOSE], np.array([0.0]), np.array([100.0]))
