"""Publishing a home over MQTT, one client per device (its own identity and last will).

Pacing: with a clock, each message is sent when simulated time reaches its device time;
without one, as fast as the broker takes them. The in-flight window is bounded so a fast
run does not queue unboundedly inside paho (docs/performance.md).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim import wire
from firmware_sim.home import SimDevice
from firmware_sim.messages import Message

MAX_IN_FLIGHT = 1000


class SimError(Exception):
    """The simulator could not do what it was asked (broker unreachable, ...)."""


class PacingClock(Protocol):
    """What pacing needs of a clock: how long to sleep (wall s) until device time t."""

    def wall_seconds_until(self, t: float) -> float: ...


class HomePublisher:
    def __init__(
        self,
        host: str,
        port: int,
        devices: Sequence[SimDevice],
        qos: int = 1,
        prefix: str = wire.DEFAULT_PREFIX,
        passwords: dict[str, str] | None = None,
        ca_cert: str | None = None,
    ) -> None:
        """``passwords``: device id -> password; the device id is the MQTT user name.
        ``ca_cert``: connect with TLS, trusting this CA only (the gateway's; the host name
        is checked against the broker's certificate)."""
        self.host, self.port, self.qos = host, port, qos
        self._clients: dict[str, paho.Client] = {}
        for device in devices:
            client = paho.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=f"sim-{device.device_id}",
                protocol=paho.MQTTv5,
            )
            client.will_set(wire.online_topic(device.device_id, prefix), b"0", qos=1, retain=True)
            if passwords is not None:
                client.username_pw_set(device.device_id, passwords[device.device_id])
            if ca_cert is not None:
                client.tls_set(ca_certs=ca_cert)
            self._clients[device.device_id] = client
        self._in_flight: deque[paho.MQTTMessageInfo] = deque()
        self.published = 0

    def connect(self, timeout: float = 10.0) -> None:
        for device_id, client in self._clients.items():
            try:
                client.connect(self.host, self.port, keepalive=30)
            except OSError as exc:
                raise SimError(
                    f"cannot reach the broker at {self.host}:{self.port}: {exc}"
                ) from exc
            client.loop_start()
            deadline = time.monotonic() + timeout
            while not client.is_connected():
                if time.monotonic() > deadline:
                    raise SimError(f"device {device_id}: no CONNACK within {timeout:g} s")
                time.sleep(0.005)

    def publish(
        self,
        messages: Iterable[Message],
        pace: Callable[[float], None] | None = None,
        progress: Callable[[Message], None] | None = None,
    ) -> int:
        """Publish in order; ``pace(t)`` blocks until it is time to send a message of
        device time t. Returns how many were published."""
        for message in messages:
            if pace is not None:
                pace(message.t)
            self.send(message)
            if progress is not None:
                progress(message)
        self.flush()
        return self.published

    def send(self, message: Message) -> None:
        client = self._clients[message.device_id]
        info = client.publish(message.topic, message.payload, qos=self.qos, retain=message.retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise SimError(f"publish to {message.topic} failed: {paho.error_string(info.rc)}")
        self.published += 1
        self._in_flight.append(info)
        while len(self._in_flight) > MAX_IN_FLIGHT:
            self._in_flight.popleft().wait_for_publish(timeout=30)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker has acknowledged everything sent."""
        while self._in_flight:
            self._in_flight.popleft().wait_for_publish(timeout=timeout)

    def close(self) -> None:
        """A clean disconnect: the broker does not publish the devices' last wills."""
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> HomePublisher:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def paced_by(clock: PacingClock) -> Callable[[float], None]:
    def pace(t: float) -> None:
        wait = clock.wall_seconds_until(t)
        if wait > 0:
            time.sleep(wait)

    return pace
