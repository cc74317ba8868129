"""Device identity at the broker: each credential may publish only on its own topics.

What the broker refuses never reaches the gateway; what a provisioned-but-wrong payload
claims is caught by the gateway (tests/test_decode.py: not_allowed, unknown_device)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.gateway import Gateway
from edge_twin.store import Store, readings
from firmware_sim import wire
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, cgm_home, provision_home, wait_until

pytestmark = pytest.mark.broker
PASSWORDS = {"gateway": "gw-secret", "cgm-001": "pw-1", "cgm-002": "pw-2"}


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(data_dir=tmp_path / "secure", users=PASSWORDS) as broker:
        yield broker


def publish_as(
    broker: PrivateBroker, user: str | None, password: str | None, topic: str, payload: bytes
) -> tuple[bool, int | None]:
    """(connected, PUBACK reason code) for one QoS 1 publish by this identity."""
    connected, acked = threading.Event(), threading.Event()
    result: dict[str, int] = {}

    def on_connect(
        client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        result["connect"] = int(reason.value)  # type: ignore[attr-defined]
        connected.set()

    def on_publish(
        client: paho.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        result["puback"] = int(reason.value)  # type: ignore[attr-defined]
        acked.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{user}",
        protocol=paho.MQTTv5,
    )
    if user is not None:
        client.username_pw_set(user, password)
    client.on_connect, client.on_publish = on_connect, on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(5)
        if result["connect"] != 0:
            return False, None
        client.publish(topic, payload, qos=1)
        assert acked.wait(5)
        return True, result["puback"]
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_device_can_publish_only_as_itself(
    secure_broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(secure_broker, mqtt={"username": "gateway", "password": "gw-secret"})
    home = cgm_home(patients=2, hours=1, seed=2)
    provision_home(cfg.store.path, home)
    reading = wire.senml_pack("cgm-002", [("glucose", "mg/dL", T0, 40.0, 1)])
    with Gateway(cfg, ManualClock(home.end), serve_api=False) as gw:
        with HomePublisher(
            secure_broker.host, secure_broker.port, home.devices, passwords=PASSWORDS
        ) as pub:
            pub.publish([m for m in home.messages() if m.topic.endswith("/senml")])
        # cgm-001's credential cannot speak for cgm-002 (reason 135: not authorized) ...
        assert publish_as(
            secure_broker, "cgm-001", "pw-1", wire.readings_topic("cgm-002"), reading
        ) == (True, 135)
        # ... nor can a wrong password or an anonymous client connect at all.
        assert publish_as(
            secure_broker, "cgm-001", "wrong", wire.readings_topic("cgm-001"), reading
        ) == (False, None)
        assert publish_as(secure_broker, None, None, wire.readings_topic("cgm-001"), reading) == (
            False,
            None,
        )
        assert gw.ingest is not None
        expected = sum(len(p.cgm) for p in home.patients)
        wait_until(lambda: gw.ingest.stats.readings_new == expected, what="legitimate readings")
    with Store(cfg.store.path) as store:
        assert readings.count(store) == expected  # the forged 40 mg/dL never arrived
        assert all(
            r.value != 40.0 or r.device_id != "cgm-002" for r in readings.after(store, 0, 1000)
        )


def test_the_gateway_refuses_to_start_with_bad_credentials(
    secure_broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    from edge_twin.errors import BrokerError

    cfg = make_config(secure_broker, mqtt={"username": "gateway", "password": "nope"})
    with pytest.raises(BrokerError, match="refused the connection"):
        Gateway(cfg, ManualClock(T0), serve_api=False).start()
