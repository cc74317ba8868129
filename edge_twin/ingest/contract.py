"""The MQTT wire contract between device firmware and the gateway (docs/wire-contract.md).

Topics, keyed by device identity so the broker's ACL can bind a credential to its topics:

    {prefix}/dev/{device_id}/senml    readings: a SenML pack (RFC 8428), QoS 1
    {prefix}/dev/{device_id}/status   battery / firmware: a SenML pack, QoS 1
    {prefix}/dev/{device_id}/online   "1" / "0", retained; "0" is the device's last will

The device -> patient binding is the gateway's (provisioning), never the payload's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from edge_twin.domain import Signal

MMOL_TO_MGDL = 18.0182  # glucose molar mass 180.16 g/mol
KPA_TO_MMHG = 7.50062
LB_TO_KG = 0.45359237


class Channel(StrEnum):
    SENML = "senml"
    STATUS = "status"
    ONLINE = "online"


@dataclass(frozen=True, slots=True)
class Measure:
    """One name of the vocabulary: its signal, accepted units and plausible range."""

    signal: Signal
    units: dict[str, Callable[[float], float]]  # unit -> conversion to the canonical unit
    lo: float  # canonical unit; outside [lo, hi] is OUT_OF_RANGE (not physiological)
    hi: float


def _same(v: float) -> float:
    return v


VOCABULARY: dict[str, Measure] = {
    "glucose": Measure(
        Signal.GLUCOSE, {"mg/dL": _same, "mmol/L": lambda v: v * MMOL_TO_MGDL}, 20.0, 600.0
    ),
    "systolic": Measure(
        Signal.SYSTOLIC,
        {"mmHg": _same, "mm[Hg]": _same, "kPa": lambda v: v * KPA_TO_MMHG},
        40.0,
        300.0,
    ),
    "diastolic": Measure(
        Signal.DIASTOLIC,
        {"mmHg": _same, "mm[Hg]": _same, "kPa": lambda v: v * KPA_TO_MMHG},
        20.0,
        200.0,
    ),
    "heart_rate": Measure(
        Signal.HEART_RATE, {"1/min": _same, "beat/min": _same, "/min": _same}, 20.0, 300.0
    ),
    "spo2": Measure(Signal.SPO2, {"%": _same, "/": lambda v: v * 100.0}, 50.0, 100.0),
    "resp_rate": Measure(Signal.RESP_RATE, {"1/min": _same, "/min": _same}, 2.0, 80.0),
    "weight": Measure(
        Signal.WEIGHT,
        {"kg": _same, "g": lambda v: v / 1000.0, "lb": lambda v: v * LB_TO_KG},
        10.0,
        400.0,
    ),
    "skin_temp": Measure(Signal.SKIN_TEMP, {"Cel": _same, "K": lambda v: v - 273.15}, 15.0, 45.0),
    "steps": Measure(Signal.STEPS, {"count": _same}, 0.0, 100_000.0),
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
