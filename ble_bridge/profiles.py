"""What the bridge reads from each kind of device: standard Bluetooth SIG services only.

A proprietary device (most CGMs) is not here: it reaches the gateway through its phone
app and the Nightscout upload endpoint (docs/devices.md).
"""

from __future__ import annotations

from dataclasses import dataclass

BATTERY_LEVEL = "2a19"
RACP = "2a52"
CGM_SESSION_START = "2aaa"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    service: str  # the service a scan looks for (16-bit UUID, hex)
    measurements: tuple[str, ...]  # characteristics subscribed to (notify or indicate)
    device_type: str  # what the device is provisioned as on the gateway
    stored_records: bool = False  # a Record Access Control Point to fetch stored records
    streams: bool = False  # sends continuously: the bridge stays connected


PROFILES = {
    p.name: p
    for p in (
        Profile("blood_pressure", "1810", ("2a35",), "bp_cuff"),
        Profile("weight_scale", "181d", ("2a9d",), "scale"),
        Profile("glucose", "1808", ("2a18",), "glucose_meter", stored_records=True),
        Profile("cgm", "181f", ("2aa7",), "cgm", stored_records=True, streams=True),
        Profile("heart_rate", "180d", ("2a37",), "wrist", streams=True),
        Profile("pulse_oximeter", "1822", ("2a5e", "2a5f"), "pulse_oximeter", streams=True),
    )
}
SERVICE_NAMES = {p.service: p.name for p in PROFILES.values()}


def full_uuid(short: str) -> str:
    """A 16-bit SIG UUID in its 128-bit form (what bleak reports and takes)."""
    return f"0000{short}-0000-1000-8000-00805f9b34fb"


def short_uuid(uuid: str) -> str:
    text = uuid.lower()
    if len(text) == 36 and text.endswith("-0000-1000-8000-00805f9b34fb"):
        return text[4:8]
    return text.removeprefix("0x")


# Record Access Control Point (Glucose and CGM services).
RACP_REPORT = 0x01
RACP_RESPONSE = 0x06
RACP_ALL = 0x01
RACP_AT_LEAST = 0x03
RACP_SUCCESS = 0x01
RACP_NO_RECORDS = 0x06
FILTER_SEQUENCE = 0x01  # glucose: sequence number
FILTER_TIME_OFFSET = 0x01  # CGM: time offset in minutes


def racp_request(after: int | None) -> bytes:
    """Report the stored records newer than ``after`` (all when None): '>=' is inclusive,
    so ask from the next one (a record sent again is stored once anyway)."""
    if after is None:
        return bytes([RACP_REPORT, RACP_ALL])
    return bytes([RACP_REPORT, RACP_AT_LEAST, FILTER_SEQUENCE]) + ((after + 1) & 0xFFFF).to_bytes(
        2, "little"
    )


def racp_done(value: bytes) -> bool | None:
    """A RACP indication: True (records sent), False (none to send), None (not an end)."""
    if len(value) >= 4 and value[0] == RACP_RESPONSE and value[2] == RACP_REPORT:
        return value[3] in (RACP_SUCCESS, RACP_NO_RECORDS)
    return None


def record_sequence(characteristic: str, value: bytes) -> int | None:
    """The stored record's number: a glucose record's sequence number, a CGM record's
    time offset (minutes); None for others."""
    if characteristic == "2a18" and len(value) >= 3:
        return int.from_bytes(value[1:3], "little")
    if characteristic == "2aa7" and len(value) >= 6:
        return int.from_bytes(value[4:6], "little")
    return None
