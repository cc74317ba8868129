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
from edge_twin.domain import Alarm, Signal, Treatment, TreatmentKind
from edge_twin.estimate import DAY_S, TracePoint, patient_estimates, trace
from edge_twin.store import Store, alarms, devices, readings, risks, treatments
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
    treatments: list[Treatment]  # in the glucose window: carbohydrates, insulin
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

    def points(signal: Signal, since: float) -> list[tuple[float, float, int]]:
        return readings.points(store, patient_id, ids, signal, since, now + 1.0)

    glucose = points(Signal.GLUCOSE, glucose_start)
    period_glucose = points(Signal.GLUCOSE, start)
    summary = summarize_glucose(
        np.array([p[0] for p in period_glucose]),
        np.array([p[1] for p in period_glucose]),
        start,
        now,
        zone,
    )
    systolic = {t: v for t, v, _ in points(Signal.SYSTOLIC, start)}
    bp = [(t, v, systolic[t]) for t, v, _ in points(Signal.DIASTOLIC, start) if t in systolic]
    bin_s = max(3600.0, math.ceil(days * DAY_S / MAX_BINS / 3600.0) * 3600.0)
    vitals = {s: readings.binned(store, patient_id, ids, s, start, now + 1, bin_s) for s in VITALS}
    return PatientTimeline(
        patient_id=patient_id,
        now=now,
        glucose_start=glucose_start,
        start=start,
        settings=AlarmEngine(store, lambda: now).settings(patient_id),
        state=patient_state(store, patient_id, now, config),
        glucose=glucose,
        glucose_trace=trace(store, patient_id, Signal.GLUCOSE, ids, glucose_start, now + 1),
        treatments=[
            x
            for x in treatments.between(store, patient_id, glucose_start, now + 1)
            if x.kind is not TreatmentKind.NOTE
        ],
        glucose_summary=summary,
        blood_pressure=bp,
        weight=[(t, v) for t, v, _ in points(Signal.WEIGHT, start)],
        vitals=vitals,
        vitals_bin_s=bin_s,
        daily_steps=daily_steps(store, patient_id, ids, start, now, zone),
        risks=risks.series(store, patient_id, start, now + 1),
        alarms=alarms.raised_between(store.conn, patient_id, min(start, glucose_start), now + 1),
        open_alarms=[alarm_json(a) for a in alarms.listing(store.conn, patient_id, True, 100)],
        events=alarms.patient_events(store.conn, patient_id, start, 200),
        audit=alarms.audit_log(store.conn, patient_id, 100),
    )


QUARTER_S = 900.0  # every zone's offset is a whole number of quarter hours


def daily_steps(
    store: Store, patient_id: str, ids: list[str], start: float, now: float, zone: ZoneInfo
) -> list[tuple[float, float, float]]:
    """(local midnight, next local midnight, steps) of each whole local day from the
    first midnight after ``start``, and today so far; summed from quarter-hour bins, so a
    day is a calendar day (23 or 25 h across a DST change) in any zone."""
    first = datetime.fromtimestamp(start, UTC).astimezone(zone).date() + timedelta(days=1)
    midnights = []
    day = first
    while (m := datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()) <= now:
        midnights.append(m)
        day += timedelta(days=1)
    if not midnights:
        return []
    bins = readings.binned(store, patient_id, ids, Signal.STEPS, midnights[0], now + 1, QUARTER_S)
    ends = [*midnights[1:], now + 1]
    totals = [0.0] * len(midnights)
    k = 0
    for b, mean, _, _, n in bins:
        while b >= ends[k]:
            k += 1
        totals[k] += mean * n
    return [(m, e, total) for m, e, total in zip(midnights, ends, totals, strict=True)]
