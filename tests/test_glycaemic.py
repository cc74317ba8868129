from edge_twin.assess.glycaemic import normal_cdf, probability_below
from edge_twin.domain import Forecast, Provenance, Signal, StateEstimate

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
