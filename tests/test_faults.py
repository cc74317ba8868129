"""Faults a gateway meets in a home, on real processes, a real broker and real files:
after each, nothing acknowledged is lost, /health says what is wrong, no worker is dead."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ClockTrust, ManualClock
from edge_twin.config import Config
from edge_twin.domain import RejectReason
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, quarantine
from firmware_sim.home import Home
from firmware_sim.messages import Message
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, cgm_home, provision_home, wait_until
from tests.gateway_process import GatewayProcess, senml, stored

pytestmark = pytest.mark.broker
HELD = RejectReason.CLOCK_UNSYNCHRONISED.value


@pytest.fixture
def home(db_path: Path) -> Home:
    h = cgm_home(patients=2, hours=6, seed=21)
    provision_home(db_path, h)
    return h


def a_low_after(last: Message) -> Message:
    """The device's next reading, at 41 mg/dL."""
    (record,) = json.loads(last.payload)
    low = {**record, "bt": record["bt"] + 300, "v": 41.0, "seq": record["seq"] + 1}
    return Message(last.t + 300, last.device_id, last.topic, json.dumps([low]).encode())


def test_a_full_disk_degrades_health_and_loses_no_acknowledged_reading(
    broker: PrivateBroker, gateway_process: GatewayProcess, home: Home, db_path: Path
) -> None:
    messages = senml(home)
    first, rest = messages[:20], [*messages[20:], a_low_after(messages[-1])]
    gateway_process.start()
    with HomePublisher(broker.host, broker.port, home.devices) as pub:
        pub.publish(first)
    wait_until(lambda: stored(db_path) == len(first), 20, "the first readings")
    # The disk is full: no file the gateway writes may grow past 4 KiB (the WAL is larger).
    gateway_process.limit_file_size(4096)
    with HomePublisher(broker.host, broker.port, home.devices) as pub:
        pub.publish(rest)  # PUBACKed by the broker, which keeps them for the gateway

    def degraded() -> bool:
        health = gateway_process.health()
        return any("cannot be written" in p for p in health.get("problems", []))

    wait_until(degraded, 30, "/health to say the store cannot be written")
    health = gateway_process.health()
    assert health["status"] == "degraded"
    assert all(w["alive"] for w in health["workers"]), health["workers"]
    assert health["ingest"]["commit_failures"] >= 1
    assert stored(db_path) == len(first)
    # Retries back off (1, 2, 4, 8 s ...): a full disk is not retried, nor logged, several
    # times a second (it was every 0.2 s: some 50 times in 10 s).
    before = gateway_process.health()["ingest"]["commit_failures"]
    time.sleep(10)
    retries = gateway_process.health()["ingest"]["commit_failures"] - before
    assert retries <= 6, retries

    gateway_process.limit_file_size(None)  # space is freed
    wait_until(lambda: stored(db_path) == len(first) + len(rest), 60, "every reading stored")
    wait_until(lambda: gateway_process.health().get("status") == "ok", 20, "/health ok again")
    with Store(db_path) as store:
        low = store.conn.execute(
            "SELECT count(*) FROM readings WHERE value = 41.0 AND device_id = ?",
            (rest[-1].device_id,),
        ).fetchone()[0]
        check = store.conn.execute("PRAGMA integrity_check").fetchone()[0]
    assert (low, check) == (1, "ok")
    assert all(w["alive"] for w in gateway_process.health()["workers"])


def test_a_broker_away_raises_a_technical_alarm_and_the_idle_work_runs_on(
    broker: PrivateBroker,
    make_config: Callable[..., Config],
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: while the broker was away the ingest thread only reconnected: no technical
    alarm, no escalation, and nothing said the devices could not be heard. The outage is
    timed on the monotonic clock: a gateway clock that leaps (here by a day) changes
    nothing."""
    monkeypatch.setattr("edge_twin.ingest.link.STABLE_LINK_S", 1.0)
    cfg = make_config(broker, alert={"broker_alarm_after_s": 3.0})
    clock = ManualClock(T0)
    kind = "gateway_broker_unreachable"
    with Gateway(cfg, clock) as gw:
        assert gw.ingest is not None
        assert gw.store is not None
        conn = gw.store.conn
        broker.stop()
        wait_until(lambda: not gw.ingest.connected, what="the gateway to see the broker gone")
        clock.advance(86_400.0)  # the gateway's clock leaps: not an outage of a day
        time.sleep(1.5)  # the idle work ran (every second while reconnecting): too early
        assert alarms.open_alarm(conn, "gateway", kind) is None
        for _ in range(10):  # ticks are due every 5 s of gateway time
            clock.advance(10.0)
            time.sleep(0.5)
        raised = alarms.open_alarm(conn, "gateway", kind)
        assert raised is not None
        assert "no lasting link to its MQTT broker" in raised.reason
        assert all(w.alive for w in gw.workers.statuses())
        broker.start()
        wait_until(lambda: gw.ingest.connected, 20, "reconnected")

        def cleared() -> bool:
            clock.advance(10.0)
            return alarms.open_alarm(conn, "gateway", kind) is None

        wait_until(cleared, 20, "the alarm cleared once the link is up for good")
    with Store(db_path) as store:
        raised_ever = [
            a
            for a in alarms.listing(store.conn, "gateway", open_only=False)
            if a.alarm_type == kind
        ]
    assert len(raised_ever) == 1  # raised once, cleared once: no flapping


def test_clock_jumps_both_ways_lose_no_reading(
    broker: PrivateBroker, make_config: Callable[..., Config], db_path: Path
) -> None:
    """The gateway's clock stepped 2 h back, then 2 h ahead, by hand (settimeofday: the
    kernel says unsynchronised until NTP steps it right again): every reading the CGM sends
    meanwhile is stored once, none refused as from the future, no worker dies."""
    home = cgm_home(patients=1, hours=6, seed=23)
    provision_home(db_path, home)
    messages = senml(home)
    thirds = [messages[: len(messages) // 3], messages[len(messages) // 3 : 2 * len(messages) // 3]]
    thirds.append(messages[2 * len(messages) // 3 :])
    cfg = make_config(broker)
    clock = ManualClock(home.start)
    kernel = {"synchronised": True}
    trust = ClockTrust(lambda: kernel["synchronised"], recheck_s=0.0)

    def send(batch: list[Message]) -> None:
        with HomePublisher(broker.host, broker.port, home.devices) as pub:
            for m in batch:
                clock.set(max(clock.now(), m.t + offset))
                pub.send(m)
            pub.flush()

    with Gateway(cfg, clock, clock_trust=trust) as gw:
        assert gw.store is not None
        offset = 0.0
        send(thirds[0])
        wait_until(lambda: stored(db_path) == len(thirds[0]), 20, "the first third")
        # Stepped 2 h back by hand: readings look 2 h ahead; they are held, not refused.
        offset, kernel["synchronised"] = -7200.0, False
        clock.set(thirds[1][0].t + offset)
        send(thirds[1])
        # (A message delivered late may carry a device time the stepped clock has passed.)
        wait_until(
            lambda: (
                quarantine.count(gw.store, HELD) + stored(db_path)
                == len(thirds[0]) + len(thirds[1])
            ),
            20,
            "held readings",
        )
        assert quarantine.count(gw.store, HELD) >= len(thirds[1]) * 0.9
        # NTP steps it right: what was held is stored.
        offset, kernel["synchronised"] = 0.0, True
        clock.set(thirds[1][-1].t + 10.0)
        wait_until(lambda: stored(db_path) == len(thirds[0]) + len(thirds[1]), 20, "released")
        # Stepped 2 h ahead by hand: readings look 2 h late; they are stored.
        offset, kernel["synchronised"] = 7200.0, False
        send(thirds[2])
        wait_until(lambda: stored(db_path) == len(messages), 20, "every reading")
        offset, kernel["synchronised"] = 0.0, True
        clock.set(thirds[2][-1].t + 10.0)
        time.sleep(1.0)
        assert all(w.alive for w in gw.workers.statuses())
        assert quarantine.count(gw.store, RejectReason.FUTURE_TIME.value) == 0
        assert quarantine.count(gw.store, HELD) == 0
        check = gw.store.conn.execute("PRAGMA integrity_check").fetchone()[0]
    assert (stored(db_path), check) == (len(messages), "ok")
