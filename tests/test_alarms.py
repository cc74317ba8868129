"""Alarm scenarios through the real broker: a CGM publishes, the gateway raises (or does
not raise) alarms, delivers them over MQTT and to a webhook, and takes acknowledgements
and pauses from the API and from MQTT."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock, to_iso
from edge_twin.config import Config
from edge_twin.domain import Alarm, AlarmState
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, devices, displays
from firmware_sim import wire
from firmware_sim.home import SimDevice
from firmware_sim.messages import Message
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, api_user, wait_until

pytestmark = pytest.mark.broker

CGM = SimDevice("cgm-001", "pt-001", "cgm")
STEP = 300.0


def cgm_message(t: float, value: float, seq: int, sent: float | None = None) -> Message:
    payload = wire.senml_pack("cgm-001", [("glucose", "mg/dL", t, value, seq)])
    return Message(
        t + 5.0 if sent is None else sent, "cgm-001", wire.readings_topic("cgm-001"), payload
    )


def series(start: float, values: list[float], first_seq: int = 1) -> list[Message]:
    return [cgm_message(start + i * STEP, v, first_seq + i) for i, v in enumerate(values)]


class Home:
    """A gateway with one CGM patient, fed one message at a time at its own time."""

    def __init__(
        self, gw: Gateway, clock: ManualClock, pub: HomePublisher, cfg: Config, http: httpx.Client
    ) -> None:
        self.gw, self.clock, self.pub, self.cfg = gw, clock, pub, cfg
        self.http = http  # logged in as nurse-ann, a care team
        self.sent = 0

    def play(self, messages: list[Message]) -> None:
        pipeline = self.gw.pipeline
        assert pipeline is not None
        for m in messages:
            self.clock.advance_to(m.t)
            self.pub.send(m)
            self.pub.flush()
            self.sent += 1
            wait_until(lambda: pipeline.settled(self.sent), what="stored, estimated, alarms")

    def advance(self, seconds: float) -> None:
        """Let gateway time pass without data (ticks run on the idle loop)."""
        self.clock.advance(seconds)

    def alarms(self, kind: str | None = None, open_only: bool = False) -> list[Alarm]:
        with Store(self.cfg.store.path) as store:
            found = alarms.listing(store.conn, "pt-001", open_only=open_only, limit=1000)
        return [a for a in found if kind is None or a.alarm_type == kind]

    def events(self, alarm_id: int) -> list[str]:
        with Store(self.cfg.store.path) as store:
            return [e.event for e in alarms.events(store.conn, alarm_id)]

    @property
    def api(self) -> str:
        assert self.gw.api is not None
        return self.gw.api.url


@contextmanager
def cgm_gateway(
    broker: PrivateBroker, make_config: Callable[..., Config], **sections: dict[str, Any]
) -> Iterator[Home]:
    cfg = make_config(broker, **sections)
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
    clock = ManualClock(T0)
    auth = api_user(cfg.store.path)
    with (
        Gateway(cfg, clock) as gw,
        HomePublisher(broker.host, broker.port, [CGM]) as pub,
        httpx.Client(headers=auth) as http,
    ):
        yield Home(gw, clock, pub, cfg, http)


def steady(n: int, value: float = 120.0) -> list[float]:
    return [value + (3 if i % 2 else -3) for i in range(n)]


def test_a_compression_low_raises_no_low_alarm(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with cgm_gateway(broker, make_config) as home:
        # steady, then the sensor is lain on: -70 mg/dL in 5 min, 15 min down, recovers
        values = [*steady(24), 50, 47, 49, 52, 117, 121, 119, 122]
        home.play(series(T0, values))
        assert home.alarms("urgent_low") == []
        assert home.alarms("low") == []
        assert home.alarms("predicted_low") == []


def test_a_real_low_is_predicted_raised_latched_and_acknowledged_over_mqtt(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    received: list[dict[str, Any]] = []
    listener = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    listener.on_message = lambda _c, _u, m: received.append(
        {
            "topic": m.topic,
            **(
                {"list": json.loads(m.payload)}
                if m.topic.endswith("current")
                else json.loads(m.payload)
            ),
        }
    )
    listener.connect(broker.host, broker.port)
    listener.subscribe("et/v1/gw/+/alarms/#", qos=1)
    listener.loop_start()
    try:
        with cgm_gateway(broker, make_config) as home:
            # a physiological fall, -2 mg/dL/min, to 45, held for 20 min, then treated
            falling = [120 - 10 * i for i in range(1, 8)]  # 110 .. 50
            values = [*steady(24), *falling, 46, 45, 45, 47, 60, 85, 100, 110]
            home.play(series(T0, values))
            predicted = home.alarms("predicted_low")
            urgent = home.alarms("urgent_low")
            assert predicted
            assert urgent
            assert predicted[-1].raised_at < urgent[-1].raised_at  # warned before it was low
            alarm = urgent[-1]
            # recovered, but a high-priority alarm latches until someone acknowledges it
            assert alarm.state is AlarmState.ACTIVE
            assert not alarm.condition_present
            assert "latched" in home.events(alarm.id)
            assert home.alarms("low")  # medium priority, after its 10-min persistence
            assert home.alarms("low")[-1].state is AlarmState.RESOLVED  # non-latching
            # acknowledge from a bedside display over MQTT, on its own command topic
            with Store(home.cfg.store.path) as store:
                displays.add(store, "bedside", ["pt-001"], T0)
            gw_topic = f"et/v1/gw/{home.cfg.gateway.id}/alarm-cmd/bedside"
            listener.publish(
                gw_topic, json.dumps({"action": "acknowledge", "alarm_id": alarm.id}), qos=1
            )
            wait_until(
                lambda: home.alarms("urgent_low")[-1].state is AlarmState.RESOLVED,
                what="acknowledged",
            )
            assert home.events(alarm.id)[-2:] == ["acknowledged", "resolved"]
            wait_until(
                lambda: any(
                    r.get("event") == "resolved" and r["alarm"]["type"] == "urgent_low"
                    for r in received
                ),
                what="mqtt",
            )
    finally:
        listener.loop_stop()
        listener.disconnect()
    raised = [r for r in received if r.get("event") == "raised"]
    urgent_msg = next(r for r in raised if r["alarm"]["type"] == "urgent_low")
    assert urgent_msg["alarm"]["priority"] == "high"
    assert "below 55" in urgent_msg["alarm"]["reason"]
    assert urgent_msg["alarm"]["values"]["sd_mgdl"] > 0  # with its uncertainty
    assert urgent_msg["alarm"]["evidence"]
    assert any(r["topic"].endswith("/current") for r in received)


def test_a_backfilled_burst_raises_no_alarm(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with cgm_gateway(broker, make_config) as home:
        home.play(series(T0, steady(12)))
        # two hours of data the device could not send, including a low, arrive at once
        gap_start = T0 + 12 * STEP
        burst_values = [*[120 - 8 * i for i in range(1, 10)], 45, 44, 46, 50, 70, 95, 110]
        arrival = gap_start + len(burst_values) * STEP + 7200
        burst = [
            cgm_message(gap_start + i * STEP, v, 13 + i, sent=arrival)
            for i, v in enumerate(burst_values)
        ]
        home.play(burst)
        assert [a for a in home.alarms() if not a.technical] == []
        # the gateway did go two hours without glucose, and the burst is old news on arrival
        (stale,) = home.alarms("signal_stale")
        assert stale.state is AlarmState.ACTIVE


class Catcher(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        Catcher.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    Catcher.bodies = []
    server = HTTPServer(("127.0.0.1", 0), Catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/oncall", Catcher.bodies
    server.shutdown()
    server.server_close()


def test_an_unacknowledged_high_alarm_escalates_to_the_care_team(
    broker: PrivateBroker,
    make_config: Callable[..., Config],
    webhook: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    url, bodies = webhook
    secret = tmp_path / "webhook-secret"
    secret.write_text("a shared secret of the care team's\n")
    alert = {"webhook_url": url, "webhook_secret_file": str(secret)}
    with cgm_gateway(broker, make_config, alert=alert) as home:
        values = [*steady(12), *[120 - 10 * i for i in range(1, 8)], 48]
        home.play(series(T0, values))  # the urgent low is raised by the last two readings
        (urgent,) = home.alarms("urgent_low")
        assert urgent.escalated_at is None
        home.advance(5 * 60)  # raised 10 min ago: within the 15 min, nothing yet
        wait_until(lambda: "raised" in [b["event"] for b in bodies], what="webhook raised")
        assert home.alarms("urgent_low")[0].escalated_at is None
        home.advance(6 * 60)  # now unacknowledged for more than 15 min
        wait_until(lambda: home.alarms("urgent_low")[0].escalated_at is not None, what="escalation")
        wait_until(lambda: "escalated" in [b["event"] for b in bodies], what="webhook escalated")
    escalated = next(b for b in bodies if b["event"] == "escalated")
    assert escalated["alarm"]["type"] == "urgent_low"
    assert "queued for the care team's on-call webhook" in escalated["why"]
    assert escalated["event_id"].startswith("gateway-1:")


def test_a_paused_alarm_stays_quiet_until_its_time_then_realerts_only_if_still_low(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with cgm_gateway(broker, make_config) as home:
        falling = [120 - 8 * i for i in range(1, 7)]  # to 72
        t = T0
        home.play(series(t, [*steady(12), *falling, 66, 65, 64, 64, 65]))
        (low,) = home.alarms("low")
        r = home.http.post(
            f"{home.api}/patients/pt-001/alarms/low/pause",
            json={"by": "nurse-ann", "minutes": 30, "reason": "treating"},
        )
        assert r.status_code == 200, r.text
        assert home.alarms("low")[0].state is AlarmState.PAUSED
        # still low for the next 25 min: quiet
        seq0 = 24
        start = T0 + 23 * STEP
        home.play(series(start, [64, 63, 64, 65, 64], first_seq=seq0))
        assert home.alarms("low")[0].state is AlarmState.PAUSED
        assert home.events(low.id) == ["raised", "paused"]
        # the pause is over and the glucose is still low: it re-alerts
        home.play(series(start + 5 * STEP, [64, 63], first_seq=seq0 + 5))
        assert home.alarms("low")[0].state is AlarmState.ACTIVE
        assert home.events(low.id)[-1] == "re-alerted"
        # a second pause, during which the low resolves: no re-alert afterwards
        home.http.post(
            f"{home.api}/patients/pt-001/alarms/low/pause", json={"by": "nurse-ann", "minutes": 30}
        )
        home.play(
            series(start + 7 * STEP, [75, 85, 95, 100, 104, 105, 104, 106], first_seq=seq0 + 7)
        )
        assert home.alarms("low")[0].state is AlarmState.RESOLVED
        audit = home.http.get(f"{home.api}/alarms/{low.id}").json()["audit"]
        assert [a["actor"] for a in audit if a["event"] == "paused"] == ["nurse-ann"] * 2
        # The patient's pause and settings log: both pauses, and a refused one.
        r = home.http.post(
            f"{home.api}/patients/pt-001/alarms/urgent_low/pause",
            json={"by": "nurse-ann", "minutes": 60},
        )
        assert r.status_code == 422
        changes = home.http.get(f"{home.api}/patients/pt-001/alarm-audit").json()
        assert [(c["alarm_type"], c["outcome"]) for c in reversed(changes)] == [
            ("low", "done"),
            ("low", "done"),
            ("urgent_low", "refused"),
        ]


def test_stale_glucose_raises_a_technical_alarm_and_no_clinical_one(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with cgm_gateway(broker, make_config) as home:
        home.play(series(T0, [*steady(12), 100, 90, 80]))  # falling when the signal is lost
        home.advance(20 * 60)
        wait_until(lambda: bool(home.alarms("signal_stale", open_only=True)), what="stale alarm")
        (stale,) = home.alarms("signal_stale")
        assert stale.technical
        assert "glucose alarms cannot be raised" in stale.reason
        home.advance(30 * 60)
        assert home.alarms("low") == []
        assert home.alarms("urgent_low") == []
        # data returns: the technical alarm resolves by itself (medium, non-latching)
        back = T0 + 15 * STEP + 50 * 60
        home.play(series(back, [110, 112], first_seq=16))
        assert home.alarms("signal_stale")[0].state is AlarmState.RESOLVED


def test_per_patient_thresholds_are_validated_and_used(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with cgm_gateway(broker, make_config) as home:
        bad = home.http.put(
            f"{home.api}/patients/pt-001/alarm-settings", json={"low_mgdl": 30, "nonsense": 1}
        )
        assert bad.status_code == 422
        assert "low_mgdl" in bad.text
        assert "nonsense" in bad.text
        inconsistent = home.http.put(
            f"{home.api}/patients/pt-001/alarm-settings", json={"high_mgdl": 180}
        )
        assert inconsistent.status_code == 422  # its recovery value (220) would lie above it
        assert "high_clear_mgdl" in inconsistent.text
        ok = home.http.put(
            f"{home.api}/patients/pt-001/alarm-settings",
            json={"high_mgdl": 180, "high_clear_mgdl": 160},
        )
        assert ok.status_code == 200
        assert ok.json()["high_mgdl"] == 180
        home.play(series(T0, [*steady(6, 150), *[190 + 2 * i for i in range(9)]]))
        (high,) = home.alarms("high")
        assert "above 180" in high.reason


def test_a_sensor_session_ending_raises_a_technical_alarm_until_the_sensor_is_changed(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    def status(sent: float, expires: float) -> Message:
        payload = wire.status_pack("cgm-001", sent, 80.0, "1.0", expires)
        return Message(sent, "cgm-001", wire.status_topic("cgm-001"), payload)

    with cgm_gateway(broker, make_config) as home:
        home.play(series(T0, steady(3)))
        home.play([status(T0 + 600, T0 + 600 + 20 * 3600)])  # 20 h left: not yet
        home.advance(10)
        pipeline = home.gw.pipeline
        assert pipeline is not None
        wait_until(lambda: pipeline.alerts.checked_at >= T0 + 610, what="a technical check")
        assert home.alarms("sensor_session_ending") == []
        home.play([status(T0 + 1800, T0 + 1800 + 3 * 3600)])  # 3 h left
        home.advance(10)
        wait_until(lambda: bool(home.alarms("sensor_session_ending")), what="session alarm")
        (ending,) = home.alarms("sensor_session_ending")
        assert ending.technical
        assert "cgm-001: sensor session ends in 3.0 h" in ending.reason
        assert "/devices" in ending.evidence
        (cgm,) = home.http.get(f"{home.api}/devices").json()
        assert cgm["sensor_expires_at"] == to_iso(T0 + 1800 + 3 * 3600)
        assert cgm["battery_pct"] == 80.0
        home.play([status(T0 + 2400, T0 + 2400 + 10 * 86400)])  # a new sensor
        home.advance(10)
        wait_until(
            lambda: home.alarms("sensor_session_ending")[0].state is AlarmState.RESOLVED,
            what="resolved by the new sensor",
        )
