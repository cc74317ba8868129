"""Nightscout uploads (REST API v1), the format phone apps already speak: xDrip+,
AndroidAPS, Juggluco, Loop. Pure: JSON bytes -> measurements, treatments, rejections.

    POST /api/v1/entries     [{"type": "sgv", "sgv": 112, "date": 1790000000000,
                               "dateString": "2026-09-21T14:13:20.000Z", "direction": "Flat",
                               "device": "xDrip-DexcomG6", ...}, ...]
    POST /api/v1/treatments  [{"eventType": "Meal Bolus", "carbs": 40, "insulin": 4.5,
                               "created_at": "2026-09-21T14:10:00.000Z", ...}, ...]
                             (xDrip+ and Juggluco: PUT, one object with its _id)
    POST /api/v1/devicestatus {"device": "Pixel 7", "uploader": {"battery": 87}}

All accept one object or an array. The API hands the body to the ingest writer as a
message on the uploader device's ``ns-entries`` / ``ns-treatments`` channel, so it goes
through the same decode -> store path as MQTT: dedupe by (device, signal, device time),
the late / backfilled / clock flags, and every rejected record quarantined with the raw
body and its index.

What is read, and why not more:
- ``sgv`` entries (mg/dL, as Nightscout always stores them) become glucose readings.
  ``direction``, ``delta``, ``noise``, ``filtered``/``unfiltered`` are not used: the twin
  estimates its own rate of change, with its uncertainty. Values below 39 are sensor error
  codes, not glucose (Dexcom's 1 ?SN ... 12 ?RF; xDrip+'s 38): quarantined as
  ``bad_value``. 39 is the sensors' "LOW": kept as 39 mg/dL, so a low alarm is not lost.
- ``mbg`` (finger-stick) and ``cal`` entries are quarantined as ``unknown_measurement``:
  a calibration is not a reading of the interstitial glucose the filter tracks.
- Treatments: ``carbs`` (g) and ``insulin`` (U); any other event type is kept as a note.
- Device status: the phone's battery (``uploader.battery``, %); the rest is not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_twin.domain import Measurement, Rejection, Signal, TreatmentKind
from edge_twin.domain import RejectReason as R
from edge_twin.ingest.contract import finite

# sgv values below this are error codes, not concentrations: Dexcom's SENSOR_NOT_ACTIVE = 1
# ... BAD_RF = 12, xDrip+'s 38; Nightscout shows any value below 39 as an error code.
SENSOR_ERROR_CODES_BELOW = 39
# Plausibility bounds of what one treatment record may say.
MAX_CARBS_G = 500.0
MAX_INSULIN_U = 100.0
MAX_TEXT = 64  # event types and ids are kept this long at most


@dataclass(frozen=True, slots=True)
class TreatmentRecord:
    """A treatment read from the body, not yet bound to a patient."""

    t: float
    kind: TreatmentKind
    event_type: str
    carbs_g: float | None
    insulin_u: float | None
    source_id: str | None


@dataclass(slots=True)
class Parsed:
    measurements: list[tuple[int, Measurement]] = field(default_factory=list)
    treatments: list[tuple[int, TreatmentRecord]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    battery_pct: float | None = None  # the uploading phone's, from a device status


def _documents(payload: bytes, out: Parsed) -> list[Any] | None:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        out.rejections.append(Rejection(R.MALFORMED, f"not UTF-8 JSON: {exc}"[:300]))
        return None
    docs = doc if isinstance(doc, list) else [doc]
    if not docs:
        out.rejections.append(Rejection(R.MALFORMED, "an upload is an object or a non-empty array"))
        return None
    return docs


def _iso(value: object) -> float | None:
    """An ISO 8601 time with a UTC offset (Nightscout's dateString / created_at)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return None if parsed.tzinfo is None else parsed.timestamp()


def _time(doc: dict[str, Any], numeric: tuple[str, ...], textual: tuple[str, ...]) -> float | None:
    """Epoch seconds from the first field present: epoch milliseconds, else ISO text."""
    for name in numeric:
        if name in doc:
            ms = finite(doc[name])
            return None if ms is None else ms / 1000.0
    for name in textual:
        if name in doc:
            return _iso(doc[name])
    return None


def _text(value: object) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def entries(payload: bytes, time_floor: float) -> Parsed:
    """Glucose measurements from an entries upload; ``time_floor``: earlier times are not
    absolute device times (wire contract: SenML's relative-time limit)."""
    out = Parsed()
    docs = _documents(payload, out)
    for index, doc in enumerate(docs or ()):
        if not isinstance(doc, dict):
            out.rejections.append(Rejection(R.MALFORMED, "an entry is a JSON object", index))
            continue
        kind = doc.get("type", "sgv" if "sgv" in doc else None)
        if kind != "sgv":
            out.rejections.append(
                Rejection(
                    R.UNKNOWN_MEASUREMENT,
                    f"entry type {str(kind)[:32]!r}: the gateway reads sgv entries only",
                    index,
                )
            )
            continue
        t = _time(doc, ("date",), ("dateString", "sysTime"))
        if t is None or t < time_floor:
            out.rejections.append(
                Rejection(
                    R.BAD_TIME,
                    "an entry needs date (epoch milliseconds) or dateString (ISO 8601 with"
                    " an offset)",
                    index,
                )
            )
            continue
        sgv = finite(doc.get("sgv"))
        if sgv is None or sgv < SENSOR_ERROR_CODES_BELOW:
            detail = (
                f"sgv {sgv:g} is a sensor error code, not a glucose value"
                if sgv is not None and sgv >= 0
                else "sgv needs a number (mg/dL)"
            )
            out.rejections.append(Rejection(R.BAD_VALUE, detail, index))
            continue
        out.measurements.append((index, Measurement(Signal.GLUCOSE, t, sgv)))
    return out


def _amount(
    doc: dict[str, Any], name: str, ceiling: float, index: int, out: Parsed
) -> tuple[bool, float | None]:
    """(ok, amount): a missing or null amount is None; a bad one is rejected."""
    value = doc.get(name)
    if value is None:
        return True, None
    number = finite(value)
    if number is None:
        out.rejections.append(Rejection(R.BAD_VALUE, f"{name} needs a number", index))
        return False, None
    if not 0 <= number <= ceiling:
        out.rejections.append(
            Rejection(R.OUT_OF_RANGE, f"{name} {number:g} outside [0, {ceiling:g}]", index)
        )
        return False, None
    return True, number or None  # 0 g or 0 U is no dose


def treatments(payload: bytes, time_floor: float) -> Parsed:
    """Treatments (carbohydrates, insulin, other events as notes) from an upload."""
    out = Parsed()
    docs = _documents(payload, out)
    for index, doc in enumerate(docs or ()):
        if not isinstance(doc, dict):
            out.rejections.append(Rejection(R.MALFORMED, "a treatment is a JSON object", index))
            continue
        t = _time(doc, ("date", "mills", "timestamp"), ("created_at",))
        if t is None or t < time_floor:
            out.rejections.append(
                Rejection(
                    R.BAD_TIME,
                    "a treatment needs created_at (ISO 8601 with an offset) or date"
                    " (epoch milliseconds)",
                    index,
                )
            )
            continue
        ok_carbs, carbs = _amount(doc, "carbs", MAX_CARBS_G, index, out)
        ok_insulin, insulin = _amount(doc, "insulin", MAX_INSULIN_U, index, out)
        if not (ok_carbs and ok_insulin):
            continue
        if carbs is not None and insulin is not None:
            kind = TreatmentKind.BOTH
        elif carbs is not None:
            kind = TreatmentKind.CARBS
        elif insulin is not None:
            kind = TreatmentKind.INSULIN
        else:
            kind = TreatmentKind.NOTE
        event = _text(doc.get("eventType")) or "<none>"
        source = next(
            (
                _text(doc[k])
                for k in ("identifier", "NSCLIENT_ID", "uuid", "_id")
                if _text(doc.get(k))
            ),
            None,
        )
        out.treatments.append((index, TreatmentRecord(t, kind, event, carbs, insulin, source)))
    return out


def device_status(payload: bytes) -> Parsed:
    """The phone's battery from a device-status upload; a status without one is fine (a
    loop's status says much else, none of it read)."""
    out = Parsed()
    docs = _documents(payload, out)
    for index, doc in enumerate(docs or ()):
        if not isinstance(doc, dict):
            out.rejections.append(Rejection(R.MALFORMED, "a device status is a JSON object", index))
            continue
        uploader = doc.get("uploader")
        if not isinstance(uploader, dict) or "battery" not in uploader:
            continue
        battery = finite(uploader["battery"])
        if battery is None or not 0 <= battery <= 100:
            out.rejections.append(
                Rejection(R.BAD_VALUE, "uploader.battery needs a number 0-100", index)
            )
            continue
        out.battery_pct = battery
    return out
