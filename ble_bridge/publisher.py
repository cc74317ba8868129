"""One MQTT client per bridged device, with that device's own broker credential (its ACL
lets it write only its own topics), publishing its values on its ``gatt`` channel
(docs/wire-contract.md). A batch counts as delivered at the broker's PUBACK; until then
the bridge keeps it (and does not advance the device's backfill position)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin.errors import BrokerError
from edge_twin.ingest import Channel, topic

PUBLISH_TIMEOUT_S = 10.0
MAX_BATCH = 200  # values per message (well inside the broker's packet limit)


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    host: str
    port: int
    prefix: str = "et/v1"
    ca_file: str = ""  # the gateway CA's certificate: TLS, this CA only
    username: str = ""
    password: str = ""


class DevicePublisher:
    def __init__(self, device_id: str, access: BrokerAccess) -> None:
        self.device_id = device_id
        self._topic = topic(access.prefix, device_id, Channel.GATT)
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"ble-{device_id}",
            protocol=paho.MQTTv5,
        )
        if access.username:
            client.username_pw_set(access.username, access.password or None)
        if access.ca_file:
            client.tls_set(ca_certs=access.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client = client
        self._access = access

    def start(self) -> None:
        try:
            self._client.connect(self._access.host, self._access.port, keepalive=60)
        except OSError as exc:
            raise BrokerError(
                f"{self.device_id}: cannot reach the broker at"
                f" {self._access.host}:{self._access.port}: {exc}"
            ) from exc
        self._client.loop_start()

    def publish(self, values: list[dict[str, Any]]) -> None:
        """Publish ``values`` (QoS 1) and wait for the broker's PUBACKs; BrokerError if
        they do not come (then the caller keeps the values)."""
        for at in range(0, len(values), MAX_BATCH):
            payload = json.dumps(values[at : at + MAX_BATCH]).encode()
            info = self._client.publish(self._topic, payload, qos=1)
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                raise BrokerError(f"{self.device_id}: publish failed: {exc}") from exc
            if not info.is_published():
                raise BrokerError(f"{self.device_id}: no PUBACK within {PUBLISH_TIMEOUT_S:g} s")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def read_password(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip() if path else ""
