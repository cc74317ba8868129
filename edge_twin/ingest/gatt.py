"""Bluetooth SIG health profiles: characteristic values -> measurements. Pure, never raises.

A Bluetooth bridge (``ble_bridge``) publishes what it read from a device, unchanged, on
the device's ``gatt`` channel, a JSON array of values:

    [{"uuid": "2a35", "value": "1e8a00580078...", "at": 1790000000.5,
      "session_start": "e207041...", "user": 1}, ...]

``at``: when the bridge received it (epoch s; the time of a value that carries none);
``session_start``: a CGM's Session Start Time (0x2AAA) value, for its time offsets;
``user``: the patient's user index on a shared cuff or scale (others' records are refused).
The gateway decodes here so that a bad value is quarantined with its raw bytes and can be
decoded again after a fix (``edge-twin reprocess``).

Layouts follow the SIG's GATT definitions; the tests check them byte for byte against
published vectors (tests/test_gatt.py). IEEE 11073-20601 SFLOAT/FLOAT: a signed exponent
and mantissa, two's complement; NaN, NRes, +-INF and the reserved value are no number.
A Date Time (0x2A08) has no zone: it is the device's wall clock, read in the home's zone
(``api.time_zone``). A device that says its value is beyond what it can measure (a meter's
"LO"/"HI") gives the end of the plausible range, flagged: a low must never vanish.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from edge_twin.domain import (
    KPA_TO_MMHG,
    LB_TO_KG,
    MMOL_TO_MGDL,
    SIGNALS,
    Measurement,
    Rejection,
    Signal,
)
from edge_twin.domain import RejectReason as R

BLOOD_PRESSURE = "2a35"
INTERMEDIATE_CUFF_PRESSURE = "2a36"
WEIGHT = "2a9d"
GLUCOSE = "2a18"
CGM = "2aa7"
HEART_RATE = "2a37"
PLX_SPOT_CHECK = "2a5e"
PLX_CONTINUOUS = "2a5f"
BATTERY = "2a19"

_SFLOAT_SPECIAL = {
    0x07FF: "NaN",
    0x0800: "NRes",
    0x07FE: "+INF",
    0x0802: "-INF",
    0x0801: "reserved",
}
_FLOAT_SPECIAL = {
    0x007FFFFF: "NaN",
    0x00800000: "NRes",
    0x007FFFFE: "+INF",
    0x00800002: "-INF",
    0x00800001: "reserved",
}
SFLOAT_PLUS_INF, SFLOAT_MINUS_INF = 0x07FE, 0x0802
UNKNOWN_USER = 255
SIG_BASE = "-0000-1000-8000-00805f9b34fb"
MAX_VALUES = 2048  # values in one message


class Refused(Exception):
    """A value this module cannot turn into measurements, with the quarantine reason."""

    def __init__(self, reason: R, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sfloat(raw: int) -> float:
    """IEEE 11073 16-bit SFLOAT (the raw little-endian word) -> float."""
    if raw in _SFLOAT_SPECIAL:
        raise Refused(R.BAD_VALUE, f"SFLOAT {_SFLOAT_SPECIAL[raw]}")
    exponent = raw >> 12
    mantissa = raw & 0x0FFF
    exponent -= 16 if exponent >= 8 else 0
    mantissa -= 4096 if mantissa >= 2048 else 0
    return mantissa * 10.0**exponent if exponent >= 0 else mantissa / 10.0**-exponent


def float32(raw: int) -> float:
    """IEEE 11073 32-bit FLOAT (the raw little-endian word) -> float."""
    if raw in _FLOAT_SPECIAL:
        raise Refused(R.BAD_VALUE, f"FLOAT {_FLOAT_SPECIAL[raw]}")
    exponent = raw >> 24
    mantissa = raw & 0xFFFFFF
    exponent -= 256 if exponent >= 128 else 0
    mantissa -= 1 << 24 if mantissa >= 1 << 23 else 0
    return mantissa * 10.0**exponent if exponent >= 0 else mantissa / 10.0**-exponent


def crc_mcrf4xx(data: bytes, crc: int = 0xFFFF) -> int:
    """The CGM service's E2E-CRC: CRC-CCITT, seed 0xFFFF, reflected (CRC-16/MCRF4XX)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


class Reader:
    """Fields in order from a value; a value too short is refused, not indexed past."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.value):
            raise Refused(R.MALFORMED, f"{len(self.value)} bytes: too short for its {what}")
        out = self.value[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def s8(self, what: str) -> int:
        return int(struct.unpack("<b", self.take(1, what))[0])

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def s16(self, what: str) -> int:
        return int(struct.unpack("<h", self.take(2, what))[0])

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "little")

    def sfloat(self, what: str) -> float:
        raw = self.u16(what)
        try:
            return sfloat(raw)
        except Refused as exc:
            raise Refused(exc.reason, f"{what}: {exc.detail}") from None

    def date_time(self, zone: ZoneInfo | timezone, what: str) -> float | None:
        """A Date Time (0x2A08) as epoch s in ``zone``; None when the device does not know
        the date (year, month or day 0)."""
        year, month, day, hour, minute, second = struct.unpack("<HBBBBB", self.take(7, what))
        if not (year and month and day):
            return None
        try:
            return datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()
        except ValueError:
            raise Refused(
                R.BAD_TIME, f"{what} {year}-{month}-{day} {hour}:{minute}:{second}"
            ) from None


@dataclass(slots=True)
class Parsed:
    measurements: list[tuple[int, Measurement]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    battery_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Value:
    """One characteristic value as the bridge sent it."""

    uuid: str
    value: bytes
    at: float
    session_start: bytes | None = None
    user: int | None = None


def _user(reader: Reader, expected: int | None) -> None:
    user = reader.u8("user id")
    if expected is not None and user != expected:
        who = "an unknown user" if user == UNKNOWN_USER else f"user {user}"
        raise Refused(R.NOT_ALLOWED, f"a measurement of {who}; the patient is user {expected}")


def _beyond(raw: int) -> bool | None:
    """An SFLOAT -INF (True: below what the device measures) or +INF (False: above)."""
    return {SFLOAT_MINUS_INF: True, SFLOAT_PLUS_INF: False}.get(raw)


def _edge(signal: Signal, low: bool) -> float:
    """A value beyond what the device can measure, as the plausible range's end."""
    spec = SIGNALS[signal]
    return spec.lo if low else spec.hi


def blood_pressure(v: Value, zone: ZoneInfo) -> list[Measurement]:
    r = Reader(v.value)
    flags = r.u8("flags")
    scale = KPA_TO_MMHG if flags & 0x01 else 1.0
    systolic = r.sfloat("systolic") * scale
    diastolic = r.sfloat("diastolic") * scale
    r.sfloat("mean arterial pressure")
    t = (r.date_time(zone, "time stamp") if flags & 0x02 else None) or v.at
    pulse = r.sfloat("pulse rate") if flags & 0x04 else None
    if flags & 0x08:
        _user(r, v.user)
    caution = False
    if flags & 0x10:
        status = r.u16("measurement status")
        # Body movement, cuff too loose, irregular pulse, pulse out of range, position.
        caution = bool(status & 0x003F)
    out = [
        Measurement(Signal.SYSTOLIC, t, systolic, caution=caution),
        Measurement(Signal.DIASTOLIC, t, diastolic, caution=caution),
    ]
    if pulse is not None:
        out.append(Measurement(Signal.HEART_RATE, t, pulse, caution=caution))
    return out


def weight(v: Value, zone: ZoneInfo) -> list[Measurement]:
    r = Reader(v.value)
    flags = r.u8("flags")
    raw = r.u16("weight")
    t = (r.date_time(zone, "time stamp") if flags & 0x02 else None) or v.at
    if flags & 0x04:
        _user(r, v.user)
    if raw == 0xFFFF:
        raise Refused(R.BAD_VALUE, "the scale says the measurement was unsuccessful")
    kg = raw * 0.01 * LB_TO_KG if flags & 0x01 else raw * 0.005
    return [Measurement(Signal.WEIGHT, t, kg)]


# Glucose sensor status annunciation: bits that mean there is no usable result.
_GLUCOSE_FAILURES = {
    0x0002: "sensor malfunction",
    0x0004: "sample size insufficient",
    0x0008: "strip insertion error",
    0x0010: "strip type incorrect",
    0x0200: "read interrupted",
    0x0400: "general device fault",
}
_GLUCOSE_HIGH, _GLUCOSE_LOW = 0x0020, 0x0040  # beyond what the meter can process
_GLUCOSE_CAUTION = 0x0180 | 0x0800  # temperature too high / low, time fault
_CONTROL_SOLUTION = 10  # sample type; location 4 is the same


def glucose(v: Value, zone: ZoneInfo) -> list[Measurement]:
    r = Reader(v.value)
    flags = r.u8("flags")
    seq = r.u16("sequence number")
    base = r.date_time(zone, "base time")
    if base is None:
        raise Refused(R.BAD_TIME, f"record {seq}: the meter does not know the date")
    offset = r.s16("time offset") if flags & 0x01 else 0
    t = base + offset * 60.0
    if not flags & 0x02:
        raise Refused(R.BAD_VALUE, f"record {seq} carries no concentration")
    raw = r.u16("concentration")
    kind = r.u8("type and sample location")
    status = r.u16("sensor status annunciation") if flags & 0x08 else 0
    if kind & 0x0F == _CONTROL_SOLUTION or kind >> 4 == 4:
        raise Refused(R.NOT_ALLOWED, f"record {seq} is a control-solution test")
    failures = [text for bit, text in _GLUCOSE_FAILURES.items() if status & bit]
    if failures:
        raise Refused(R.BAD_VALUE, f"record {seq}: the meter reports {', '.join(failures)}")
    beyond = _beyond(raw)
    if status & (_GLUCOSE_HIGH | _GLUCOSE_LOW) or beyond is not None:
        low = bool(status & _GLUCOSE_LOW) if beyond is None else beyond
        return [Measurement(Signal.GLUCOSE, t, _edge(Signal.GLUCOSE, low), seq, caution=True)]
    value = sfloat(raw)
    # Rounded: 132e-5 kg/L is 132 mg/dL, not 132.00000000000003.
    mgdl = round(value * 1000.0 * MMOL_TO_MGDL if flags & 0x04 else value * 1e5, 6)
    return [Measurement(Signal.GLUCOSE, t, mgdl, seq, caution=bool(status & _GLUCOSE_CAUTION))]


def session_start(value: bytes) -> float:
    """CGM Session Start Time (0x2AAA) -> epoch s: a Date Time with its own zone."""
    r = Reader(value)
    raw = r.take(7, "start time")
    zone_q = r.s8("time zone")
    dst = r.u8("DST offset")
    if len(value) == 11 and crc_mcrf4xx(value[:9]) != int.from_bytes(value[9:], "little"):
        raise Refused(R.BAD_VALUE, "session start time: E2E-CRC mismatch")
    if zone_q == -128:
        raise Refused(R.BAD_TIME, "session start time: time zone unknown")
    # The Time Zone characteristic's range: UTC-12:00 to UTC+14:00 in quarter hours.
    if not -48 <= zone_q <= 56:
        raise Refused(R.BAD_TIME, f"session start time: time zone {zone_q} out of range")
    dst_h = {0: 0.0, 2: 0.5, 4: 1.0, 8: 2.0}.get(dst)
    if dst_h is None:
        raise Refused(R.BAD_TIME, f"session start time: DST offset {dst} unknown")
    offset = timezone(timedelta(minutes=15 * zone_q) + timedelta(hours=dst_h))
    start = Reader(raw).date_time(offset, "session start time")
    if start is None:
        raise Refused(R.BAD_TIME, "session start time: date unknown")
    return start


_CGM_FAILURES = {0x01: "session stopped", 0x04: "sensor type incorrect", 0x08: "sensor malfunction"}
_CGM_GENERAL_FAULT = 0x20
_CGM_BELOW_RANGE, _CGM_ABOVE_RANGE = 0x40, 0x80  # in the warning octet


def cgm_records(v: Value) -> list[Measurement]:
    """One notification of CGM Measurement (0x2AA7): one or more records back to back."""
    if v.session_start is None:
        raise Refused(R.BAD_TIME, "a CGM value needs its session start time")
    start = session_start(v.session_start)
    if not v.value:
        raise Refused(R.MALFORMED, "an empty CGM value holds no record")
    out: list[Measurement] = []
    pos = 0
    while pos < len(v.value):
        size = v.value[pos]
        record = v.value[pos : pos + size]
        if size < 6 or len(record) < size:
            raise Refused(R.MALFORMED, f"CGM record at byte {pos}: size {size} does not fit")
        out.append(_cgm_record(record, start))
        pos += size
    return out


def _cgm_record(record: bytes, start: float) -> Measurement:
    r = Reader(record)
    r.u8("size")
    flags = r.u8("flags")
    raw = r.u16("glucose")
    minutes = r.u16("time offset")
    octets = {
        bit: r.u8(name)
        for bit, name in ((0x80, "status"), (0x40, "cal/temp"), (0x20, "warning"))
        if flags & bit
    }
    if flags & 0x01:
        r.sfloat("trend")
    if flags & 0x02:
        r.sfloat("quality")
    rest = len(record) - r.pos
    if rest == 2:
        if crc_mcrf4xx(record[:-2]) != int.from_bytes(record[-2:], "little"):
            raise Refused(R.BAD_VALUE, f"CGM record at {minutes} min: E2E-CRC mismatch")
    elif rest:
        raise Refused(R.MALFORMED, f"CGM record at {minutes} min: {rest} bytes left over")
    t = start + minutes * 60.0
    status = octets.get(0x80, 0)
    failures = [text for bit, text in _CGM_FAILURES.items() if status & bit]
    if status & _CGM_GENERAL_FAULT:
        failures.append("general device fault")
    if failures:
        raise Refused(R.BAD_VALUE, f"CGM record at {minutes} min: {', '.join(failures)}")
    warning = octets.get(0x20, 0)
    beyond = _beyond(raw)
    if warning & (_CGM_BELOW_RANGE | _CGM_ABOVE_RANGE) or beyond is not None:
        low = bool(warning & _CGM_BELOW_RANGE) if beyond is None else beyond
        return Measurement(Signal.GLUCOSE, t, _edge(Signal.GLUCOSE, low), minutes, caution=True)
    caution = bool(octets.get(0x40, 0))  # calibration or temperature trouble
    return Measurement(Signal.GLUCOSE, t, sfloat(raw), minutes, caution=caution)


def heart_rate(v: Value) -> list[Measurement]:
    r = Reader(v.value)
    flags = r.u8("flags")
    bpm = r.u16("heart rate") if flags & 0x01 else r.u8("heart rate")
    if flags & 0x06 == 0x04:
        raise Refused(R.BAD_VALUE, "the strap reports no skin contact")
    if flags & 0x08:
        r.u16("energy expended")
    if flags & 0x10 and (len(v.value) - r.pos < 2 or (len(v.value) - r.pos) % 2):
        raise Refused(R.MALFORMED, "RR intervals announced but not whole")
    return [Measurement(Signal.HEART_RATE, v.at, float(bpm))]


# PLX measurement status: the value is not the patient's, or not to be used.
_PLX_UNUSABLE = {
    0x0400: "demonstration data",
    0x0800: "testing data",
    0x2000: "measurement unavailable",
    0x8000: "invalid",
}
# PLX device and sensor status: the sensor is not measuring the patient.
_PLX_SENSOR_FAILURES = {
    0x0002: "equipment malfunction",
    0x0800: "sensor unconnected",
    0x4000: "sensor malfunctioning",
    0x8000: "sensor disconnected",
}
_PLX_QUESTIONABLE = 0x4000 | 0x0040  # questionable; early estimate


def plx(v: Value, zone: ZoneInfo, continuous: bool) -> list[Measurement]:
    r = Reader(v.value)
    flags = r.u8("flags")
    spo2 = r.sfloat("SpO2")
    pulse = r.sfloat("pulse rate")
    t = v.at
    if continuous:
        for bit, name in ((0x01, "fast"), (0x02, "slow")):
            if flags & bit:
                r.sfloat(f"SpO2 {name}")
                r.sfloat(f"pulse rate {name}")
        status_bit, device_bit = 0x04, 0x08
    else:
        if flags & 0x01:
            stamped = r.date_time(zone, "time stamp")
            clock_set = not flags & 0x10
            t = stamped if stamped is not None and clock_set else v.at
        status_bit, device_bit = 0x02, 0x04
    status = r.u16("measurement status") if flags & status_bit else 0
    device = r.u24("device and sensor status") if flags & device_bit else 0
    unusable = [text for bit, text in _PLX_UNUSABLE.items() if status & bit]
    unusable += [text for bit, text in _PLX_SENSOR_FAILURES.items() if device & bit]
    if unusable:
        raise Refused(R.BAD_VALUE, f"the oximeter reports {', '.join(unusable)}")
    caution = bool(status & _PLX_QUESTIONABLE or device & 0x00FFFE)
    return [
        Measurement(Signal.SPO2, t, spo2, caution=caution),
        Measurement(Signal.HEART_RATE, t, pulse, caution=caution),
    ]


def battery(v: Value) -> float:
    if len(v.value) != 1 or v.value[0] > 100:
        raise Refused(R.BAD_VALUE, f"battery level {v.value.hex()}: one byte, 0-100")
    return float(v.value[0])


def measurements(v: Value, zone: ZoneInfo) -> list[Measurement]:
    """The measurements in one value; Refused says why there are none."""
    if v.uuid == BLOOD_PRESSURE:
        return blood_pressure(v, zone)
    if v.uuid == WEIGHT:
        return weight(v, zone)
    if v.uuid == GLUCOSE:
        return glucose(v, zone)
    if v.uuid == CGM:
        return cgm_records(v)
    if v.uuid == HEART_RATE:
        return heart_rate(v)
    if v.uuid in (PLX_SPOT_CHECK, PLX_CONTINUOUS):
        return plx(v, zone, continuous=v.uuid == PLX_CONTINUOUS)
    if v.uuid == INTERMEDIATE_CUFF_PRESSURE:
        return []  # the cuff inflating: progress, not a measurement
    raise Refused(R.UNKNOWN_MEASUREMENT, f"characteristic {v.uuid} is not a health measurement")


def _value(doc: Any) -> Value:
    if not isinstance(doc, dict):
        raise Refused(R.MALFORMED, "a value is a JSON object")
    uuid, hexed, at = doc.get("uuid"), doc.get("value"), doc.get("at")
    if not isinstance(uuid, str) or not isinstance(hexed, str) or len(hexed) > 1024:
        raise Refused(R.MALFORMED, "a value needs uuid and value (hex, at most 512 bytes)")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise Refused(R.BAD_TIME, "a value needs at (epoch s when the bridge received it)")
    start, user = doc.get("session_start"), doc.get("user")
    try:
        raw = bytes.fromhex(hexed)
        started = bytes.fromhex(start) if isinstance(start, str) else None
    except ValueError:
        raise Refused(R.MALFORMED, "value and session_start are hex strings") from None
    if user is not None and not (isinstance(user, int) and 0 <= user <= 255):
        raise Refused(R.MALFORMED, "user is the patient's user index on the device, 0-255")
    short = uuid.lower().removeprefix("0x")
    if len(short) == 36 and short.endswith(SIG_BASE):
        short = short[4:8]  # a SIG UUID in its 128-bit form
    return Value(short, raw, float(at), started, user)


def decode(payload: bytes, zone: ZoneInfo, time_floor: float) -> Parsed:
    """A ``gatt`` message -> measurements (with the index of the value they came from),
    the battery level if one was sent, and a rejection for each value refused."""
    out = Parsed()
    try:
        docs = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        out.rejections.append(Rejection(R.MALFORMED, f"not UTF-8 JSON: {exc}"[:300]))
        return out
    if not isinstance(docs, list) or not docs or len(docs) > MAX_VALUES:
        out.rejections.append(Rejection(R.MALFORMED, f"a JSON array of 1-{MAX_VALUES} values"))
        return out
    for index, doc in enumerate(docs):
        try:
            v = _value(doc)
            if v.uuid == BATTERY:
                out.battery_pct = battery(v)
                continue
            found = measurements(v, zone)
        except Refused as exc:
            out.rejections.append(Rejection(exc.reason, f"{exc.detail}"[:300], index))
            continue
        for m in found:
            if not math.isfinite(m.t) or m.t < time_floor:
                out.rejections.append(Rejection(R.BAD_TIME, "no absolute time", index))
                break
        else:
            out.measurements += [(index, m) for m in found]
    return out
