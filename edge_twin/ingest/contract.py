"""The MQTT wire contract between device firmware and the gateway (docs/wire-contract.md).

Topics, keyed by device identity so the broker's ACL can bind a credential to its topics:

    {prefix}/dev/{device_id}/senml    readings: a SenML pack (RFC 8428), QoS 1
    {prefix}/dev/{device_id}/status   battery / firmware: a SenML pack, QoS 1
    {prefix}/dev/{device_id}/online   "1" / "0", retained; "0" is the device's last will
    {prefix}/dev/{device_id}/gatt     a Bluetooth characteristic's value, as a bridge read it
    {prefix}/dev/{device_id}/ns-entries, ns-treatments, ns-devicestatus
                                      a Nightscout upload (the API's /api/v1/ routes)

The device -> patient binding is the gateway's (provisioning), never the payload's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from edge_twin.domain import SIGNALS, Signal


class Channel(StrEnum):
    SENML = "senml"
    STATUS = "status"
    ONLINE = "online"
    GATT = "gatt"  # edge_twin/ingest/gatt.py
    NS_ENTRIES = "ns-entries"  # edge_twin/ingest/nightscout.py
    NS_TREATMENTS = "ns-treatments"
    NS_DEVICESTATUS = "ns-devicestatus"


@dataclass(frozen=True, slots=True)
class Measure:
    """One name of the vocabulary: its signal, accepted units and plausible range."""

    signal: Signal
    units: Mapping[str, Callable[[float], float]]  # unit -> conversion to the canonical unit
    lo: float  # canonical unit; outside [lo, hi] is OUT_OF_RANGE (not physiological)
    hi: float


# The SenML name of a signal is its value (domain.SIGNALS declares the rest).
VOCABULARY: dict[str, Measure] = {
    s.value: Measure(s, spec.wire_units, spec.lo, spec.hi) for s, spec in SIGNALS.items()
}

# Device status names (status channel).
STATUS_BATTERY = "battery"  # unit "%"
STATUS_FIRMWARE = "firmware"  # string value "vs"
# When the sensor in use stops (CGM sessions last ~10 days): device time, unit "s"
# (seconds since the epoch, as "bt"); the gateway warns before it (sensor_session_ending).
STATUS_SENSOR_EXPIRES = "sensor_expires"

# SenML times below 2**28 are relative to "now" (RFC 8428 section 4.5.3). The twin runs on
# the device's own clock, so a reading must carry an absolute time.
SENML_RELATIVE_TIME_LIMIT = 2**28


def topic(prefix: str, device_id: str, channel: Channel) -> str:
    return f"{prefix}/dev/{device_id}/{channel.value}"


def subscription(prefix: str) -> str:
    """What the gateway subscribes to: everything devices publish, wrong topics included,
    so that a misaddressed message is quarantined rather than never seen."""
    return f"{prefix}/dev/#"


@functools.lru_cache(maxsize=4096)  # a home has few topics; bounded against junk ones
def parse_topic(prefix: str, name: str) -> tuple[str, Channel] | None:
    """``{prefix}/dev/{device_id}/{channel}`` -> (device_id, channel); None if not that shape."""
    head = f"{prefix}/dev/"
    if not name.startswith(head):
        return None
    parts = name[len(head) :].split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    try:
        return parts[0], Channel(parts[1])
    except ValueError:
        return None


def finite(value: object) -> float | None:
    """A JSON number as a finite float, or None (bools, strings, NaN, inf, huge ints):
    what every payload format's numbers must be."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
