"""A message as a device sends it over MQTT."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    t: float  # true time at which the broker receives it (send time, after any delay)
    device_id: str
    topic: str
    payload: bytes
    retain: bool = False
