"""The dashboard's words and order, rendered from plain data (the page in a browser is
tests/test_dashboard.py)."""

from typing import Any
from zoneinfo import ZoneInfo

from edge_twin.api.dashboard import Display, render
from edge_twin.assess import FEATURE_WORDS, FEATURES

NOW = "2026-12-01T09:00:00+00:00"
PARIS = Display(ZoneInfo("Europe/Paris"))


def signal(name: str, mean: float, measured: str, age_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "signal": name,
        "mean": mean,
        "interval95": [mean - 5, mean + 5],
        "last_measured_at": measured,
        "age_s": age_s,
        "stale": False,
        "forecasts": extra.pop("forecasts", []),
        "provenance": {
            "model": f"{name}-model",
            "model_version": "1",
            "n_measurements": 3,
            "device_ids": ["d-1"],
        },
        **extra,
    }


def patient(pid: str, signals: list[dict[str, Any]], risk: Any = None) -> dict[str, Any]:
    return {"patient_id": pid, "signals": {s["signal"]: s for s in signals}, "risk": risk}


def alarm(pid: str, kind: str, priority: str) -> dict[str, Any]:
    return {
        "alarm_id": 1,
        "patient_id": pid,
        "type": kind,
        "priority": priority,
        "reason": f"{kind} reason",
        "raised_at": "2026-12-01T08:30:00+00:00",
        "state": "active",
    }


def test_patients_are_ordered_by_their_alarms_then_risk() -> None:
    risky = {
        "probability": 0.4,
        "threshold": 0.3,
        "above_threshold": True,
        "confidence": "high",
        "confidence_reasons": [],
        "horizon_days": 14,
        "at": NOW,
        "top_contributions": [{"feature": "weight_change_3d", "value": 1.8, "typical": 0.1}],
        "provenance": {"model": "hf", "version": "1.2.0"},
    }
    page = render(
        "gw",
        NOW,
        [patient("pt-quiet", []), patient("pt-risky", [], risky), patient("pt-low", [])],
        {"pt-low": [alarm("pt-low", "urgent_low", "high")]},
        PARIS,
    )
    order = [page.index(f'data-patient="{p}"') for p in ("pt-low", "pt-risky", "pt-quiet")]
    assert order == sorted(order)
    assert "weight change over 3 days (kg) 1.8 (usually 0.1)" in page  # words, not ids
    assert '<meta name="viewport"' in page


def test_freshness_in_words_local_time_and_plausible_forecasts() -> None:
    page = render(
        "gw",
        NOW,
        [
            patient(
                "pt-1",
                [
                    # A cuff reading at 06:40 UTC: 07:40 in Paris, this morning.
                    signal("systolic", 132, "2026-12-01T06:40:00+00:00", 8400),
                    signal(
                        "steps",
                        3,
                        "2026-12-01T08:59:00+00:00",
                        60,
                        forecasts=[{"horizon_min": 30.0, "mean": -40.0, "interval95": [-90, 10]}],
                    ),
                ],
            )
        ],
        {},
        PARIS,
    )
    assert "today 07:40 (2 h ago)" in page
    assert "live" not in page.split("<section", 1)[1]  # no reading is "live"
    assert "-40" not in page  # steps cannot be negative
    assert "0 [0&ndash;10]" in page
    assert "steps-model" not in page.split('title="')[0]  # the model is in the tooltip


def test_a_risk_on_mostly_unknown_inputs_says_so() -> None:
    guess = {
        "probability": 0.039,
        "threshold": 0.3,
        "above_threshold": False,
        "confidence": "low",
        "confidence_reasons": ["7 of 22 features unknown"],
        "horizon_days": 14,
        "at": NOW,
        "top_contributions": [],
        "provenance": {"model": "hf", "version": "1.2.0"},
    }
    page = render("gw", NOW, [patient("pt-1", [], guess)], {}, PARIS)
    assert "insufficient data" in page
    assert "3.9%" not in page
    assert "4%" not in page


def test_glucose_in_mmol_per_litre_when_the_deployment_says_so() -> None:
    page = render(
        "gw",
        NOW,
        [patient("pt-1", [signal("glucose", 126.0, NOW, 30)])],
        {},
        Display(ZoneInfo("UTC"), glucose_mmol=True),
    )
    assert "7.0 mmol/L" in page


def test_every_feature_has_words() -> None:
    assert set(FEATURE_WORDS) == set(FEATURES)


def test_the_patient_page_trend_arrow_follows_the_cgm_convention() -> None:
    from edge_twin.api.patient_view import arrow

    assert [arrow(r) for r in (3.5, 2.5, 1.5, 0.0, -1.5, -2.5, -4.0)] == [
        "\u21c8",
        "\u2191",
        "\u2197",
        "\u2192",
        "\u2198",
        "\u2193",
        "\u21ca",
    ]
    assert arrow(None) == ""


def test_the_care_team_is_told_when_data_stop_arriving() -> None:
    problem = "no reading has arrived for 45 min"
    page = render("gw", NOW, [patient("pt-1", [])], {}, PARIS, [problem])
    assert page.index("Data may not be current") < page.index('data-patient="pt-1"')
    assert problem in page
    assert "Data may not be current" not in render("gw", NOW, [], {}, PARIS, [])
