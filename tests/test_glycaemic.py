from pathlib import Path

from edge_twin.alert import AlarmEngine
from edge_twin.api import patient_state
from edge_twin.assess.glycaemic import normal_cdf, probability_below
from edge_twin.config import load_config
from edge_twin.domain import Forecast, Provenance, Reading, Signal, StateEstimate
from edge_twin.estimate import TwinEstimator
from edge_twin.store import Store, devices, readings
from tests.conftest import T0

PROV = Provenance("m", "1", ("cgm-1",), 1, 1)


def falling(mean: float = 110.0, rate: float = -1.5) -> StateEstimate:
    forecasts = tuple(Forecast(m * 60.0, mean + rate * m, 8.0 + 0.3 * m) for m in range(5, 65, 5))
    return StateEstimate("pt", Signal.GLUCOSE, 0.0, mean, 8.0, rate, 0.2, 0.0, PROV, forecasts)


def test_single_step_is_exact() -> None:
    est = falling()
    p = probability_below(est, 70.0, 0.0).probability
    assert abs(p - normal_cdf((70.0 - 110.0) / 8.0)) < 1e-12


def test_monotone_in_horizon_and_threshold() -> None:
    est = falling()
    by_horizon = [probability_below(est, 70.0, h * 60).probability for h in (0, 10, 20, 30, 60)]
    assert by_horizon == sorted(by_horizon)
    assert by_horizon[-1] > 0.5  # 110 - 1.5*60 = 20: very likely below 70 within the hour
    assert (
        probability_below(est, 55.0, 1800).probability
        < probability_below(est, 70.0, 1800).probability
    )


def test_rising_glucose_has_negligible_low_risk() -> None:
    assert probability_below(falling(rate=+1.0), 70.0, 1800).probability < 1e-4


def test_a_patients_state_carries_the_risks_at_their_own_thresholds(db_path: Path) -> None:
    cfg = load_config(env={})
    with Store(db_path) as store:
        devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
        with store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-1", "cgm-1", Signal.GLUCOSE, T0 + 300 * i, v, T0 + 300 * i, i)
                    for i, v in enumerate([120, 112, 104, 96, 90])
                ],
            )
        TwinEstimator(store).catch_up()
        changes: dict[str, object] = {"low_mgdl": 75.0, "low_clear_mgdl": 85.0}
        AlarmEngine(store, lambda: T0).set_settings("pt-1", changes, "nurse", T0)
        state = patient_state(store, "pt-1", T0 + 1500, cfg)
    risks = {r["kind"]: r for r in state["signals"]["glucose"]["risks"]}
    assert (risks["low"]["threshold"], risks["urgent_low"]["threshold"]) == (75.0, 55.0)
    assert risks["low"]["event"] == "glucose below 75 mg/dL within 30 min"
    assert risks["low"]["probability"] > risks["urgent_low"]["probability"]
