"""No worker dies silently: a loop that raises or ends on its own is a death, reported on
/health and to the process, which ends so that systemd restarts it."""

from __future__ import annotations

import signal
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edge_twin.broker import PrivateBroker, free_port
from edge_twin.cli import EXIT_WORKER_DIED, app
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.gateway import Gateway
from edge_twin.ingest import RawMessage
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, alarms, quarantine, readings
from edge_twin.workers import Workers
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, api_user, cgm_home, provision_home, wait_until


def test_a_loop_that_raises_or_ends_is_a_death_and_a_stop_is_not() -> None:
    deaths: list[tuple[str, str]] = []
    workers = Workers(on_death=lambda name, why: deaths.append((name, why)))

    def broken() -> None:
        raise RuntimeError("a bug")

    quit_early = threading.Event()
    asked = threading.Event()
    threads = [
        workers.thread("raises", broken),
        workers.thread("returns", quit_early.wait),
        workers.thread("asked", asked.wait),
    ]
    for t in threads:
        t.start()
    quit_early.set()
    workers.stopping("asked")
    asked.set()
    for t in threads:
        t.join(5)
    assert sorted(deaths) == [
        ("raises", "RuntimeError"),
        ("returns", "its loop ended while the gateway was running"),
    ]
    problems = workers.problems()
    assert "the raises worker died: RuntimeError" in problems
    assert not any("asked" in p and "died" in p for p in problems)


def test_a_loop_that_stops_turning_is_stalled() -> None:
    workers = Workers()
    done = threading.Event()
    thread = workers.thread("slow", done.wait, stall_s=0.5)
    quiet = workers.thread("quiet", done.wait)  # no stall_s: never stalled
    thread.start()
    quiet.start()
    workers.beat("slow")
    assert workers.problems() == []
    wait_until(lambda: bool(workers.problems()), 10, "stall seen")
    (stalled,) = workers.problems()
    assert "the slow worker has not turned" in stalled
    workers.stopping()
    done.set()
    thread.join(5)
    quiet.join(5)


def break_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in decoding and in the quarantine's last resort alike (faults no real peer
    can produce): the ingest worker cannot go on."""

    def broken(self: Pipeline, *args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug in the pipeline")

    monkeypatch.setattr(Pipeline, "commit", broken)
    monkeypatch.setattr(Pipeline, "refuse", broken)


@pytest.mark.broker
def test_a_message_that_meets_a_bug_is_quarantined_and_ingest_goes_on(
    broker: PrivateBroker, make_config: object, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = Pipeline.commit

    def buggy(self: Pipeline, messages: list[RawMessage], statuses: bool = True) -> object:
        if any(m.payload.endswith(b"poison") for m in messages):
            raise ZeroDivisionError("a bug met by one message")  # no real peer can cause it
        return commit(self, messages, statuses)

    monkeypatch.setattr(Pipeline, "commit", buggy)
    home = cgm_home(patients=1, hours=1, seed=3)
    provision_home(db_path, home)
    cfg: Config = make_config(broker)  # type: ignore[operator]
    good = [m for m in home.messages() if m.topic.endswith("/senml")]
    poison = replace(good[0], payload=good[0].payload + b"poison")
    clock = ManualClock(T0 + 86400)  # after the home's hour: no reading ahead of it
    with (
        Gateway(cfg, clock) as gw,
        HomePublisher(broker.host, broker.port, home.devices) as pub,
    ):
        pub.publish([*good[:5], poison, *good[5:]])
        with Store(db_path) as store:
            wait_until(lambda: readings.count(store) == len(good), 10, "the good ones stored")
            wait_until(lambda: quarantine.count(store, "internal_error") == 1, 10, "the bad one")
        assert all(w["alive"] for w in gw.status()["workers"])
        clock.advance(120)  # the technical checks run on the gateway clock

        def raised() -> bool:
            with Store(db_path) as store:
                kinds = [a.alarm_type for a in alarms.listing(store.conn, "gateway")]
            return "gateway_internal_error" in kinds

        wait_until(raised, 10, "gateway_internal_error")
        assert gw.api is not None
        engineer = api_user(db_path, "engineer", "eng-bug")
        health = httpx.get(f"{gw.api.url}/health", headers=engineer, timeout=5).json()
    assert health["status"] == "degraded"
    assert any("internal_error" in p for p in health["problems"])
    with Store(db_path) as store:
        (kept,) = quarantine.recent(store, reason="internal_error")
    assert kept.device_id == good[0].device_id  # its device read from the topic
    assert kept.detail == "ZeroDivisionError while decoding"


@pytest.mark.broker
def test_a_dead_ingest_worker_shows_on_health(
    broker: PrivateBroker,
    make_config: object,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    break_the_pipeline(monkeypatch)
    home = cgm_home(patients=1, hours=1, seed=3)
    provision_home(db_path, home)
    cfg: Config = make_config(broker)  # type: ignore[operator]
    deaths: list[str] = []
    with (
        Gateway(cfg, ManualClock(T0), on_death=lambda w, why: deaths.append(w)) as gw,
        HomePublisher(broker.host, broker.port, home.devices) as pub,
    ):
        pub.publish(home.messages()[:3])
        wait_until(lambda: deaths == ["ingest"], 10, "the ingest worker's death")
        assert gw.api is not None
        health = httpx.get(f"{gw.api.url}/health/live", timeout=5)
        assert health.status_code == 200  # liveness: the process answers
        status = {w["name"]: w for w in gw.status()["workers"]}
        assert status["ingest"]["alive"] is False
        assert status["ingest"]["died"] == "RuntimeError"  # the type: no value on /health
        assert status["api"]["alive"] is True


@pytest.mark.broker
def test_edge_twin_run_ends_with_status_70_when_a_worker_dies(
    broker: PrivateBroker, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_the_pipeline(monkeypatch)
    home = cgm_home(patients=1, hours=1, seed=3)
    provision_home(db_path, home)
    port = free_port()
    env = {
        "EDGE_TWIN_STORE_PATH": str(db_path),
        "EDGE_TWIN_MQTT_PORT": str(broker.port),
        "EDGE_TWIN_API_PORT": str(port),
        "EDGE_TWIN_INGEST_FUTURE_TOLERANCE_S": "86400",
    }

    def publish_once_up() -> None:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health/live"), 20, "gateway up")
        with HomePublisher(broker.host, broker.port, home.devices) as pub:
            pub.publish(home.messages()[:3])

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = threading.excepthook
    publisher = threading.Thread(target=publish_once_up)
    publisher.start()
    try:
        result = CliRunner().invoke(app, ["run"], env=env)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        publisher.join(30)
    assert result.exit_code == EXIT_WORKER_DIED, result.output
    assert "a worker died (ingest: RuntimeError)" in result.output
    assert threading.excepthook is hook


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
