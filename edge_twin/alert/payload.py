"""The alarm as the world sees it: one JSON shape for MQTT, the webhook, the API and the
CLI (docs/alerts.md). Receivers deduplicate events by ``event_id``."""

from __future__ import annotations

from typing import Any

from edge_twin.clock import to_iso
from edge_twin.domain import Alarm
from edge_twin.store.alarms import AlarmEvent


def alarm_json(a: Alarm) -> dict[str, Any]:
    return {
        "alarm_id": a.id,
        "patient_id": a.patient_id,
        "type": a.alarm_type,
        "priority": a.priority.value,
        "technical": a.technical,
        "state": a.state.value,
        "condition_present": a.condition_present,
        "raised_at": to_iso(a.raised_at),
        "updated_at": to_iso(a.updated_at),
        "reason": a.reason,
        "values": a.values,
        "evidence": list(a.evidence),
        "paused_until": None if a.paused_until is None else to_iso(a.paused_until),
        "escalated_at": None if a.escalated_at is None else to_iso(a.escalated_at),
        "acknowledged_by": a.acknowledged_by,
    }


def event_json(e: AlarmEvent, a: Alarm, gateway_id: str) -> dict[str, Any]:
    return {
        "event_id": f"{gateway_id}:{e.id}",
        "event": e.event,
        "at": to_iso(e.at),
        "actor": e.actor,
        "why": e.reason,
        "state": e.state.value,
        "gateway_id": gateway_id,
        "alarm": alarm_json(a),
    }
