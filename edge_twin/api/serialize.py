"""Domain types -> JSON for the API. Every number goes out with its uncertainty and
provenance; times are ISO 8601 with an explicit UTC offset."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from edge_twin.assess import FeatureDrift
from edge_twin.clock import to_iso
from edge_twin.domain import (
    DecompensationRisk,
    Device,
    DeviceStatus,
    ForecastSkill,
    Reading,
    ReadingFlag,
    StateEstimate,
    ThresholdRisk,
)
from edge_twin.estimate import is_stale
from edge_twin.store.alarms import AuditEntry
from edge_twin.store.consumers import ConsumerStatus
from edge_twin.store.quarantine import QuarantinedMessage

_FLAGS = [flag for flag in ReadingFlag if flag]


def _r(value: float, digits: int = 2) -> float:
    return round(value, digits)


def estimate_json(
    e: StateEstimate,
    now: float,
    stale_after_s: Mapping[str, float],
    risks: Sequence[ThresholdRisk] = (),
) -> dict[str, Any]:
    """An estimate with its forecasts and provenance; ``risks``: the threshold risks
    assessed on it (glucose: the patient's own low and urgent-low thresholds)."""
    lo, hi = e.interval95
    out: dict[str, Any] = {
        "signal": e.signal.value,
        "unit": e.signal.unit,
        "at": to_iso(e.t),
        "mean": _r(e.mean),
        "sd": _r(e.sd, 3),
        "interval95": [_r(lo), _r(hi)],
        "last_measured_at": to_iso(e.last_measured_at),
        "age_s": _r(e.age(now), 1),
        "stale": is_stale(e, now, stale_after_s),
        "stale_after_s": stale_after_s.get(e.signal),
        "forecasts": [
            {
                "horizon_min": _r(f.horizon_s / 60.0, 1),
                "mean": _r(f.mean),
                "sd": _r(f.sd, 3),
                "interval95": [_r(f.interval95[0]), _r(f.interval95[1])],
            }
            for f in e.forecasts
        ],
        "provenance": {
            "model": e.provenance.model,
            "model_version": e.provenance.model_version,
            "device_ids": list(e.provenance.device_ids),
            "n_measurements": e.provenance.n_measurements,
            "n_rejected_as_implausible": e.provenance.n_rejected,
            "through_reading_id": e.provenance.through_reading_id,
        },
    }
    if e.rate_per_min is not None and e.rate_sd is not None:
        out["rate_per_min"] = _r(e.rate_per_min, 3)
        out["rate_sd"] = _r(e.rate_sd, 3)
    if risks:
        out["risks"] = [threshold_risk_json(r) for r in risks]
    return out


def threshold_risk_json(r: ThresholdRisk) -> dict[str, Any]:
    side = "below" if r.below else "above"
    return {
        "kind": r.kind,
        "threshold": r.threshold,
        "unit": r.signal.unit,
        "horizon_min": _r(r.horizon_s / 60.0, 1),
        "event": f"{r.signal.value} {side} {r.threshold:g} {r.signal.unit} within"
        f" {r.horizon_s / 60:g} min",
        "probability": _r(r.probability, 4),
        "method": "max over the 5-min forecast steps of the normal CDF (a lower bound)",
    }


def reading_json(r: Reading) -> dict[str, Any]:
    return {
        "id": r.id,
        "device_id": r.device_id,
        "signal": r.signal.value,
        "unit": r.signal.unit,
        "t": to_iso(r.t),
        "value": r.value,
        "seq": r.seq,
        "received_at": to_iso(r.received_at),
        "flags": [flag.name.lower() for flag in _FLAGS if flag.name and flag in r.flags],
    }


def quarantine_json(q: QuarantinedMessage, values: bool = True) -> dict[str, Any]:
    """``values=False``: metadata only (the payload and the detail may hold clinical
    values: "glucose 700 mg/dL outside ...")."""
    return {
        "id": q.id,
        "received_at": to_iso(q.received_at),
        "topic": q.topic,
        "reason": q.reason,
        **({"detail": q.detail} if values else {}),
        "record_index": q.record_index,
        "device_id": q.device_id,
        "payload_size": q.length,
        "payload_sha256": q.sha256,
        # Only a message refused for its size is kept cut short (ingest.quarantine_keep_bytes).
        "payload_truncated": q.truncated,
        **({"payload_text": q.payload.decode("utf-8", errors="replace")} if values else {}),
    }


def risk_json(r: DecompensationRisk) -> dict[str, Any]:
    return {
        "kind": "hf_decompensation",
        "at": to_iso(r.t),
        "horizon_days": r.horizon_days,
        "probability": _r(r.probability, 4),
        "threshold": _r(r.threshold, 4),
        "above_threshold": r.above_threshold,
        "confidence": r.confidence,
        "confidence_reasons": list(r.confidence_reasons),
        "top_contributions": [
            {
                "feature": c.feature,
                "value": _r(c.value, 3),
                "typical": _r(c.typical, 3),
                "effect": _r(c.effect, 4),
            }
            for c in r.contributions
        ],
        "features": {k: None if v is None else _r(v, 4) for k, v in r.features},
        "provenance": {
            "model": r.provenance.model,
            "version": r.provenance.version,
            "sha256": r.provenance.sha256,
            "window": [to_iso(r.provenance.window_start), to_iso(r.provenance.window_end)],
            "inputs": list(r.provenance.inputs),
        },
    }


def skill_json(s: ForecastSkill) -> dict[str, Any]:
    return {
        "signal": s.signal.value,
        "horizon_min": round(s.horizon_s / 60.0),
        "scored": s.n,
        "rmse": _r(s.rmse, 3),
        "coverage95": _r(s.coverage95, 3),
        "width95": _r(s.width95, 3),
        "unit": s.signal.unit,
    }


def drift_json(report: list[FeatureDrift]) -> list[dict[str, Any]]:
    return [
        {
            "feature": d.feature,
            "psi": None if math.isnan(d.psi) else _r(d.psi, 4),
            "live_missing": None if math.isnan(d.live_missing) else _r(d.live_missing, 3),
            "train_missing": _r(d.train_missing, 3),
            "status": d.status,
        }
        for d in report
    ]


def consumer_json(c: ConsumerStatus, now: float) -> dict[str, Any]:
    """A log consumer's progress: how far behind it is and since when."""
    return {
        "name": c.name,
        "log": c.log.value,
        "position": c.position,
        "backlog": c.backlog,
        "behind_since": None if c.oldest_pending_at is None else to_iso(c.oldest_pending_at),
        "behind_s": None if c.oldest_pending_at is None else _r(now - c.oldest_pending_at, 1),
        "updated_at": None if c.updated_at is None else to_iso(c.updated_at),
        "failures": c.failures,
        "last_error": c.last_error,
        "last_error_at": None if c.last_error_at is None else to_iso(c.last_error_at),
    }


def audit_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "patient_id": e.patient_id,
        "alarm_type": e.alarm_type,
        "action": e.action,
        "outcome": e.outcome,
        "at": to_iso(e.at),
        "recorded_at": to_iso(e.recorded_at),
        "actor": e.actor,
        "reason": e.reason,
        "old": e.old,
        "new": e.new,
    }


def device_json(d: Device, s: DeviceStatus | None) -> dict[str, Any]:
    """A provisioned device with what it last said about itself (its own clock)."""
    return {
        "device_id": d.device_id,
        "device_type": d.device_type.value,
        "patient_id": d.patient_id,
        "online": None if s is None else s.online,
        "battery_pct": None if s is None else s.battery_pct,
        "firmware": None if s is None else s.firmware,
        "clock_offset_s": None if s is None else s.clock_offset_s,
        "sensor_expires_at": (
            None if s is None or s.sensor_expires_at is None else to_iso(s.sensor_expires_at)
        ),
    }
