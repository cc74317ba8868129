"""Acknowledged data survives kill -9; unacknowledged data comes back from the broker.

The gateway runs as a real process (``edge-twin run``) and is killed with SIGKILL. To
catch it between receiving and committing, the test holds a real SQLite write lock, so the
gateway's commit waits on it (no test double involved).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge_twin.broker import PrivateBroker
from edge_twin.store import Store
from firmware_sim.home import Home
from firmware_sim.publisher import HomePublisher
from tests.conftest import cgm_home, provision_home, wait_until
from tests.gateway_process import GatewayProcess, senml, stored

pytestmark = pytest.mark.broker


@pytest.fixture
def home(db_path: Path) -> Home:
    h = cgm_home(patients=2, hours=12, seed=8)
    provision_home(db_path, h)
    return h


def test_killed_between_receive_and_commit_loses_nothing(
    broker: PrivateBroker, gateway_process: GatewayProcess, home: Home, db_path: Path
) -> None:
    messages = senml(home)
    gateway_process.start()
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the gateway's commit now waits on this lock
    try:
        with HomePublisher(broker.host, broker.port, home.devices) as pub:
            pub.publish(messages)  # the broker has them all (PUBACKed to the devices)
        # The gateway holds a batch it cannot commit (and so has not acknowledged).
        wait_until(lambda: gateway_process.health()["ingest"]["received"] > 0, 20, "receipt")
        assert gateway_process.health()["ingest"]["messages"] == 0
        gateway_process.kill9()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stored(db_path) == 0
    gateway_process.start()  # same client id: the broker redelivers what was never acknowledged
    wait_until(lambda: stored(db_path) == len(messages), 20, "redelivery")
    assert gateway_process.health()["ingest"]["readings_duplicate"] == 0


def test_killed_mid_stream_stores_every_reading_exactly_once(
    broker: PrivateBroker, gateway_process: GatewayProcess, home: Home, db_path: Path
) -> None:
    messages = senml(home) * 3  # each reading sent three times, as a flaky device might
    gateway_process.start()
    with HomePublisher(broker.host, broker.port, home.devices) as pub:
        sender = threading.Thread(target=pub.publish, args=(messages,))
        sender.start()
        wait_until(lambda: stored(db_path) > 50, 20, "some commits")
        gateway_process.kill9()
        sender.join(60)
    gateway_process.start()
    distinct = len(senml(home))
    wait_until(lambda: stored(db_path) == distinct, 30, "all distinct readings")
    with Store(db_path) as store:
        rows = store.conn.execute(
            "SELECT count(*), count(DISTINCT device_id || signal || t) FROM readings"
        ).fetchone()
    assert rows == (distinct, distinct)


def test_queued_messages_survive_a_broker_restart(
    broker: PrivateBroker, gateway_process: GatewayProcess, home: Home, db_path: Path
) -> None:
    messages = senml(home)[:100]
    gateway_process.start()
    gateway_process.stop()  # the session stays on the broker
    with HomePublisher(broker.host, broker.port, home.devices) as pub:
        pub.publish(messages)
    broker.restart()  # mosquitto persists its queues on the way down
    gateway_process.start()
    wait_until(lambda: stored(db_path) == len(messages), 20, "queued messages after broker restart")
