"""The twin keeps score of itself: forecasts logged, scored against the readings that came,
a technical alarm when a patient's readings leave the intervals far too often, and
``edge-twin export`` for anyone to score the gateway with their own tools."""

import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_twin import export as export_module
from edge_twin.api.app import create_app
from edge_twin.api.server import ApiServer
from edge_twin.clock import ManualClock, to_iso
from edge_twin.config import Config
from edge_twin.domain import Signal
from edge_twin.estimate import scorekeeper
from edge_twin.estimate.scorekeeper import issue_every_s
from edge_twin.export import export
from edge_twin.ingest.writer import RawMessage
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, alarms, devices, forecasts
from firmware_sim import wire
from tests.conftest import T0, api_user
from tests.test_cli import cli

STEP = 300.0
DAY = 86400.0


@contextmanager
def cgm_pipeline(cfg: Config) -> Iterator[tuple[Pipeline, ManualClock]]:
    with Store(cfg.store.path, "NORMAL") as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0 - 3600)
        clock = ManualClock(T0)
        yield Pipeline(store, cfg, clock), clock


def feed(pipeline: Pipeline, clock: ManualClock, values: list[float]) -> None:
    """One CGM reading every 5 min from T0, each arriving 5 s after it was taken."""
    topic = wire.readings_topic("cgm-001")
    for i, value in enumerate(values):
        t = T0 + i * STEP
        clock.set(t + 5.0)
        payload = wire.senml_pack("cgm-001", [("glucose", "mg/dL", t, value, i + 1)])
        pipeline.after_commit(pipeline.writer.commit([RawMessage(topic, payload, t + 5.0)]))
        pipeline.on_idle()


def plausible_day(rng: np.random.Generator) -> list[float]:
    """A day of glucose that moves as the model expects: meals as slow waves, sensor error
    correlated in time, a little white noise."""
    n = int(DAY / STEP)
    minutes = np.arange(n) * 5.0
    level = 130 + 35 * np.sin(2 * np.pi * minutes / 360.0)
    err = np.zeros(n)
    for i in range(1, n):
        err[i] = 0.89 * err[i - 1] + rng.normal(0, 4.5)
    return [float(v) for v in level + err + rng.normal(0, 2, n)]


def test_forecasts_are_issued_and_scored_against_the_readings_that_came(
    make_config: Callable[..., Config],
) -> None:
    values = plausible_day(np.random.default_rng(3))
    with cgm_pipeline(make_config()) as (pipeline, _clock):
        feed(pipeline, _clock, values)
        store = pipeline.store
        skill = {s.horizon_s: s for s in forecasts.skill(store, "pt-001")}
        # every 15 min of event time, 30- and 60-min horizons: ~4 an hour for a day
        expected = DAY / issue_every_s(Signal.GLUCOSE)
        assert set(skill) == {1800.0, 3600.0}
        for s in skill.values():
            assert expected - 6 <= s.n <= expected
            assert 0.85 <= s.coverage95 <= 1.0
            assert 0 < s.rmse < 40
        # each score is the reading nearest the forecast's target
        rows = list(forecasts.export_rows(store, T0, T0 + DAY, "pt-001"))
        by_t = {T0 + i * STEP: v for i, v in enumerate(values)}
        scored = [r for r in rows if r["observed"] is not None]
        assert scored
        for r in scored:
            assert abs(r["observed_t"] - r["target_t"]) <= 150
            assert r["observed"] == by_t[r["observed_t"]]


def test_readings_far_outside_the_intervals_raise_a_technical_alarm(
    make_config: Callable[..., Config],
) -> None:
    rng = np.random.default_rng(4)
    # a sensor (or a body) far noisier than the models: +-70 mg/dL jumps around 150
    values = [float(150 + 70 * rng.choice([-1, 1]) + rng.normal(0, 5)) for _ in range(288)]
    with cgm_pipeline(make_config()) as (pipeline, clock):
        feed(pipeline, clock, values)
        clock.advance(600)
        pipeline.on_idle()
        found = [
            a
            for a in alarms.listing(pipeline.store.conn, "pt-001", limit=100)
            if a.alarm_type == "forecast_unreliable"
        ]
        assert len(found) == 1
        assert found[0].technical
        assert "inside the 95% interval" in found[0].reason
        assert found[0].values["worst_coverage95"] < 0.8  # type: ignore[operator]


def test_a_plausible_patient_raises_no_fit_alarm(make_config: Callable[..., Config]) -> None:
    with cgm_pipeline(make_config()) as (pipeline, clock):
        feed(pipeline, clock, plausible_day(np.random.default_rng(5)))
        clock.advance(600)
        pipeline.on_idle()
        kinds = {a.alarm_type for a in alarms.listing(pipeline.store.conn, "pt-001", limit=100)}
        assert "forecast_unreliable" not in kinds


def test_the_log_is_bounded(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scorekeeper, "LOG_DAYS", 2 / 24)  # keep 2 hours instead of 30 days
    with cgm_pipeline(make_config()) as (pipeline, clock):
        feed(pipeline, clock, plausible_day(np.random.default_rng(6))[:72])  # 6 hours
        rows = list(forecasts.export_rows(pipeline.store, 0, math.inf, None))
    newest = T0 + 71 * STEP
    assert rows
    # pruned at most once an hour of event time: nothing older than 2 h + 1 h survives
    assert min(r["issued_at"] for r in rows) >= newest - 3 * 3600
    assert max(r["issued_at"] for r in rows) >= newest - 900


def test_export_writes_forecasts_alarms_and_risks_as_json_lines(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = make_config()
    fall = [150 - 8 * i for i in range(13)]  # to 54: low and urgent low
    with cgm_pipeline(cfg) as (pipeline, clock):
        feed(pipeline, clock, [*plausible_day(np.random.default_rng(7))[:36], *fall])
        out = tmp_path / "export.jsonl"
        with out.open("w") as handle:
            written = export(pipeline.store, handle, T0, T0 + DAY)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert written["forecast"] > 0
    assert written["alarm_event"] > 0
    assert len(lines) == sum(written.values())
    kinds = {line["kind"] for line in lines}
    assert kinds == {"forecast", "alarm_event"}  # no risk: a CGM-only patient
    forecast = next(line for line in lines if line["kind"] == "forecast")
    lo, hi = forecast["interval95"]
    assert lo < forecast["mean"] < hi
    assert forecast["model"].startswith("glucose")
    assert forecast["at"] == to_iso(forecast["t"])
    raised = {line["alarm_type"] for line in lines if line.get("event") == "raised"}
    assert {"low", "urgent_low"} <= raised
    # the CLI writes the same, to a file or standard output, and refuses a naive time
    env = {"EDGE_TWIN_STORE_PATH": str(cfg.store.path)}
    since = to_iso(T0)
    cli_out = tmp_path / "cli.jsonl"
    cli("edge-twin", "export", "--since", since, "--out", str(cli_out), env=env)
    assert cli_out.read_text() == out.read_text()
    only = cli("edge-twin", "export", "--since", since, "--kind", "alarm_event", env=env).stdout
    assert {json.loads(line)["kind"] for line in only.splitlines()} == {"alarm_event"}
    naive = cli("edge-twin", "export", "--since", "2026-09-21T14:00", env=env, check=False)
    assert naive.returncode == 1
    assert "no UTC offset" in naive.stderr


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00Z"])
def test_export_refuses_a_time_it_cannot_read(tmp_path: Path, since: str) -> None:
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "gw.sqlite")}
    proc = cli("edge-twin", "export", "--since", since, env=env, check=False)
    assert proc.returncode == 1
    assert "not an ISO 8601 time" in proc.stderr


def test_the_api_shows_each_patients_forecast_skill(make_config: Callable[..., Config]) -> None:
    cfg = make_config()
    with cgm_pipeline(cfg) as (pipeline, clock):
        feed(pipeline, clock, plausible_day(np.random.default_rng(8)))
    care = api_user(cfg.store.path)
    server = ApiServer(create_app(cfg, clock), "127.0.0.1", 0)
    server.start()
    try:
        body = httpx.get(f"{server.url}/patients/pt-001/forecast-skill", headers=care).json()
        missing = httpx.get(f"{server.url}/patients/nobody/forecast-skill", headers=care)
    finally:
        server.stop()
    assert body["nominal_coverage95"] == 0.95
    assert {(s["signal"], s["horizon_min"]) for s in body["skill"]} == {
        ("glucose", 30),
        ("glucose", 60),
    }
    for s in body["skill"]:
        assert s["scored"] > 40
        assert 0.85 <= s["coverage95"] <= 1.0
        assert s["unit"] == "mg/dL"
    assert missing.status_code == 404


def test_export_writes_json_that_any_parser_reads(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def odd(*_args: object) -> Iterator[dict[str, object]]:
        yield {"kind": "forecast", "mean": float("nan"), "b": [1.0, float("inf")]}

    monkeypatch.setattr(export_module, "_forecasts", odd)

    def strict(text: str) -> object:
        raise AssertionError(f"{text} is not JSON")

    with cgm_pipeline(make_config()) as (pipeline, _clock):
        out = tmp_path / "x.jsonl"
        with out.open("w") as handle:
            export(pipeline.store, handle, T0, T0 + DAY, kinds=("forecast",))
    doc = json.loads(out.read_text(), parse_constant=strict)
    assert doc == {"kind": "forecast", "mean": None, "b": [1.0, None]}


def test_a_failing_scorekeeper_stops_neither_the_twin_nor_the_alarms(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(scorekeeper.Scorekeeper, "on_moved", broken)
    with cgm_pipeline(make_config()) as (pipeline, clock):
        feed(pipeline, clock, [150 - 8 * i for i in range(13)])  # to 54
        kinds = {a.alarm_type for a in alarms.listing(pipeline.store.conn, "pt-001", limit=100)}
    assert {"low", "urgent_low"} <= kinds
