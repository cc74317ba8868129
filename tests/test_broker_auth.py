"""Device identity at the broker: each credential may publish only on its own topics.

What the broker refuses never reaches the gateway; what a provisioned-but-wrong payload
claims is caught by the gateway (tests/test_decode.py: not_allowed, unknown_device)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin.alert import AlarmEngine
from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.domain import Observation
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, devices, displays, readings
from firmware_sim import wire
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, cgm_home, provision_home, wait_until
from tests.test_provisioning import attempt

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
    return attempt(broker.host, broker.port, user, password, None, topic, payload)


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


class Listener:
    """A display's MQTT client: what it receives, by topic."""

    def __init__(self, broker: PrivateBroker, user: str, password: str, topic: str) -> None:
        self.got: list[tuple[str, dict[str, object]]] = []
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"display-{user}",
            protocol=paho.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        self.client.on_message = lambda _c, _u, m: self.got.append((m.topic, json.loads(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def send(self, topic: str, command: dict[str, object]) -> int:
        info = self.client.publish(topic, json.dumps(command), qos=1)
        info.wait_for_publish(5)
        return info.rc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_each_display_reads_and_acts_on_its_own_patients_only(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    passwords = {**PASSWORDS, "bedside-1": "pw-b1", "bedside-2": "pw-b2"}
    bound = {"bedside-1": ["pt-001"], "bedside-2": ["pt-002"]}
    with PrivateBroker(data_dir=tmp_path / "mq", users=passwords, displays=bound) as broker:
        cfg = make_config(broker, mqtt={"username": "gateway", "password": "gw-secret"})
        with Store(cfg.store.path) as store:
            devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
            devices.provision(store, "cgm-002", "pt-002", "cgm", T0)
            for name, patients in bound.items():
                displays.add(store, name, patients, T0)
        gw_topic = f"et/v1/gw/{cfg.gateway.id}"
        one = Listener(broker, "bedside-1", "pw-b1", f"{gw_topic}/#")
        try:
            with Gateway(cfg, ManualClock(T0), serve_api=False):
                with Store(cfg.store.path) as store:
                    engine = AlarmEngine(store, lambda: T0)
                    engine.observe(
                        [
                            Observation(p, "low", T0, True, f"glucose 62 below 70 ({p})", {})
                            for p in ("pt-001", "pt-002")
                        ]
                    )
                    ids = {a.patient_id: a.id for a in alarms.listing(store.conn)}
                wait_until(lambda: any("/alarms/pt-001" in t for t, _ in one.got), what="own")
                # not its own patient's alarm: refused as unknown
                one.send(
                    f"{gw_topic}/alarm-cmd/bedside-1",
                    {"action": "acknowledge", "alarm_id": ids["pt-002"]},
                )
                # its own, with a name in the message that is not who acts
                one.send(
                    f"{gw_topic}/alarm-cmd/bedside-1",
                    {
                        "action": "acknowledge",
                        "alarm_id": ids["pt-001"],
                        "by": "dr-house",
                        "reason": "seen",
                    },
                )
                results = f"{gw_topic}/alarm-cmd/bedside-1/result"
                wait_until(lambda: sum(t == results for t, _ in one.got) == 2, what="answers")
                # another display's command topic is not writable with this credential
                refused = publish_as(
                    broker,
                    "bedside-1",
                    "pw-b1",
                    f"{gw_topic}/alarm-cmd/bedside-2",
                    json.dumps({"action": "acknowledge", "alarm_id": ids["pt-002"]}).encode(),
                )
        finally:
            one.close()
        with Store(cfg.store.path) as store:
            acked = alarms.events(store.conn, ids["pt-001"])
            other = alarms.events(store.conn, ids["pt-002"])
    topics = {t for t, _ in one.got}
    assert not any("pt-002" in t for t in topics)  # never delivered to bedside-1
    answers = [m for t, m in one.got if t == results]
    assert answers[0] == {"ok": False, "error": f"no alarm {ids['pt-002']}"}
    assert answers[1]["ok"] is True
    assert (acked[-1].event, acked[-1].actor) == ("acknowledged", "bedside-1")
    assert "dr-house" in acked[-1].reason  # kept as what the display said
    assert [e.event for e in other] == ["raised"]
    assert refused == (True, 135)  # MQTT v5: not authorized
