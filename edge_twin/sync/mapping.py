"""Readings as FHIR R4 resources, following the Personal Health Device (PHD) IG where it
applies: the device's own timestamp, LOINC codes, UCUM units, Patient and Device
references, the gateway named by an extension, a deterministic identifier per resource.

    CGM, cuff, scale reading          -> one Observation each (PhdNumericObservation);
                                         a cuff's systolic + diastolic at one time -> one
                                         blood-pressure panel (PhdCompoundNumericObservation)
    wrist streams (HR, SpO2, RR, ...) -> one Observation per device, signal and hour with
                                         the samples as SampledData (one a minute; "E"
                                         where none): not one resource per sample

The identifier is a name-based UUID (RFC 4122 v5) of patient, device, code and device
time, so every gateway that sees a reading computes the same one, and the upload is a
conditional create on it: a resend never duplicates.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_twin.domain import Device, DeviceType, Reading, Signal

Resource = dict[str, Any]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
URI = "urn:ietf:rfc:3986"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PHD = "http://hl7.org/fhir/uv/phd/StructureDefinition"
GATEWAY_EXTENSION = f"{PHD}/GatewayDevice"
PATIENT_SYSTEM = "urn:edge-twin:patient"
DEVICE_SYSTEM = "urn:edge-twin:device"
# The namespace of every identifier the gateway derives (a fixed, random UUID).
NAMESPACE = uuid.UUID("6f1d3c52-8d0e-4b5a-9a57-3f1f0c2a7e41")
SUMMARY_S = 3600.0  # a wrist stream's summary window
SAMPLE_PERIOD_S = 60.0  # its SampledData slots


@dataclass(frozen=True, slots=True)
class Coding:
    loinc: str
    display: str
    ucum: str
    vital_sign: bool


# Every signal the gateway stores must be here (tests/test_sync.py checks it against
# domain.SIGNALS): adding a signal means saying how the care team receives it.
CODES: dict[Signal, Coding] = {
    # HL7 CGM IG: interstitial glucose by CGM, mass/volume.
    Signal.GLUCOSE: Coding(
        "99504-3", "Glucose [Mass/volume] in Interstitial fluid", "mg/dL", False
    ),
    Signal.SYSTOLIC: Coding("8480-6", "Systolic blood pressure", "mm[Hg]", True),
    Signal.DIASTOLIC: Coding("8462-4", "Diastolic blood pressure", "mm[Hg]", True),
    Signal.HEART_RATE: Coding("8867-4", "Heart rate", "/min", True),
    Signal.SPO2: Coding("2708-6", "Oxygen saturation in Arterial blood", "%", True),
    Signal.RESP_RATE: Coding("9279-1", "Respiratory rate", "/min", True),
    Signal.WEIGHT: Coding("29463-7", "Body weight", "kg", True),
    Signal.SKIN_TEMP: Coding("8310-5", "Body temperature", "Cel", True),
    Signal.STEPS: Coding(
        "55423-8", "Number of steps in unspecified time Pedometer", "{steps}", False
    ),
}
BP_PANEL = Coding("85354-9", "Blood pressure panel with all children optional", "mm[Hg]", True)


def summarised(device: Device) -> bool:
    """Wrist streams go up as hourly summaries; every other device's readings one by one."""
    return device.device_type is DeviceType.WRIST


def instant(t: float) -> str:
    """An epoch time as a FHIR instant (UTC, milliseconds)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def derived_id(*parts: object) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, '|'.join(str(p) for p in parts))}"


def patient_url(patient_id: str) -> str:
    """The fullUrl a bundle gives a patient's entry; other entries reference it."""
    return derived_id("Patient", patient_id)


def device_url(device_id: str) -> str:
    return derived_id("Device", device_id)


def patient(patient_id: str) -> Resource:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PATIENT_SYSTEM, "value": patient_id}],
        "active": True,
    }


def device(d: Device, gateway_id: str | None = None) -> Resource:
    """A sensor (or, with ``gateway_id`` as its id, the gateway itself)."""
    return {
        "resourceType": "Device",
        "identifier": [{"system": DEVICE_SYSTEM, "value": d.device_id}],
        "status": "active",
        "deviceName": [{"name": d.device_id, "type": "user-friendly-name"}],
        "type": {"text": "gateway" if gateway_id == d.device_id else d.device_type.value},
        **({"patient": {"reference": patient_url(d.patient_id)}} if gateway_id is None else {}),
    }


def identifier_query(resource: Resource) -> str:
    """The conditional-create search that finds this resource again."""
    ident = resource["identifier"][0]
    return f"identifier={ident['system']}|{ident['value']}"


def _quantity(value: float, code: Coding) -> dict[str, Any]:
    return {"value": round(value, 3), "unit": code.ucum, "system": UCUM, "code": code.ucum}


def _observation(code: Coding, d: Device, ident: str, gateway_url: str, profile: str) -> Resource:
    obs: Resource = {
        "resourceType": "Observation",
        "meta": {"profile": [f"{PHD}/{profile}"]},
        "identifier": [{"system": URI, "value": ident}],
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code.loinc, "display": code.display}]},
        "subject": {"reference": patient_url(d.patient_id)},
        "device": {"reference": device_url(d.device_id)},
        "extension": [{"url": GATEWAY_EXTENSION, "valueReference": {"reference": gateway_url}}],
    }
    if code.vital_sign:
        obs["category"] = [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}]
    return obs


def reading_observation(r: Reading, d: Device, gateway_url: str) -> Resource:
    """One reading as an Observation, at the device's own time."""
    code = CODES[r.signal]
    obs = _observation(
        code,
        d,
        derived_id(r.patient_id, r.device_id, code.loinc, r.t),
        gateway_url,
        "PhdNumericObservation",
    )
    obs["effectiveDateTime"] = instant(r.t)
    obs["issued"] = instant(r.received_at)
    obs["valueQuantity"] = _quantity(r.value, code)
    return obs


def blood_pressure(
    systolic: Reading | None, diastolic: Reading | None, d: Device, gateway_url: str
) -> Resource:
    """A cuff measurement as the BP panel; a component the store does not hold (its record
    was quarantined) is sent with a dataAbsentReason, as the vital-signs profile asks."""
    first = systolic or diastolic
    assert first is not None
    obs = _observation(
        BP_PANEL,
        d,
        derived_id(first.patient_id, first.device_id, BP_PANEL.loinc, first.t),
        gateway_url,
        "PhdCompoundNumericObservation",
    )
    obs["effectiveDateTime"] = instant(first.t)
    obs["issued"] = instant(first.received_at)
    components = []
    for signal, r in ((Signal.SYSTOLIC, systolic), (Signal.DIASTOLIC, diastolic)):
        code = CODES[signal]
        component: dict[str, Any] = {
            "code": {"coding": [{"system": LOINC, "code": code.loinc, "display": code.display}]}
        }
        if r is None:
            component["dataAbsentReason"] = {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                        "code": "error",
                    }
                ]
            }
        else:
            component["valueQuantity"] = _quantity(r.value, code)
        components.append(component)
    obs["component"] = components
    return obs


def window_start(t: float) -> float:
    return math.floor(t / SUMMARY_S) * SUMMARY_S


def summary(
    patient_id: str,
    d: Device,
    signal: Signal,
    start: float,
    samples: Sequence[Reading],
    gateway_url: str,
) -> Resource:
    """A wrist stream's hour as SampledData: slot k holds the newest sample taken in
    [start + k min, start + k+1 min), "E" where none was (PHD IG: high-rate streams go up
    as summaries or SampledData, not a resource per sample)."""
    code = CODES[signal]
    slots: list[float | None] = [None] * int(SUMMARY_S / SAMPLE_PERIOD_S)
    for r in samples:
        k = int((r.t - start) // SAMPLE_PERIOD_S)
        if 0 <= k < len(slots):
            slots[k] = r.value
    obs = _observation(
        code,
        d,
        derived_id(patient_id, d.device_id, code.loinc, "summary", start),
        gateway_url,
        "PhdRtsaObservation",
    )
    obs["effectivePeriod"] = {"start": instant(start), "end": instant(start + SUMMARY_S)}
    obs["valueSampledData"] = {
        "origin": {"value": 0, "unit": code.ucum, "system": UCUM, "code": code.ucum},
        "period": SAMPLE_PERIOD_S * 1000.0,
        "dimensions": 1,
        "data": " ".join("E" if v is None else f"{v:g}" for v in slots),
    }
    return obs
