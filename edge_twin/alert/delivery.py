"""Alarm delivery: each channel is a consumer of the audit log (store/consumers.py),
with its own durable position in it.

    alarm_events after "alarm-mqtt"    -> MQTT  {prefix}/gw/{gateway}/alarms/{patient}
                                           (QoS 1) and, retained, .../{patient}/current
                                           (the open alarms: a display that connects
                                           later shows the present state)
    alarm_events after "alarm-webhook" -> HTTP POST to alert.webhook_url (the care team's
                                           on-call system, signed): webhook.py
    MQTT {prefix}/gw/{gateway}/alarm-cmd/{display} -> acknowledge / pause by a display
                                           (the last level is its broker user name: the
                                           ACL lets it write there only), checked
                                           against its patients; answered on
                                           .../alarm-cmd/{display}/result

Delivery is at least once and in order: an event counts as delivered when the broker
acknowledged it (PUBACK); one published and then lost to a crash before the position moved
is sent again. Receivers deduplicate by ``event_id``.
"""

from __future__ import annotations

import json
import logging
import queue
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_twin.alert.engine import AlarmEngine
from edge_twin.alert.payload import alarm_json, event_json
from edge_twin.alert.webhook import WEBHOOK_CONSUMER
from edge_twin.config import AlertSection, MqttSection, mqtt_password
from edge_twin.errors import BrokerError, EdgeTwinError
from edge_twin.store import Store, alarms, consumers, displays

log = logging.getLogger(__name__)

MQTT_CONSUMER = consumers.Consumer("alarm-mqtt", consumers.Log.ALARM_EVENTS)
MQTT_BATCH = 500
# How far back a channel switched on for the first time starts (open alarms only).
NEW_CHANNEL_S = 86400.0


class AlarmBus:
    """The gateway's MQTT client for alarms (its own connection beside ingest's)."""

    def __init__(self, cfg: MqttSection, gateway_id: str, wait: bool = True) -> None:
        """``wait=False``: do not fail when the broker is away; paho connects when it can
        (nothing is published until then: the events wait in the log)."""
        self.prefix = f"{cfg.topic_prefix}/gw/{gateway_id}"
        self.commands: queue.Queue[tuple[str, bytes]] = queue.Queue()  # (display, command)
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{cfg.client_id}-alarms"[:64],
            protocol=paho.MQTTv5,
        )
        if cfg.username:
            self._client.username_pw_set(cfg.username, mqtt_password(cfg) or None)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        # Alarm events published and not yet acknowledged by the broker, by event id: each
        # is published once and counted delivered on its PUBACK (paho resends it after a
        # reconnect); message ids the broker refused (a negative PUBACK), with the reason.
        self.in_flight: dict[int, paho.MQTTMessageInfo] = {}
        self.refused: dict[int, str] = {}
        if not wait:
            self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
            self._client.loop_start()
            return
        try:
            self._client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except OSError as exc:
            raise BrokerError(f"alarm bus cannot reach {cfg.host}:{cfg.port}: {exc}") from exc
        self._client.loop_start()

    def topic(self, patient_id: str) -> str:
        return f"{self.prefix}/alarms/{patient_id}"

    @property
    def command_topic(self) -> str:
        return f"{self.prefix}/alarm-cmd"

    def result_topic(self, display: str) -> str:
        return f"{self.command_topic}/{display}/result"

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(f"{self.command_topic}/+", qos=1)

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        if reason.is_failure:
            self.refused[mid] = str(reason)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        display = msg.topic.removeprefix(self.command_topic + "/")
        if msg.topic.startswith(self.command_topic + "/") and "/" not in display:
            self.commands.put((display, bytes(msg.payload)))

    def publish(
        self, topic: str, payload: dict[str, Any] | list[Any], retain: bool = False
    ) -> paho.MQTTMessageInfo | None:
        """Queue a QoS 1 publish; None if paho did not take it. Queued is not delivered:
        ``info.is_published()`` turns true with the broker's PUBACK."""
        info = self._client.publish(topic, json.dumps(payload), qos=1, retain=retain)
        return info if info.rc == paho.MQTT_ERR_SUCCESS else None

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def delivery_channels(alert: AlertSection) -> tuple[str, ...]:
    """The alarm delivery channels (log consumer names) the configuration runs."""
    mqtt = (MQTT_CONSUMER.name,) if alert.mqtt else ()
    return mqtt + ((WEBHOOK_CONSUMER.name,) if alert.webhook_url else ())


def register_channel(store: Store, consumer: consumers.Consumer, now: float) -> None:
    """A delivery channel switched on for the first time starts with the last day's events
    of the alarms still open (not months of resolved ones); one that ran before resumes."""
    with store.transaction() as conn:
        consumers.register(conn, consumer, alarms.open_history_start(conn, now - NEW_CHANNEL_S))


def deliver_mqtt(store: Store, bus: AlarmBus, gateway_id: str, now: float) -> int:
    """Publish the events after the channel's position that are not in flight yet, then
    each touched patient's open alarms (retained); move the position past the events the
    broker acknowledged, in order. Never waits: what is still in flight is looked at on
    the next call. Returns how many events became delivered."""
    if not bus.connected:
        return 0  # paho would queue without bound; the position waits for the broker
    pending = alarms.events_after(
        store.conn, consumers.position(store.conn, MQTT_CONSUMER), MQTT_BATCH
    )
    by_id = alarms.get_many(store.conn, {e.alarm_id for e in pending})
    patients: set[str] = set()
    for e in pending:
        a = by_id.get(e.alarm_id)
        if a is None or e.id in bus.in_flight:
            continue
        info = bus.publish(bus.topic(a.patient_id), event_json(e, a, gateway_id))
        if info is None:
            break  # keep the rest for later, in order
        bus.in_flight[e.id] = info
        patients.add(a.patient_id)
    for pid in patients:
        current = [alarm_json(a) for a in alarms.listing(store.conn, pid, open_only=True)]
        bus.publish(f"{bus.topic(pid)}/current", current, retain=True)
    through: int | None = None
    delivered = 0
    refused: str | None = None
    for e in pending:  # the acknowledged prefix, in order
        info = bus.in_flight.get(e.id)
        if e.alarm_id in by_id:
            if info is None or not info.is_published():
                break
            del bus.in_flight[e.id]
            refused = bus.refused.pop(info.mid, None)
            if refused is not None:
                break  # published again next time; /health shows the failures
            delivered += 1
        through = e.id
    failures = 0
    if through is not None or refused is not None:
        with store.transaction() as conn:
            if through is not None:
                consumers.advance(conn, MQTT_CONSUMER, through, now)
            if refused is not None:
                why = f"broker refused: {refused}"
                failures = consumers.record_failure(conn, MQTT_CONSUMER, why, now)
    if failures == 1 or (failures and failures % 1000 == 0):  # tried again ~4 times a second
        log.error("the broker refused an alarm event (%d times in a row): %s", failures, refused)
    return delivered


def handle_command(
    store: Store, engine: AlarmEngine, display: str, payload: bytes, now: float
) -> dict[str, Any]:
    """A command from the display whose broker user name is ``display`` (the topic's last
    level, which the broker's ACL reserves to it):
    {"action": "acknowledge", "alarm_id": 3, "reason": "..."} or
    {"action": "pause", "patient_id": "pt-001", "type": "low", "minutes": 30, "reason": ...}.
    The actor is the display; a "by" in the message is kept in the reason as what the
    display said, not as who acted. Only its own patients' alarms."""
    try:
        who = displays.get(store, display)
        if who is None or who.disabled:
            raise ValueError(f"{display!r} is not a display of this gateway (edge-twin displays)")
        cmd = json.loads(payload)
        if not isinstance(cmd, dict):
            raise ValueError("a command is a JSON object")
        reason = str(cmd.get("reason", ""))
        if cmd.get("by"):
            reason = f"{reason} (said by {str(cmd['by'])[:64]})".strip()
        action = cmd.get("action")
        if action == "acknowledge":
            alarm_id = int(cmd["alarm_id"])
            found = alarms.get(store.conn, alarm_id)
            if found is None or found.patient_id not in who.patients:
                raise ValueError(f"no alarm {alarm_id}")  # another's alarm: the same answer
            a = engine.acknowledge(alarm_id, display, reason, now)
        elif action == "pause":
            minutes = float(cmd["minutes"])
            if not 1 <= minutes <= 24 * 60:
                raise ValueError("minutes must be from 1 to 1440")
            patient = str(cmd["patient_id"])
            if patient not in who.patients:
                raise ValueError(f"{display} does not show {patient}'s alarms")
            paused = engine.pause(
                patient, str(cmd["type"]), now + minutes * 60, display, reason, now
            )
            return {
                "ok": True,
                "action": action,
                "alarm": None if paused is None else alarm_json(paused),
            }
        else:
            raise ValueError(f"unknown action {action!r}: use acknowledge or pause")
        return {"ok": True, "action": action, "alarm": alarm_json(a)}
    except (ValueError, KeyError, TypeError, EdgeTwinError) as exc:
        return {"ok": False, "error": str(exc)}
