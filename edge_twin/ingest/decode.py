"""Decoding one MQTT message into readings or rejections. Never raises.

    (topic, payload bytes, received_at) -> Decoded(readings, rejections, status)

A pack with some bad records keeps its good ones; each bad record is quarantined on its
own (with the raw message and the record's index). Whole-message problems (too big, not
JSON, not SenML, wrong topic, unknown device) quarantine the whole message.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from edge_twin.domain import (
    Device,
    DeviceStatus,
    DeviceType,
    Measurement,
    Reading,
    ReadingFlag,
    Rejection,
    Signal,
    Treatment,
)
from edge_twin.domain import RejectReason as R
from edge_twin.ingest import contract, gatt, nightscout
from edge_twin.ingest.contract import Channel, finite


@dataclass(slots=True)
class Decoded:
    device_id: str | None = None
    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    status: DeviceStatus | None = None
    treatments: list[Treatment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int
    backfill_after_s: float
    future_tolerance_s: float
    clock_skew_tolerance_s: float = 120.0
    # The home's zone: Bluetooth devices stamp their wall clock, without a zone.
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))


# Clock offset estimate: the smallest (gateway time - newest device time) over a device's
# recent messages. A device sends its newest reading as soon as it takes it, so the
# smallest lag is transport delay plus clock offset; backfills and delays only add to it.
# A slow clock and a backlog look alike in one message; they differ over time: a skew
# persists, a backlog drains in seconds. So the estimate needs messages received over at
# least OFFSET_MIN_SPAN_S of gateway time within the last OFFSET_WINDOW_S.
OFFSET_WINDOW = 64
OFFSET_WINDOW_S = 6 * 3600.0
OFFSET_MIN_SPAN_S = 15 * 60.0
OFFSET_REPORT_STEP_S = 1.0

# Uploads through the API are bounded there (ingest.max_upload_bytes: 413, not stored).
NIGHTSCOUT = (Channel.NS_ENTRIES, Channel.NS_TREATMENTS, Channel.NS_DEVICESTATUS)
UPLOADS = tuple(f"/{c.value}" for c in NIGHTSCOUT)
# A Nightscout or Bluetooth message with more refused records than this is refused whole.
MAX_RECORD_REJECTIONS = 50
_BACKFILLED = int(ReadingFlag.BACKFILLED)
_LATE = int(ReadingFlag.LATE)
_CAUTION = int(ReadingFlag.DEVICE_CAUTION)
_FLAG_VALUES = [ReadingFlag(i) for i in range(max(map(int, ReadingFlag)) * 2)]


class Decoder:
    """Decodes messages for devices found by ``lookup`` (the provisioning registry).

    ``latest`` tells, per (device, signal), the newest device time already accepted, so a
    reading older than that is flagged LATE; the decoder updates it as it accepts readings.
    ``clock_synchronised`` says whether the gateway's clock may judge device times: while
    it may not, a reading ahead of it is held (CLOCK_UNSYNCHRONISED) rather than rejected
    as FUTURE_TIME, to be decoded again once it may (clock.ClockTrust).
    """

    def __init__(
        self,
        prefix: str,
        limits: DecodeLimits,
        lookup: Callable[[str], Device | None],
        latest: Callable[[str, Signal], float | None],
        clock_synchronised: Callable[[], bool] = lambda: True,
    ) -> None:
        self._prefix = prefix
        self._clock_synchronised = clock_synchronised
        self._limits = limits
        self._lookup = lookup
        self._latest_from_store = latest
        self._latest: dict[tuple[str, Signal], float] = {}
        self._lags: dict[str, deque[tuple[float, float]]] = {}  # (received_at, lag)
        self._reported_offset: dict[str, float] = {}
        self._synchronised: bool | None = None  # the clock's trust, for the message at hand

    def forget_latest(self) -> None:
        """Drop the cache of newest times (after a failed commit); re-read from the store."""
        self._latest.clear()

    def decode(
        self, topic: str, payload: bytes, received_at: float, via_api: bool = False
    ) -> Decoded:
        """``via_api``: a Nightscout upload handed over by the API (its size bounded there);
        only such messages may use the ns-* channels."""
        out = Decoded()
        self._synchronised = None
        if len(payload) > self._limits.max_payload_bytes and not (
            via_api and topic.endswith(UPLOADS)
        ):
            out.rejections.append(
                Rejection(
                    R.OVERSIZED,
                    f"{len(payload)} bytes > max_payload_bytes {self._limits.max_payload_bytes}",
                )
            )
            return out
        parsed = contract.parse_topic(self._prefix, topic)
        if parsed is None:
            out.rejections.append(
                Rejection(
                    R.WRONG_TOPIC, f"expected {self._prefix}/dev/<device>/senml|status|online"
                )
            )
            return out
        device_id, channel = parsed
        out.device_id = device_id
        device = self._lookup(device_id)
        if device is None:
            out.rejections.append(
                Rejection(R.UNKNOWN_DEVICE, f"device {device_id!r} is not provisioned")
            )
            return out
        if channel is Channel.ONLINE:
            self._decode_online(device, payload, out)
            return out
        if channel in NIGHTSCOUT:
            if not via_api:
                out.rejections.append(
                    Rejection(R.WRONG_TOPIC, f"{channel.value} is the API's (/api/v1/), not MQTT's")
                )
            else:
                self._decode_nightscout(device, channel, payload, received_at, out)
            self._collapse(out)
            return out
        if channel is Channel.GATT:
            values = gatt.decode(payload, self._limits.zone, contract.SENML_RELATIVE_TIME_LIMIT)
            out.rejections.extend(values.rejections)
            if values.battery_pct is not None:
                out.status = DeviceStatus(device_id, battery_pct=values.battery_pct)
            self.accept(device, values.measurements, received_at, out)
            self._collapse(out)
            return out
        records = _senml_records(payload, out)
        if records is None:
            return out
        if not _bn_matches(records, device_id, out):
            return out
        if channel is Channel.STATUS:
            self._decode_status(device, records, out)
        else:
            self._decode_readings(device, records, received_at, out)
        return out

    # -- channels ------------------------------------------------------------------

    def _decode_online(self, device: Device, payload: bytes, out: Decoded) -> None:
        text = payload.strip()
        if text not in (b"0", b"1"):
            out.rejections.append(Rejection(R.BAD_VALUE, 'online payload must be "0" or "1"'))
            return
        out.status = DeviceStatus(device.device_id, online=text == b"1")

    def _decode_status(self, device: Device, records: list[Any], out: Decoded) -> None:
        battery: float | None = None
        firmware: str | None = None
        expires: float | None = None
        for index, rec in enumerate(records):
            name = rec.get("n")
            if name == contract.STATUS_BATTERY:
                value = finite(rec.get("v"))
                if value is None or not 0 <= value <= 100 or rec.get("u") != "%":
                    out.rejections.append(
                        Rejection(R.BAD_VALUE, "battery needs a number 0-100 with u '%'", index)
                    )
                    continue
                battery = value
            elif name == contract.STATUS_SENSOR_EXPIRES:
                value = finite(rec.get("v"))
                absolute = value is not None and value >= contract.SENML_RELATIVE_TIME_LIMIT
                if value is None or not absolute or rec.get("u") != "s":
                    out.rejections.append(
                        Rejection(
                            R.BAD_VALUE,
                            "sensor_expires needs an absolute time (epoch seconds) with u 's'",
                            index,
                        )
                    )
                    continue
                expires = value
            elif name == contract.STATUS_FIRMWARE and isinstance(rec.get("vs"), str):
                firmware = str(rec["vs"])[:64]
            else:
                out.rejections.append(
                    Rejection(R.UNKNOWN_MEASUREMENT, f"unknown status record {name!r}", index)
                )
        if battery is not None or firmware is not None or expires is not None:
            out.status = DeviceStatus(
                device.device_id,
                battery_pct=battery,
                firmware=firmware,
                sensor_expires_at=expires,
            )

    def _decode_readings(
        self, device: Device, records: list[Any], received_at: float, out: Decoded
    ) -> None:
        base_time = 0.0
        base_unit: str | None = None
        allowed = device.device_type.signals
        for index, rec in enumerate(records):
            # Base fields apply to this and later records (RFC 8428 section 4.5).
            if "bt" in rec:
                bt = finite(rec["bt"])
                if bt is None:
                    out.rejections.append(Rejection(R.BAD_TIME, "bt is not a finite number", index))
                    continue
                base_time = bt
            if "bu" in rec:
                base_unit = rec["bu"] if isinstance(rec["bu"], str) else None
            if "n" not in rec and "v" not in rec:
                continue  # a base-only record
            measurement = _measurement(rec, index, base_time, base_unit, allowed, out)
            if measurement is None:
                continue
            ahead = self._ahead(measurement.t, received_at, index)
            if ahead is not None:
                out.rejections.append(ahead)
                continue
            out.readings.append(self._bind(device, measurement, received_at))
        if not out.readings and not out.rejections:
            out.rejections.append(Rejection(R.NOT_SENML, "the pack holds no measurement record"))
        self._after_readings(device, received_at, out)

    def _ahead(self, t: float, received_at: float, index: int | None) -> Rejection | None:
        """A device time too far ahead of the gateway: rejected (future_time), or held
        while the gateway's own clock is not synchronised; None if it is not ahead."""
        if t <= received_at + self._limits.future_tolerance_s:
            return None
        ahead = f"device time is {t - received_at:.0f} s ahead of the gateway"
        if self._synchronised is None:  # asked once per message
            self._synchronised = self._clock_synchronised()
        if self._synchronised:
            return Rejection(R.FUTURE_TIME, ahead, index)
        return Rejection(
            R.CLOCK_UNSYNCHRONISED,
            f"{ahead}, whose clock is not synchronised: held until it is",
            index,
        )

    def _after_readings(self, device: Device, received_at: float, out: Decoded) -> None:
        # A device's clock offset measured against an unsynchronised clock means nothing.
        held = any(r.reason is R.CLOCK_UNSYNCHRONISED for r in out.rejections)
        if out.readings and not held:
            self._track_clock(device.device_id, received_at, out)

    def accept(
        self,
        device: Device,
        measurements: list[tuple[int, Measurement]],
        received_at: float,
        out: Decoded,
    ) -> None:
        """Bind decoded measurements (the Nightscout and Bluetooth formats') to the
        device's patient: the device type's signals, the plausible range and the time
        checks the SenML path applies."""
        allowed = device.device_type.signals
        for index, m in measurements:
            if m.signal not in allowed:
                out.rejections.append(
                    Rejection(R.NOT_ALLOWED, f"this device type may not report {m.signal}", index)
                )
                continue
            spec = contract.VOCABULARY[m.signal.value]
            if not spec.lo <= m.value <= spec.hi:
                out.rejections.append(
                    Rejection(
                        R.OUT_OF_RANGE,
                        f"{m.signal} {m.value:g} {m.signal.unit} outside"
                        f" [{spec.lo:g}, {spec.hi:g}]",
                        index,
                    )
                )
                continue
            ahead = self._ahead(m.t, received_at, index)
            if ahead is not None:
                out.rejections.append(ahead)
                continue
            out.readings.append(self._bind(device, m, received_at))
        self._after_readings(device, received_at, out)

    def _collapse(self, out: Decoded) -> None:
        """A message that is mostly junk (more than MAX_RECORD_REJECTIONS refused records,
        and more refused than accepted) is refused whole: one quarantine row instead of
        one per record. An honest backlog with a few refused records among many good ones
        keeps its good ones."""
        refused = len(out.rejections)
        if refused <= MAX_RECORD_REJECTIONS or refused <= len(out.readings) + len(out.treatments):
            return
        first = out.rejections[0]
        out.rejections = [
            Rejection(first.reason, f"{refused} records refused, the first: {first.detail}"[:300])
        ]
        out.readings, out.treatments, out.status = [], [], None

    def _decode_nightscout(
        self, device: Device, channel: Channel, payload: bytes, received_at: float, out: Decoded
    ) -> None:
        floor = contract.SENML_RELATIVE_TIME_LIMIT
        if channel is Channel.NS_ENTRIES:
            parsed = nightscout.entries(payload, floor)
        elif channel is Channel.NS_TREATMENTS:
            parsed = nightscout.treatments(payload, floor)
        else:
            parsed = nightscout.device_status(payload)
        out.rejections.extend(parsed.rejections)
        if parsed.battery_pct is not None:
            out.status = DeviceStatus(device.device_id, battery_pct=parsed.battery_pct)
        self.accept(device, parsed.measurements, received_at, out)
        if parsed.treatments and device.device_type is not DeviceType.CGM:
            out.rejections.append(
                Rejection(R.NOT_ALLOWED, "treatments come from a phone provisioned as a cgm")
            )
            return
        for index, x in parsed.treatments:
            ahead = self._ahead(x.t, received_at, index)
            if ahead is not None:
                out.rejections.append(ahead)
                continue
            out.treatments.append(
                Treatment(
                    device.patient_id,
                    device.device_id,
                    x.t,
                    x.kind,
                    x.event_type,
                    x.carbs_g,
                    x.insulin_u,
                    received_at,
                    x.source_id,
                )
            )

    def _track_clock(self, device_id: str, received_at: float, out: Decoded) -> None:
        """Estimate the device's clock offset; flag its readings when it is skewed.

        The flag only ever adds caution: BACKFILLED is still judged on the raw lag, so a
        device whose clock runs slow is treated as backfilled (no clinical alarm) until
        its clock is fixed, and the skew is reported rather than silently corrected.
        """
        lags = self._lags.setdefault(device_id, deque(maxlen=OFFSET_WINDOW))
        lags.append((received_at, received_at - max(r.t for r in out.readings)))
        while lags[0][0] < received_at - OFFSET_WINDOW_S:
            lags.popleft()
        if received_at - lags[0][0] < OFFSET_MIN_SPAN_S:
            return  # not enough evidence yet: neither flag nor report
        offset = min(lag for _, lag in lags)
        if abs(offset) > self._limits.clock_skew_tolerance_s:
            out.readings = [
                replace(r, flags=r.flags | ReadingFlag.CLOCK_SKEW) for r in out.readings
            ]
        reported = self._reported_offset.get(device_id)
        if reported is None or abs(reported - offset) >= OFFSET_REPORT_STEP_S:
            self._reported_offset[device_id] = offset
            out.status = DeviceStatus(device_id, clock_offset_s=round(offset, 3))

    def _bind(self, device: Device, m: Measurement, received_at: float) -> Reading:
        flags = _CAUTION if m.caution else 0  # plain int: IntFlag arithmetic is slow here
        if received_at - m.t > self._limits.backfill_after_s:
            flags |= _BACKFILLED
        key = (device.device_id, m.signal)
        newest = self._latest.get(key)
        if newest is None:
            newest = self._latest_from_store(*key)
        if newest is not None and m.t < newest:
            flags |= _LATE
        else:
            self._latest[key] = m.t
        return Reading(
            patient_id=device.patient_id,
            device_id=device.device_id,
            signal=m.signal,
            t=m.t,
            value=m.value,
            received_at=received_at,
            seq=m.seq,
            flags=_FLAG_VALUES[flags],
        )


def _senml_records(payload: bytes, out: Decoded) -> list[Any] | None:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        out.rejections.append(Rejection(R.MALFORMED, f"not UTF-8 JSON: {exc}"[:300]))
        return None
    if not isinstance(doc, list) or not doc:
        out.rejections.append(Rejection(R.NOT_SENML, "a SenML pack is a non-empty JSON array"))
        return None
    for index, rec in enumerate(doc):
        if not isinstance(rec, dict):
            out.rejections.append(Rejection(R.NOT_SENML, "SenML records are JSON objects", index))
            return None
        # Labels ending in "_" must be understood or the whole pack rejected (RFC 8428 4.4).
        must_understand = [k for k in rec if k[-1:] == "_"]  # JSON keys are always str
        if must_understand:
            out.rejections.append(
                Rejection(
                    R.NOT_SENML, f"unsupported must-understand labels {must_understand}", index
                )
            )
            return None
    return doc


def _bn_matches(records: list[Any], device_id: str, out: Decoded) -> bool:
    """A base name that names a device must name the topic's device."""
    for index, rec in enumerate(records):
        bn = rec.get("bn")
        if isinstance(bn, str) and bn.startswith("urn:dev:id:"):
            named = bn[len("urn:dev:id:") :].rstrip(":")
            if named != device_id:
                out.rejections.append(
                    Rejection(
                        R.NOT_ALLOWED,
                        f"payload names device {named!r} on device {device_id!r}'s topic",
                        index,
                    )
                )
                return False
    return True


def _measurement(
    rec: dict[str, Any],
    index: int,
    base_time: float,
    base_unit: str | None,
    allowed: frozenset[Signal],
    out: Decoded,
) -> Measurement | None:
    name = rec.get("n")
    measure = contract.VOCABULARY.get(name) if isinstance(name, str) else None
    if measure is None:
        out.rejections.append(
            Rejection(R.UNKNOWN_MEASUREMENT, f"unknown measurement name {str(name)[:64]!r}", index)
        )
        return None
    if measure.signal not in allowed:
        out.rejections.append(
            Rejection(R.NOT_ALLOWED, f"this device type may not report {name}", index)
        )
        return None
    unit = rec.get("u", base_unit)
    convert = measure.units.get(unit) if isinstance(unit, str) else None
    if convert is None:
        out.rejections.append(
            Rejection(
                R.WRONG_UNIT,
                f"{name} in {str(unit)[:32]!r}: use one of {', '.join(measure.units)}",
                index,
            )
        )
        return None
    raw = finite(rec.get("v"))
    if raw is None:
        out.rejections.append(Rejection(R.BAD_VALUE, f"{name} needs a finite number v", index))
        return None
    t_rel = finite(rec.get("t", 0.0))
    if t_rel is None:
        out.rejections.append(Rejection(R.BAD_TIME, "t is not a finite number", index))
        return None
    t = base_time + t_rel
    if not math.isfinite(t) or t < contract.SENML_RELATIVE_TIME_LIMIT:
        out.rejections.append(
            Rejection(R.BAD_TIME, "time must be absolute (epoch seconds from the device)", index)
        )
        return None
    value = convert(raw)
    if not measure.lo <= value <= measure.hi:
        out.rejections.append(
            Rejection(
                R.OUT_OF_RANGE,
                f"{name} {value:g} {measure.signal.unit} outside [{measure.lo:g}, {measure.hi:g}]",
                index,
            )
        )
        return None
    seq = rec.get("seq")
    if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63):
        seq = None
    return Measurement(measure.signal, t, value, seq)
