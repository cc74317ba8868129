"""Faults a gateway meets in a home, on real processes, a real broker and real files:
after each, nothing acknowledged is lost, /health says what is wrong, no worker is dead."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_twin.broker import PrivateBroker
from edge_twin.store import Store
from firmware_sim.home import Home
from firmware_sim.messages import Message
from firmware_sim.publisher import HomePublisher
from tests.conftest import cgm_home, provision_home, wait_until
from tests.gateway_process import GatewayProcess, senml, stored

pytestmark = pytest.mark.broker


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
