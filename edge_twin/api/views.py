"""What a reader sees of a patient, as the API, the dashboard and the CLI show it: each
signal's estimate, with the glucose threshold risks assessed at the patient's own alarm
thresholds (alarm settings), and the latest decompensation risk."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from edge_twin.alert import AlarmEngine, AlarmSettings, alarm_json
from edge_twin.api.serialize import estimate_json, risk_json
from edge_twin.assess import GlucoseSummary, summarize_glucose, threshold_risks
from edge_twin.clock import to_iso
from edge_twin.config import Config
from edge_twin.domain import Alarm, Signal
from edge_twin.estimate import DAY_S, TracePoint, patient_estimates, trace
from edge_twin.store import Store, alarms, devices, readings, risks
from edge_twin.store.alarms import AlarmEvent, AuditEntry
from edge_twin.store.risks import RiskPoint

ZERO = timedelta(0)


def patient_state(store: Store, patient_id: str, now: float, config: Config) -> dict[str, Any]:
    settings = AlarmEngine(store, lambda: now).settings(patient_id)
    stale_after = config.estimate.stale_after_s
    latest_risk = risks.latest(store, patient_id)
    signals = {}
    for e in patient_estimates(store, patient_id, now):
        assessed = (
            threshold_risks(e, settings.low_mgdl, settings.urgent_low_mgdl)
            if e.signal is Signal.GLUCOSE
            else []
        )
        signals[e.signal.value] = estimate_json(e, now, stale_after, assessed)
    return {
        "patient_id": patient_id,
        "as_of": to_iso(now),
        "signals": signals,
        "risk": risk_json(latest_risk[0]) if latest_risk else None,
    }


@dataclass(frozen=True)
class PatientTimeline:
    """What the patient's page draws: a glucose window (hours, with the twin's estimate
    and forecast), and a period (days) for everything else."""

    patient_id: str
    now: float
    glucose_start: float  # the glucose plot's window
    start: float  # the period's
    settings: AlarmSettings
    state: dict[str, Any]  # patient_state: the estimates now, with their forecasts
    glucose: list[tuple[float, float, int]]  # readings in the window: t, mg/dL, flags
    glucose_trace: list[TracePoint]
    glucose_summary: GlucoseSummary | None
    blood_pressure: list[tuple[float, float, float]]  # t, diastolic, systolic
    weight: list[tuple[float, float]]
    vitals: dict[Signal, list[tuple[float, float, float, float, int]]]  # readings.binned
    vitals_bin_s: float
    daily_steps: list[tuple[float, float, float]]  # local day start, end, total
    risks: list[RiskPoint]
    alarms: list[Alarm]  # raised in the period or open: the plots' markers
    open_alarms: list[dict[str, Any]]
    events: list[tuple[AlarmEvent, str]]  # the alarms' audit trail, newest first
    audit: list[AuditEntry]  # pauses and settings changes, newest first


VITALS = (Signal.HEART_RATE, Signal.SPO2, Signal.RESP_RATE)
MAX_BINS = 400  # points a vital-sign line gets over the period (a plot is ~700 px wide)


def patient_timeline(
    store: Store,
    patient_id: str,
    now: float,
    config: Config,
    days: float,
    hours: float,
    zone: ZoneInfo,
) -> PatientTimeline:
    ids = devices.device_ids_of(store, patient_id)
    start, glucose_start = now - days * DAY_S, now - hours * 3600.0
    glucose = readings.points(store, ids, Signal.GLUCOSE, glucose_start, now + 1.0)
    period_glucose = readings.points(store, ids, Signal.GLUCOSE, start, now + 1.0)
    summary = summarize_glucose(
        np.array([p[0] for p in period_glucose]),
        np.array([p[1] for p in period_glucose]),
        start,
        now,
        zone,
    )
    systolic = {t: v for t, v, _ in readings.points(store, ids, Signal.SYSTOLIC, start, now + 1)}
    bp = [
        (t, v, systolic[t])
        for t, v, _ in readings.points(store, ids, Signal.DIASTOLIC, start, now + 1)
        if t in systolic
    ]
    bin_s = max(3600.0, math.ceil(days * DAY_S / MAX_BINS / 3600.0) * 3600.0)
    # Daily bins start at the local midnight (the period's first day's offset).
    offset = datetime.fromtimestamp(start, UTC).astimezone(zone).utcoffset() or ZERO
    midnight = -offset.total_seconds() % DAY_S
    steps = [
        (b, b + DAY_S, mean * n)
        for b, mean, _, _, n in readings.binned(
            store, ids, Signal.STEPS, start, now + 1, DAY_S, midnight
        )
    ]
    return PatientTimeline(
        patient_id=patient_id,
        now=now,
        glucose_start=glucose_start,
        start=start,
        settings=AlarmEngine(store, lambda: now).settings(patient_id),
        state=patient_state(store, patient_id, now, config),
        glucose=glucose,
        glucose_trace=trace(store, patient_id, Signal.GLUCOSE, ids, glucose_start, now + 1),
        glucose_summary=summary,
        blood_pressure=bp,
        weight=[(t, v) for t, v, _ in readings.points(store, ids, Signal.WEIGHT, start, now + 1)],
        vitals={s: readings.binned(store, ids, s, start, now + 1, bin_s) for s in VITALS},
        vitals_bin_s=bin_s,
        daily_steps=steps,
        risks=risks.series(store, patient_id, start, now + 1),
        alarms=alarms.raised_between(store.conn, patient_id, min(start, glucose_start), now + 1),
        open_alarms=[alarm_json(a) for a in alarms.listing(store.conn, patient_id, True, 100)],
        events=alarms.patient_events(store.conn, patient_id, start, 200),
        audit=alarms.audit_log(store.conn, patient_id, 100),
    )
