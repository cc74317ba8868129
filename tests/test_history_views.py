"""What the patient's page is drawn from: the glucose summary of a period (consensus
definitions), the twin's estimate rebuilt over a window, readings in bins, the weight
change, and the plots' time axis in local time."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge_twin.api.patient_detail import weight_change
from edge_twin.api.plots import Chart, nice_step, value_range
from edge_twin.api.views import daily_steps, patient_timeline
from edge_twin.assess import summarize_glucose
from edge_twin.assess.glucose_summary import local_hours
from edge_twin.config import load_config
from edge_twin.domain import Reading, Signal
from edge_twin.estimate import TwinEstimator, trace
from edge_twin.store import Store, devices, readings, twin_state
from tests.conftest import T0

PARIS = ZoneInfo("Europe/Paris")
DAY = 86400.0


def test_time_in_ranges_gmi_and_cv_follow_the_consensus() -> None:
    start = 1_780_000_000.0
    # 14 days of 5-min readings: 10% at 50, 10% at 60, 60% at 120, 10% at 200, 10% at 300
    n = int(14 * DAY / 300)
    t = start + 300.0 * np.arange(n)
    pattern = np.array([50.0, 60.0, 120, 120, 120, 120, 120, 120, 200, 300])
    v = np.resize(pattern, n)
    g = summarize_glucose(t, v, start, start + 14 * DAY, ZoneInfo("UTC"))
    assert g is not None
    assert g.bands["very_low"] == pytest.approx(0.1, abs=1e-3)
    assert g.bands["low"] == pytest.approx(0.1, abs=1e-3)
    assert g.bands["in_range"] == pytest.approx(0.6, abs=1e-3)
    assert g.bands["high"] == pytest.approx(0.1, abs=1e-3)
    assert g.bands["very_high"] == pytest.approx(0.1, abs=1e-3)
    assert sum(g.bands.values()) == pytest.approx(1.0)
    mean = float(v.mean())
    assert g.gmi_pct == pytest.approx(3.31 + 0.02392 * mean)  # Bergenstal 2018
    assert g.cv == pytest.approx(float(v.std(ddof=1)) / mean)
    assert g.active == pytest.approx(1.0, abs=1e-3)
    assert g.sufficient


def test_band_edges_and_insufficient_wear() -> None:
    start = 1_780_000_000.0
    t = start + 300.0 * np.arange(8)
    v = np.array([53.0, 54.0, 69.0, 70.0, 180.0, 181.0, 250.0, 251.0])
    g = summarize_glucose(t, v, start, start + 7 * DAY, ZoneInfo("UTC"))
    assert g is not None
    assert g.bands == {
        "very_low": 1 / 8,
        "low": 2 / 8,
        "in_range": 2 / 8,
        "high": 2 / 8,
        "very_high": 1 / 8,
    }
    assert not g.sufficient  # 40 min of 7 days
    assert g.active < 0.01
    assert summarize_glucose(t[:1], v[:1], start, start + DAY, ZoneInfo("UTC")) is None


def test_the_daily_profile_is_in_local_hours_across_a_dst_change() -> None:
    # 2026-10-25: Paris leaves summer time at 03:00 local (01:00 UTC).
    at = [datetime(2026, 10, 25, 0, m, tzinfo=UTC).timestamp() for m in (50, 59)] + [
        datetime(2026, 10, 25, 1, 10, tzinfo=UTC).timestamp()
    ]
    assert list(local_hours(np.array(at), PARIS)) == [2, 2, 2]  # 02:50, 02:59 CEST, 02:10 CET
    # St John's (-02:30 in summer): its change falls on a half hour of UTC.
    st_johns = ZoneInfo("America/St_Johns")
    change = datetime(2026, 11, 1, 4, 30, tzinfo=UTC).timestamp()  # 02:00 NDT -> 01:00 NST
    hours = local_hours(np.array([change - 600, change + 600]), st_johns)
    assert list(hours) == [1, 1]  # 01:50 NDT, then 01:10 NST


def test_the_rebuilt_estimate_ends_where_the_live_twin_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with Store(tmp_path / "db.sqlite") as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        n = int(2.5 * DAY / 300)  # across two midnights: the rebuild starts from a snapshot
        values = 120 + 30 * np.sin(np.arange(n) / 40) + rng.normal(0, 4, n)
        with store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-001", "cgm-001", Signal.GLUCOSE, T0 + 300 * k, float(x), T0)
                    for k, x in enumerate(values)
                ],
            )
        TwinEstimator(store, now=lambda: T0).catch_up()
        (live,) = twin_state.load(store, "pt-001")
        end = T0 + 300 * n
        points = trace(store, "pt-001", Signal.GLUCOSE, ["cgm-001"], end - DAY, end)
        full = trace(store, "pt-001", Signal.GLUCOSE, ["cgm-001"], T0, end)
    assert len(points) == 288
    assert points[-1].t == live.t
    # The live filter predicts across a midnight in one step, the rebuilt one in two
    # (from the snapshot): equal but for the model's discretisation of Q.
    assert points[-1].mean == pytest.approx(live.x[0], abs=1e-3)
    assert points[-1].sd == pytest.approx(live.p[0][0] ** 0.5, abs=1e-3)
    same = {p.t: p.mean for p in full}
    assert all(same[p.t] == pytest.approx(p.mean, abs=1e-3) for p in points)


def test_readings_in_bins_and_steps_per_local_day(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        devices.provision(store, "wr-001", "pt-001", "wrist", T0)
        # 2026-10-23 00:00 Paris (CEST) for 4 days: summer time ends on the 25th.
        start = datetime(2026, 10, 23, tzinfo=PARIS).timestamp()
        with store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-001", "wr-001", Signal.STEPS, start + 60 * k, 10.0, T0)
                    for k in range(int(4 * DAY / 60))
                ],
            )
        hourly = readings.binned(
            store, "pt-001", ["wr-001"], Signal.STEPS, start, start + DAY, 3600
        )
        days = daily_steps(store, "pt-001", ["wr-001"], start - 3600, start + 4 * DAY, PARIS)
        nobody = readings.binned(
            store, "pt-002", ["wr-001"], Signal.STEPS, start, start + DAY, 3600
        )
    assert [(m * n, lo, hi) for _, m, lo, hi, n in hourly] == [(600.0, 10.0, 10.0)] * 24
    assert nobody == []  # the device's readings are its patient's only
    # whole local days from the first midnight: the 25th has 25 hours; the last is so far
    assert [round((e - m) / 3600) for m, e, _ in days] == [24, 24, 25, 23]
    assert [total for *_, total in days] == [14400.0, 14400.0, 15000.0, 13800.0]


def test_weight_change_over_days() -> None:
    w = [(T0 + k * DAY, 80.0 + 0.2 * k) for k in range(8)]
    assert weight_change(w, 3) == pytest.approx(0.6)
    assert weight_change(w, 7) == pytest.approx(1.4)
    assert weight_change(w[-2:], 3) is None  # nothing three days before
    assert weight_change([], 3) is None


def test_time_ticks_fall_on_local_hours_and_midnights() -> None:
    start = datetime(2026, 12, 1, 6, 10, tzinfo=PARIS).timestamp()
    chart = Chart("x", start, start + DAY, 0, 1, PARIS)
    svg = chart.svg("x")
    assert ">09:00<" in svg  # three-hourly
    assert ">2 Dec<" in svg  # a date at midnight
    assert svg.count(">06:00<") == 1  # the next day's: none before the start
    weeks = Chart("x", start, start + 14 * DAY, 0, 1, PARIS).svg("x")
    assert ">2 Dec<" in weeks  # every second day, on even days of the era
    assert ">3 Dec<" not in weeks
    assert ":00<" not in weeks  # days, not hours
    kolkata = ZoneInfo("Asia/Kolkata")  # +05:30: its whole hours are UTC half hours
    india = Chart("x", start, start + DAY, 0, 1, kolkata).svg("x")
    assert india.count(":00<") >= 6


def test_plots_clip_break_at_gaps_and_round_their_axes() -> None:
    chart = Chart("x", 0.0, 1000.0, 0.0, 100.0, PARIS)
    assert chart.y(-50) == chart.y(0)  # never drawn outside the frame
    chart.line([(0, 1), (10, 2), (500, 3), (510, 4)], "series", gap_s=100)
    assert chart.svg("x").count("<polyline") == 2  # no line across the gap
    assert nice_step(97) == 20
    assert value_range([3.2, 97.5]) == (0.0, 100.0)


def test_a_patients_readings_newest_first_across_devices_and_signals(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        devices.provision(store, "cgm-old", "pt-001", "cgm", T0)
        devices.provision(store, "sc-001", "pt-001", "scale", T0)
        devices.provision(store, "cgm-002", "pt-002", "cgm", T0)
        with store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-001", "cgm-old", Signal.GLUCOSE, T0 + 1, 100.0, T0),
                    Reading("pt-001", "sc-001", Signal.WEIGHT, T0 + 3, 80.0, T0),
                    Reading("pt-001", "cgm-old", Signal.GLUCOSE, T0 + 5, 101.0, T0),
                    Reading("pt-002", "cgm-002", Signal.GLUCOSE, T0 + 4, 90.0, T0),
                ],
            )
        devices.unprovision(store, "cgm-old")  # a replaced sensor: its readings stay theirs
        newest = readings.for_patient(store, "pt-001", limit=2)
        everything = readings.for_patient(store, "pt-001")
        glucose = readings.for_patient(store, "pt-001", Signal.GLUCOSE)
    assert [r.t for r in newest] == [T0 + 5, T0 + 3]
    assert [r.t for r in everything] == [T0 + 5, T0 + 3, T0 + 1]
    assert [r.value for r in glucose] == [101.0, 100.0]


def test_a_moved_device_shows_each_patient_only_their_own_readings(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        devices.provision(store, "sc-001", "pt-001", "scale", T0)
        with store.transaction() as conn:
            readings.insert(conn, [Reading("pt-001", "sc-001", Signal.WEIGHT, T0, 91.0, T0)])
        devices.unprovision(store, "sc-001")
        devices.provision(store, "sc-001", "pt-002", "scale", T0 + DAY)
        with store.transaction() as conn:
            readings.insert(
                conn, [Reading("pt-002", "sc-001", Signal.WEIGHT, T0 + DAY, 55.0, T0 + DAY)]
            )
        config = load_config(env={})
        now = T0 + 2 * DAY
        first = patient_timeline(store, "pt-001", now, config, 7, 24, PARIS)
        second = patient_timeline(store, "pt-002", now, config, 7, 24, PARIS)
    assert [w for _, w in first.weight] == [91.0]
    assert [w for _, w in second.weight] == [55.0]
