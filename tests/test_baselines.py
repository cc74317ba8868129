"""The comparison baselines and the intervals the benches report: small cases whose answer
is known."""

import math

import pytest

from models.glucose_baselines import line_alarms, threshold_alarms
from models.stats import bootstrap_median, detection, poisson_rate, wilson

T0 = 1_790_000_000.0


def live(values: list[float], delay: float = 5.0) -> list[tuple[float, float, float]]:
    return [(T0 + i * 300.0, v, T0 + i * 300.0 + delay) for i, v in enumerate(values)]


def test_the_threshold_raises_once_per_episode_on_arrival() -> None:
    arrivals = live([90, 80, 69, 65, 72, 68])
    assert threshold_alarms(arrivals) == [T0 + 600 + 5, T0 + 1500 + 5]


def test_backfilled_readings_raise_nothing_but_duplicates_and_late_ones_are_handled() -> None:
    backfilled = live([90, 80, 69, 65], delay=3600.0)
    assert threshold_alarms(backfilled) == []
    # a duplicate and a late reading (older than the newest) are not new evaluations
    arrivals = [*live([90, 80]), (T0, 90.0, T0 + 700.0), (T0 + 600.0, 60.0, T0 + 605.0)]
    assert threshold_alarms(arrivals) == [T0 + 605.0]


def test_the_line_projects_a_steady_fall_ahead() -> None:
    falling = live([120, 112, 104, 96, 88])  # -1.6 mg/dL/min, 88 now: 70 in ~11 min
    assert line_alarms(falling, ahead_min=15.0) == [T0 + 1200 + 5]
    assert line_alarms(falling, ahead_min=5.0) == []


def test_intervals_match_known_values() -> None:
    lo, hi = wilson(85, 100)
    assert lo == pytest.approx(0.767, abs=0.002)
    assert hi == pytest.approx(0.907, abs=0.002)
    lo, hi = poisson_rate(10, 10.0)
    assert lo == pytest.approx(0.4795, abs=0.001)
    assert hi == pytest.approx(1.8390, abs=0.001)
    assert poisson_rate(0, 5.0)[0] == 0.0
    assert all(math.isnan(x) for x in wilson(0, 0))
    lo, hi = bootstrap_median([10.0] * 20)
    assert lo == hi == 10.0
    figures = detection("x_", 17, 20, 3, 6.0, [5.0, 7.0, 9.0], "false_per_day", "lead_min")
    assert figures["x_sensitivity"] == 0.85
    assert figures["x_false_per_day"] == 0.5
    assert figures["x_lead_min"] == 7.0
    assert set(figures) == {
        "x_sensitivity",
        "x_sensitivity_ci95",
        "x_false_per_day",
        "x_false_per_day_ci95",
        "x_lead_min",
        "x_lead_min_ci95",
    }
