"""Readings as FHIR R4 resources, following the Personal Health Device (PHD) IG where it
applies: the device's own timestamp, LOINC codes, UCUM units, Patient and Device
references, the gateway named by an extension, a deterministic identifier per resource.

    CGM, cuff, scale reading          -> one Observation each;
                                         a cuff's systolic + diastolic at one time -> one
                                         blood-pressure panel
    wrist streams (HR, SpO2, RR, ...) -> one Observation per device, signal and hour with
                                         the samples as SampledData (one a minute; "E"
                                         where none): not one resource per sample

    an alarm                          -> CommunicationRequest (the request to act), its
                                         audit events -> Communication (raised, acknowledged,
                                         escalated, resolved: who, when)
    decompensation alarm open         -> Flag (active; inactive once resolved)
    a risk assessment                 -> RiskAssessment (model and version, the
                                         Observations it used, probability over its horizon)

The identifier is a name-based UUID (RFC 4122 v5) of patient, device, code and device
time, so every gateway that sees a reading computes the same one, and the upload is a
conditional create on it: a resend never duplicates.
"""

from __future__ import annotations

import json
import math
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from math import fsum
from typing import Any

from edge_twin.domain import Alarm, DecompensationRisk, Device, DeviceType, Reading, Signal
from edge_twin.store.alarms import AlarmEvent

Resource = dict[str, Any]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
URI = "urn:ietf:rfc:3986"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# The R4 core extension naming the gateway a measurement came through.
GATEWAY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"


# A patient's identifier: the deployment's own system (sync.patient_system, e.g. the
# hospital's MRN system when local ids are MRNs), or one namespaced by the gateway, so two
# homes' "pt-001" never become one patient upstream.
def patient_system(configured: str, gateway_id: str) -> str:
    return configured or f"urn:edge-twin:gateway:{gateway_id}:patient"


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


@lru_cache(maxsize=4096)
def patient_url(patient_id: str) -> str:
    """The fullUrl a bundle gives a patient's entry; other entries reference it."""
    return derived_id("Patient", patient_id)


@lru_cache(maxsize=4096)
def device_url(device_id: str) -> str:
    return derived_id("Device", device_id)


def patient(patient_id: str, system: str) -> Resource:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": patient_id}],
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


def _observation(code: Coding, d: Device, ident: str, gateway_url: str) -> Resource:
    # No meta.profile: the resources follow the PHD IG's practice (device time,
    # identifiers, the gateway, SampledData) without claiming its profiles, whose MDC
    # codes they do not carry; a server that checks declared profiles would refuse them.
    obs: Resource = {
        "resourceType": "Observation",
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


def observation_identifier(r: Reading, d: Device) -> str:
    """The identifier of the Observation that carries reading ``r`` upstream: its own,
    its cuff measurement's panel, or its wrist stream's hour."""
    if summarised(d):
        return derived_id(
            r.patient_id, d.device_id, CODES[r.signal].loinc, "summary", window_start(r.t)
        )
    if r.signal in (Signal.SYSTOLIC, Signal.DIASTOLIC) and d.device_type is DeviceType.BP_CUFF:
        return derived_id(r.patient_id, d.device_id, BP_PANEL.loinc, r.t)
    return derived_id(r.patient_id, r.device_id, CODES[r.signal].loinc, r.t)


def reading_observation(r: Reading, d: Device, gateway_url: str) -> Resource:
    """One reading as an Observation, at the device's own time."""
    code = CODES[r.signal]
    obs = _observation(code, d, observation_identifier(r, d), gateway_url)
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
    obs = _observation(BP_PANEL, d, observation_identifier(first, d), gateway_url)
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
    samples: Sequence[tuple[float, float]],
    gateway_url: str,
) -> Resource:
    """A wrist stream's hour as SampledData: slot k holds the samples taken in
    [start + k min, start + k+1 min) (their mean; for steps, their sum), "E" where none
    was (PHD IG: high-rate streams go up as summaries or SampledData, not a resource per
    sample)."""
    code = CODES[signal]
    slots: list[list[float]] = [[] for _ in range(int(SUMMARY_S / SAMPLE_PERIOD_S))]
    for t, value in samples:  # (device time, value)
        k = int((t - start) // SAMPLE_PERIOD_S)
        if 0 <= k < len(slots):
            slots[k].append(value)
    # Several samples in a minute: steps are counts (their sum), the rest levels (mean).
    merge: Callable[[list[float]], float] = fsum if signal is Signal.STEPS else statistics.fmean
    values = [merge(slot) if slot else None for slot in slots]
    ident = observation_identifier(Reading(patient_id, d.device_id, signal, start, 0.0, start), d)
    obs = _observation(code, d, ident, gateway_url)
    obs["effectivePeriod"] = {"start": instant(start), "end": instant(start + SUMMARY_S)}
    obs["valueSampledData"] = {
        "origin": {"value": 0, "unit": code.ucum, "system": UCUM, "code": code.ucum},
        "period": SAMPLE_PERIOD_S * 1000.0,
        "dimensions": 1,
        "data": " ".join("E" if v is None else f"{v:.6g}" for v in values),
    }
    return obs


# --- the twin's outputs: alarms, flags, risks ---------------------------------------------

ALARM_SYSTEM = "urn:edge-twin:alarm-type"
MODEL_SYSTEM = "urn:edge-twin:model"
# IEC 60601-1-8 priorities as FHIR request priorities.
REQUEST_PRIORITY = {"high": "stat", "medium": "urgent", "low": "routine", "info": "routine"}
GATEWAY_PATIENT = "gateway"  # the patient id of the gateway's own technical alarms
HIGH_RISK_ALARM = "decompensation_risk"


def _subject(patient_id: str) -> dict[str, Any]:
    return (
        {} if patient_id == GATEWAY_PATIENT else {"subject": {"reference": patient_url(patient_id)}}
    )


def alarm_url(gateway_id: str, alarm: Alarm) -> str:
    return derived_id(gateway_id, "alarm", alarm.id)


def alarm_request(gateway_id: str, alarm: Alarm, event: AlarmEvent, gateway_url: str) -> Resource:
    """The alarm as the request to the care team to act (CommunicationRequest), in the
    state the event left it: active, on-hold while paused, completed once resolved."""
    status = {"paused": "on-hold", "resolved": "completed"}.get(event.state.value, "active")
    kind = "technical" if alarm.technical else "clinical"
    values = json.dumps(alarm.values, sort_keys=True)
    return {
        "resourceType": "CommunicationRequest",
        "identifier": [{"system": URI, "value": alarm_url(gateway_id, alarm)}],
        "status": status,
        "category": [
            {
                "coding": [{"system": ALARM_SYSTEM, "code": alarm.alarm_type}],
                "text": f"{kind} alarm",
            }
        ],
        "priority": REQUEST_PRIORITY[alarm.priority.value],
        **_subject(alarm.patient_id),
        "authoredOn": instant(alarm.raised_at),
        "occurrenceDateTime": instant(alarm.raised_at),
        "requester": {"reference": gateway_url},
        "reasonCode": [{"text": alarm.reason}],
        "payload": [
            {"contentString": alarm.reason},
            {"contentString": f"values (with their uncertainty): {values}"},
        ],
    }


def alarm_communication(
    gateway_id: str, alarm: Alarm, event: AlarmEvent, gateway_url: str
) -> Resource:
    """One event of the alarm's audit log (raised, acknowledged, escalated, resolved, ...)
    as a Communication based on its request: who did what, when (event time)."""
    by_gateway = event.actor == "gateway"
    sender = {"reference": gateway_url} if by_gateway else {"display": event.actor}
    text = f"{alarm.alarm_type} {event.event}" + (f": {event.reason}" if event.reason else "")
    return {
        "resourceType": "Communication",
        "identifier": [{"system": URI, "value": derived_id(gateway_id, "alarm-event", event.id)}],
        # By identifier: the request may have gone up in an earlier bundle.
        "basedOn": [{"identifier": {"system": URI, "value": alarm_url(gateway_id, alarm)}}],
        "status": "completed",
        "category": [{"coding": [{"system": ALARM_SYSTEM, "code": alarm.alarm_type}]}],
        "priority": REQUEST_PRIORITY[alarm.priority.value],
        **_subject(alarm.patient_id),
        "topic": {"text": event.event},
        "sent": instant(event.at),
        "sender": sender,
        "payload": [{"contentString": text}],
    }


def high_risk_flag(gateway_id: str, alarm: Alarm, event: AlarmEvent, gateway_url: str) -> Resource:
    """A persistent "high risk" banner while the decompensation alarm is open."""
    period = {"start": instant(alarm.raised_at)}
    if event.state.value == "resolved":
        period["end"] = instant(event.at)
    return {
        "resourceType": "Flag",
        "identifier": [{"system": URI, "value": derived_id(gateway_id, "flag", alarm.id)}],
        "status": "inactive" if "end" in period else "active",
        "code": {
            "coding": [{"system": ALARM_SYSTEM, "code": alarm.alarm_type}],
            "text": "High risk of heart-failure decompensation",
        },
        **_subject(alarm.patient_id),
        "period": period,
        "author": {"reference": gateway_url},
    }


def risk_assessment(risk: DecompensationRisk, basis: Sequence[str], gateway_url: str) -> Resource:
    """The model's prediction as the gateway believed it: probability, horizon, the model
    and version that made it (method), the Observations it used (basis, by identifier),
    its confidence and largest contributions (note)."""
    prov = risk.provenance
    top = "; ".join(
        f"{c.feature} {c.value:.3g} (typical {c.typical:.3g}): {c.effect:+.3f}"
        for c in risk.contributions[:5]
    )
    reasons = "; ".join(risk.confidence_reasons) or "none"
    return {
        "resourceType": "RiskAssessment",
        "identifier": [
            {
                "system": URI,
                "value": derived_id(risk.patient_id, "risk", prov.model, prov.version, risk.t),
            }
        ],
        "status": "final",
        "method": {
            "coding": [{"system": MODEL_SYSTEM, "code": prov.model, "version": prov.version}],
            "text": f"{prov.model} {prov.version} (sha256 {prov.sha256[:16]})",
        },
        "code": {"text": "heart-failure decompensation risk"},
        **_subject(risk.patient_id),
        "occurrenceDateTime": instant(risk.t),
        "performer": {"reference": gateway_url},
        "basis": [{"identifier": {"system": URI, "value": ident}} for ident in basis],
        "prediction": [
            {
                "outcome": {"text": "heart-failure decompensation"},
                "probabilityDecimal": round(risk.probability, 4),
                "whenPeriod": {
                    "start": instant(risk.t),
                    "end": instant(risk.t + risk.horizon_days * 86400.0),
                },
                "rationale": f"alert threshold {risk.threshold:.3f}; confidence {risk.confidence}"
                f" (reasons: {reasons})",
            }
        ],
        "note": [
            {
                "text": f"inputs {', '.join(prov.inputs) or 'none'} from"
                f" {instant(prov.window_start)} to {instant(prov.window_end)};"
                f" largest contributions: {top or 'none'}"
            }
        ],
    }
