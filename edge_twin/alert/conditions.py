"""Alarm conditions read from the twin: estimates, forecasts, risks, device reports.

Each function returns Observations (present or not, with the reason in words, the values
and their uncertainty, and links to the evidence). Hysteresis lives here: a condition
that was present stays present until its recovery threshold is crossed.

Low and urgent low are never slower than the obvious rule: they are present when the
twin's estimate *or the newest delivered reading* is below the threshold, and clear only
when both are back above the clear level. The twin alone lags a real fall (it explains
the start of a fall as correlated sensor error), and on independent physiology an alarm
on the twin alone was less sensitive than a bare "reading below 70". The one exception
is positive evidence of an artefact (see suspected_artefact: a fall faster than physiology,
or a sudden step far steeper than the trend before it, the signatures of a compression
low, a pressure-induced sensor attenuation), for at most ARTEFACT_HOLD_S: low alarms
wait, as the twin's innovation gate waits before believing a jump. A real low is still
there after the hold and alarms then. A suspicion never takes down an alarm already
raised, and only the first kind of evidence holds urgent low.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from edge_twin.alert.catalog import AlarmSettings
from edge_twin.assess import fit_line
from edge_twin.domain import (
    DecompensationRisk,
    DeviceStatus,
    ForecastSkill,
    Observation,
    PredictedLow,
    Reading,
    Signal,
    StateEstimate,
)
from edge_twin.estimate import GATE_PERSIST_S

ARTEFACT_HOLD_S = GATE_PERSIST_S
# mg/dL per minute. Not 5: real falls reach 3-4 mg/dL/min and the CGM's noise adds a few
# more between two readings; at 5 the hold silenced a third of the simulated lows.
ARTEFACT_RATE = 8.0
ARTEFACT_FALL = 25.0  # mg/dL
# A smaller drop is suspect too when it is sudden: far steeper than the trend just before
# it. A real low is a fall already under way that steepens over tens of minutes (insulin
# acts over an hour or more); a compression low drops out of whatever glucose was doing.
# Chosen on firmware_sim's development cohort (seed 5656, with the external source's
# delivery faults; bench/external.py --source sim): see docs/alerts.md for the figures.
STEP_FALL = 15.0  # mg/dL between consecutive readings ...
STEP_RATE = 3.0  # ... at >= this many mg/dL/min ...
STEP_ACCELERATION = 3.0  # ... and this much steeper (mg/dL/min) than the trend before it
TREND_BEFORE_S = 20 * 60.0  # the trend: least squares over this long before the drop
# The readings suspected_artefact needs: the hold window and the trend before it.
ARTEFACT_CONTEXT_S = ARTEFACT_HOLD_S + TREND_BEFORE_S

WasPresent = Callable[[str], bool]


def _fall_before(readings: Sequence[Reading], t: float) -> float | None:
    """How fast glucose was falling (mg/dL/min, >= 0) over TREND_BEFORE_S up to ``t``;
    None with fewer than 3 readings there (unknown: no suspicion is raised on it)."""
    before = [r for r in readings if t - TREND_BEFORE_S <= r.t <= t]
    fit = fit_line([r.t for r in before], [r.value for r in before], TREND_BEFORE_S / 60.0)
    return None if fit is None else max(0.0, -fit.slope)


@dataclass(frozen=True)
class Suspicion:
    """Why the latest glucose looks like a sensor artefact. ``strong``: a fall faster
    than physiology; otherwise a sudden step out of the trend, which may hold low and
    predicted low but never urgent low."""

    reason: str
    strong: bool


def suspected_artefact(recent: Sequence[Reading], t: float) -> Suspicion | None:
    """Why the latest glucose looks like a sensor artefact, or None. ``recent``: the
    readings of the last ARTEFACT_CONTEXT_S at least, in any order."""
    ordered = sorted((r for r in recent if r.t <= t), key=lambda r: r.t)
    window = [r for r in ordered if t - ARTEFACT_HOLD_S < r.t]
    for a, b in itertools.pairwise(window):
        dt_min = (b.t - a.t) / 60.0
        fall = a.value - b.value
        if not (0 < dt_min <= 10 and window[-1].value < a.value - 10):  # ... and still down
            continue
        rate = fall / dt_min
        strong = fall >= ARTEFACT_FALL and rate >= ARTEFACT_RATE
        if strong:
            why = "faster than physiology"
        elif fall >= STEP_FALL and rate >= STEP_RATE:
            before = _fall_before(ordered, a.t)
            if before is None or rate - before < STEP_ACCELERATION:
                continue
            why = f"after a trend of {-before:+.1f} mg/dL/min"
        else:
            continue
        return Suspicion(
            f"glucose fell {fall:.0f} mg/dL in {dt_min:.0f} min ({rate:.1f} mg/dL/min, {why}):"
            " suspected sensor artefact (compression low)",
            strong,
        )
    return None


def _interval(e: StateEstimate) -> str:
    lo, hi = e.interval95
    return f"{e.mean:.0f} mg/dL (95% {lo:.0f}-{hi:.0f})"


def glucose(
    e: StateEstimate,
    recent: Sequence[Reading],
    low: PredictedLow,
    s: AlarmSettings,
    was: WasPresent,
    live: bool,
) -> list[Observation]:
    newest = recent[0] if recent else None  # by device time
    # The newest reading may be ahead of a twin still busy with a backlog: it speaks now.
    pid, t = e.patient_id, max(e.t, newest.t) if newest is not None else e.t
    links = (f"/patients/{pid}/state", f"/patients/{pid}/readings?signal=glucose&limit=12")
    values: dict[str, float | str | None] = {
        "glucose_mgdl": round(e.mean, 1),
        "sd_mgdl": round(e.sd, 1),
        "rate_mgdl_per_min": None if e.rate_per_min is None else round(e.rate_per_min, 2),
    }
    artefact = suspected_artefact(recent, t)
    if newest is not None:
        values["reading_mgdl"] = round(newest.value, 1)
    obs = []

    def below(kind: str, threshold: float, clear: float) -> None:
        limit = clear if was(kind) else threshold
        twin_below = e.mean < limit
        reading_below = newest is not None and newest.value < limit
        now = f"glucose {_interval(e)}" + (
            f", newest reading {newest.value:.0f} mg/dL" if newest is not None else ""
        )
        # A suspicion holds an alarm back, never takes one down: an alarm raised stays
        # until glucose is back above its clear level. Urgent low yields only to a fall
        # faster than physiology, not to the weaker evidence of a sudden step.
        held = artefact is not None and not was(kind) and (artefact.strong or kind != "urgent_low")
        present = (twin_below or reading_below) and not held
        if artefact is not None and held and (twin_below or reading_below):
            reason = f"{artefact.reason}; {now} not alarmed yet"
        elif present:
            which = (
                "reading and twin"
                if twin_below and reading_below
                else ("reading" if reading_below else "twin")
            )
            reason = f"{now}: {which} below {limit:.0f} mg/dL (clears at {clear:.0f})"
        else:
            reason = f"{now}, alarm below {threshold:.0f} mg/dL"
        obs.append(Observation(pid, kind, t, present, reason, values, links, live))

    below("urgent_low", s.urgent_low_mgdl, s.urgent_low_clear_mgdl)
    below("low", s.low_mgdl, s.low_clear_mgdl)
    obs.append(predicted_low(e, t, low, s, was, live, artefact, values, links))
    limit = s.high_clear_mgdl if was("high") else s.high_mgdl
    high = e.mean > limit
    reason = (
        f"glucose {_interval(e)} above {s.high_mgdl:.0f} mg/dL (clears at {s.high_clear_mgdl:.0f})"
        if high
        else f"glucose {_interval(e)}, alarm above {s.high_mgdl:.0f} mg/dL"
    )
    obs.append(Observation(pid, "high", t, high, reason, values, links, live))
    return obs


def predicted_low(
    e: StateEstimate,
    t: float,
    low: PredictedLow,
    s: AlarmSettings,
    was: WasPresent,
    live: bool,
    artefact: Suspicion | None,
    values: dict[str, float | str | None],
    links: tuple[str, ...],
) -> Observation:
    """The predictor's probability of a low within its horizon (assessed by
    assess/hypo_predictor.py from the twin and the readings up to ``t``); clears below half
    the alarm level."""
    p = low.probability
    limit = s.predicted_low_probability / 2 if was("predicted_low") else s.predicted_low_probability
    present = p is not None and p >= limit and (artefact is None or was("predicted_low"))
    if p is None:
        reason = f"predicted low not assessed ({low.why_not}); now {_interval(e)}"
    else:
        reason = (
            f"P(glucose < {low.threshold:.0f} mg/dL within {low.horizon_s / 60:.0f} min) ="
            f" {p:.0%} ({'clears below' if was('predicted_low') else 'alarm at'} {limit:.0%}):"
            f" 20-min trend {low.trend_20min or 0:+.1f} mg/dL/min, twin"
            f" {e.rate_per_min or 0:+.1f} mg/dL/min; now {_interval(e)}"
        )
        if artefact is not None:
            reason = f"{artefact.reason}; {reason}, not alarmed yet"
    return Observation(
        e.patient_id,
        "predicted_low",
        t,
        present,
        reason,
        {
            **values,
            "probability": 0.0 if p is None else round(p, 4),
            "trend_20min_mgdl_per_min": (
                None if low.trend_20min is None else round(low.trend_20min, 2)
            ),
            "predictor_version": low.model_version,
        },
        links,
        live,
    )


def blood_pressure(
    patient_id: str,
    t: float,
    systolic: tuple[float, float] | None,
    diastolic: tuple[float, float] | None,
    s: AlarmSettings,
    was: WasPresent,
    live: bool,
) -> list[Observation]:
    """``systolic``/``diastolic``: the twin's multi-day level (personal baseline) and SD."""
    if systolic is None or diastolic is None:
        return []
    margin = s.bp_clear_margin_mmhg if was("bp_high_sustained") else 0.0
    sys_limit, dia_limit = s.bp_systolic_mmhg - margin, s.bp_diastolic_mmhg - margin
    present = systolic[0] >= sys_limit or diastolic[0] >= dia_limit
    reason = (
        f"multi-day blood pressure {systolic[0]:.0f}/{diastolic[0]:.0f} mmHg"
        f" (SD {systolic[1]:.0f}/{diastolic[1]:.0f}); alarm at {sys_limit:.0f}/{dia_limit:.0f}"
    )
    values: dict[str, float | str | None] = {
        "systolic_mmhg": round(systolic[0], 1),
        "diastolic_mmhg": round(diastolic[0], 1),
    }
    links = (f"/patients/{patient_id}/state", f"/patients/{patient_id}/readings?signal=systolic")
    return [Observation(patient_id, "bp_high_sustained", t, present, reason, values, links, live)]


def decompensation(risk: DecompensationRisk, was: WasPresent, live: bool) -> list[Observation]:
    """Above the model's threshold, unless the model itself says its confidence is low;
    clears below 80% of the threshold."""
    limit = risk.threshold * (0.8 if was("decompensation_risk") else 1.0)
    present = risk.probability >= limit and risk.confidence != "low"
    drivers = ", ".join(
        f"{c.feature} {c.value:.2f} (usual {c.typical:.2f})" for c in risk.contributions
    )
    reason = (
        f"decompensation risk {risk.probability:.0%} within {risk.horizon_days:g} days"
        f" (alarm at {limit:.0%}, confidence {risk.confidence}); driven by {drivers or 'nothing'}"
    )
    values: dict[str, float | str | None] = {
        "probability": round(risk.probability, 4),
        "confidence": risk.confidence,
        "model": f"{risk.provenance.model} {risk.provenance.version}",
    }
    links = (f"/patients/{risk.patient_id}/risk",)
    return [
        Observation(
            risk.patient_id, "decompensation_risk", risk.t, present, reason, values, links, live
        )
    ]


def stale_glucose(
    patient_id: str, last_reading_t: float, now: float, stale_after_s: float
) -> Observation:
    """From the stored readings, not the twin: a twin busy with a backlog is not a
    silent sensor."""
    age = max(0.0, now - last_reading_t)
    present = age > stale_after_s
    return Observation(
        patient_id,
        "signal_stale",
        now,
        present,
        f"last glucose reading {age / 60:.0f} min ago (limit {stale_after_s / 60:.0f} min)"
        + ("; glucose alarms cannot be raised until data returns" if present else ""),
        {"age_s": round(age), "last_reading_at": last_reading_t},
        (f"/patients/{patient_id}/readings?signal=glucose&limit=12",),
    )


def upstream_sync(
    patient_id: str, now: float, oldest_unsent_at: float | None, parked: int, alarm_after_s: float
) -> Observation:
    """The care team's copy of this patient falls behind: data waiting longer than
    ``sync.alarm_after_s`` (upstream down, credentials wrong) or refused by the server."""
    waiting = None if oldest_unsent_at is None else max(0.0, now - oldest_unsent_at)
    late = waiting is not None and waiting > alarm_after_s
    present = late or parked > 0
    problems = []
    if late:
        assert oldest_unsent_at is not None
        since = datetime.fromtimestamp(oldest_unsent_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        problems.append(f"care team is not receiving this patient's data since {since}")
    if parked:
        problems.append(f"{parked} resource(s) refused by the FHIR server (edge-twin sync parked)")
    return Observation(
        patient_id,
        "upstream_sync_failing",
        now,
        present,
        "; ".join(problems) if problems else "upstream sync is current",
        {"waiting_s": None if waiting is None else round(waiting), "parked": parked},
        ("/health", "/sync"),
    )


def sensor_session(
    patient_id: str, now: float, statuses: Sequence[DeviceStatus], s: AlarmSettings
) -> Observation:
    """A sensor whose session ends within ``sensor_ending_warn_h`` (or has ended): the
    patient needs a new one at hand before glucose goes dark. Device time is moved to
    gateway time with the device's estimated clock offset."""
    ending = []
    for d in statuses:
        if d.sensor_expires_at is None:
            continue
        left_h = (d.sensor_expires_at + (d.clock_offset_s or 0.0) - now) / 3600.0
        if left_h <= s.sensor_ending_warn_h:
            ending.append((left_h, d.device_id))
    ending.sort()
    words = [
        f"{device}: sensor session ended {-h:.1f} h ago, replace the sensor"
        if h <= 0
        else f"{device}: sensor session ends in {h:.1f} h"
        for h, device in ending
    ]
    return Observation(
        patient_id,
        "sensor_session_ending",
        now,
        bool(ending),
        "; ".join(words) if ending else "no sensor session ending soon",
        {
            "devices": ", ".join(d for _, d in ending),
            "hours_left": round(ending[0][0], 2) if ending else None,
        },
        ("/devices",),
    )


def device_problems(
    patient_id: str, now: float, statuses: Sequence[DeviceStatus], s: AlarmSettings
) -> list[Observation]:
    """What the patient's devices said about themselves (one status per device, empty
    for a device that has said nothing yet): offline, battery, the sensor's session."""
    offline = sorted(d.device_id for d in statuses if d.online is False)
    low = sorted(
        d.device_id
        for d in statuses
        if d.battery_pct is not None and d.battery_pct < s.battery_low_pct
    )
    links = ("/devices",)
    return [
        sensor_session(patient_id, now, statuses, s),
        Observation(
            patient_id,
            "device_offline",
            now,
            bool(offline),
            f"offline: {', '.join(offline)}" if offline else "every device online",
            {"devices": ", ".join(offline)},
            links,
        ),
        Observation(
            patient_id,
            "battery_low",
            now,
            bool(low),
            f"battery below {s.battery_low_pct:.0f}%: {', '.join(low)}" if low else "batteries ok",
            {"devices": ", ".join(low)},
            links,
        ),
    ]


# The forecasts' fit to a patient (estimate/scorekeeper.py): judged once this many have
# been scored in the window; alarmed below FIT_ALARM_COVERAGE of readings inside the 95%
# interval, cleared above FIT_CLEAR_COVERAGE. Forecasts overlap and their errors are
# correlated, so the effective sample is smaller than the count: the margin is wide.
FIT_MIN_SCORED = 48
FIT_ALARM_COVERAGE = 0.80
FIT_CLEAR_COVERAGE = 0.88


def forecast_fit(
    patient_id: str, now: float, skills: Sequence[ForecastSkill], was: WasPresent
) -> Observation:
    """The twin's scored forecasts for one patient: present when, for some signal and
    horizon, far fewer readings than the nominal 95% fall inside the forecast interval."""
    limit = FIT_CLEAR_COVERAGE if was("forecast_unreliable") else FIT_ALARM_COVERAGE
    judged = [s for s in skills if s.n >= FIT_MIN_SCORED]
    poor = [s for s in judged if s.coverage95 < limit]
    words = [
        f"{s.signal.value} {s.horizon_s / 60:.0f}-min forecasts: {s.coverage95:.0%} of {s.n}"
        f" readings inside the 95% interval (RMSE {s.rmse:.3g})"
        for s in poor
    ]
    if poor:
        reason = "; ".join(words) + f" (alarm below {limit:.0%}): the models do not fit"
    elif judged:
        reason = "forecasts fit: " + ", ".join(
            f"{s.signal.value} {s.horizon_s / 60:.0f} min {s.coverage95:.0%}" for s in judged
        )
    else:
        reason = f"fewer than {FIT_MIN_SCORED} forecasts scored yet"
    worst = min(judged, key=lambda s: s.coverage95) if judged else None
    return Observation(
        patient_id,
        "forecast_unreliable",
        now,
        bool(poor),
        reason,
        {
            "worst_coverage95": None if worst is None else round(worst.coverage95, 3),
            "signal": None if worst is None else worst.signal.value,
            "horizon_min": None if worst is None else round(worst.horizon_s / 60.0),
        },
        (f"/patients/{patient_id}/forecast-skill",),
    )


# Below this much free space the gateway's disk is nearly full (gateway_storage, /health,
# doctor): about a week of a home's readings and the WAL's headroom.
STORAGE_LOW_BYTES = 200 * 2**20


def storage_low(free_bytes: int, total_bytes: int) -> bool:
    """The disk is nearly full: under STORAGE_LOW_BYTES or 5% free (gateway_storage,
    /health and doctor say the same)."""
    return free_bytes < STORAGE_LOW_BYTES or (total_bytes > 0 and free_bytes / total_bytes < 0.05)


def storage(now: float, free_bytes: int, total_bytes: int) -> Observation:
    share = free_bytes / total_bytes if total_bytes else math.nan
    present = storage_low(free_bytes, total_bytes)
    return Observation(
        "gateway",
        "gateway_storage",
        now,
        present,
        f"{free_bytes / 2**20:.0f} MiB free ({share:.0%} of the disk)",
        {"free_bytes": free_bytes, "total_bytes": total_bytes},
        ("/health",),
    )


def delivery_failing(
    now: float, lagging: dict[str, float], dead_letters: int, after_s: float
) -> Observation:
    """An alarm delivery channel has had events waiting longer than ``after_s``
    (``lagging``: channel -> age of its oldest waiting event, s), or a receiver refused
    events for good in the last day: IEC 60601-1-8 expects a distributed alarm system to
    report its own failure. Shown locally (pages, the API), and over any channel that
    still works."""
    waiting = sorted(lagging.items())
    parts = [f"{name}: events waiting for {age / 60:.0f} min" for name, age in waiting]
    if dead_letters:
        parts.append(f"{dead_letters} events refused for good by the receiver in the last day")
    return Observation(
        "gateway",
        "alarm_delivery_failing",
        now,
        bool(lagging) or dead_letters > 0,
        "; ".join(parts) or f"every channel delivers within {after_s:g} s",
        {**{f"{k}_waiting_s": float(round(v)) for k, v in waiting}, "dead_letters": dead_letters},
        ("/health",),
    )


# The fastest a device plausibly samples each signal, in readings a minute of its own
# time: a Bluetooth heart-rate strap streams at 1 Hz, a CGM reads at most once a minute
# (FreeStyle Libre 3; most every 5 min), a cuff's measurement takes about a minute, a
# wearable's other channels at most once a second. Valid readings far denser than this
# come from broken firmware (a loop resending with fresh times, a racing clock): they are
# stored, and said (device_flooding), since they would otherwise fill the disk unseen.
FASTEST_PER_MIN: dict[Signal, float] = {
    Signal.GLUCOSE: 2.0,
    Signal.SYSTOLIC: 2.0,
    Signal.DIASTOLIC: 2.0,
    Signal.HEART_RATE: 90.0,
    Signal.SPO2: 90.0,
    Signal.RESP_RATE: 90.0,
    Signal.SKIN_TEMP: 90.0,
    Signal.STEPS: 90.0,
    Signal.WEIGHT: 2.0,
}
# The longest gap that can count as too short, whatever the signal.
CLOSE_GAP_MAX_S = 60.0 / min(FASTEST_PER_MIN.values())
# Fewer readings closer than the fastest sampling between two checks are never a flood
# (a few resent with fresh times, a meter's records of one morning).
DENSE_MIN_READINGS = 10


def readings_per_min(signal: Signal, close_gaps: list[float]) -> float | None:
    """From the gaps (device time) under CLOSE_GAP_MAX_S between a device's consecutive
    new readings of ``signal``: the rate of those closer than the signal's fastest
    sampling (60 / their median gap), when there are at least DENSE_MIN_READINGS of them;
    else None. (Gaps, not count over span: a flood stays a flood beside an old reading.)"""
    fastest = FASTEST_PER_MIN.get(signal)
    if fastest is None:
        return None
    close = sorted(g for g in close_gaps if g < 60.0 / fastest)
    if len(close) < DENSE_MIN_READINGS:
        return None
    return 60.0 / max(close[len(close) // 2], 1e-3)


def device_flooding(
    now: float,
    patient_id: str,
    dropped: dict[str, int],
    dense: dict[tuple[str, Signal], float] | None = None,
) -> Observation:
    """Devices of ``patient_id`` (or unattributable messages, for "gateway") sent rejected
    messages beyond the quarantine's rate recently (``dropped`` counts them per device),
    or valid readings far denser than they can sample (``dense``: readings a minute of the
    device's own time, per device and signal)."""
    names = {k or "(no device)": n for k, n in sorted(dropped.items())}
    fast = sorted((dense or {}).items())
    parts = [f"{d}: {n} bad messages not kept" for d, n in names.items()]
    parts += [
        f"{d}: {rate:.0f} {signal.value} readings a minute of its own time (at most"
        f" {FASTEST_PER_MIN[signal]:g} expected), stored"
        for (d, signal), rate in fast
    ]
    values: dict[str, float | str | None] = {f"{d}_dropped": float(n) for d, n in names.items()}
    values |= {f"{d}_{signal.value}_per_min": round(rate, 1) for (d, signal), rate in fast}
    return Observation(
        patient_id,
        "device_flooding",
        now,
        bool(parts),
        "; ".join(parts)
        or "no device sends more bad messages than the quarantine takes, nor readings"
        " faster than it can sample",
        values,
        ("/quarantine", "/devices"),
    )


def internal_errors(now: float, kept: int) -> Observation:
    """Messages kept aside as internal_error: a bug met them; their readings wait."""
    return Observation(
        "gateway",
        "gateway_internal_error",
        now,
        kept > 0,
        f"{kept} messages kept aside as internal_error (see the gateway's log; then"
        " edge-twin reprocess --reason internal_error)",
        {"internal_error_messages": float(kept)},
        ("/health", "/quarantine"),
    )


def broker_unreachable(
    now: float, down_s: float | None, after_s: float, why: str | None
) -> Observation:
    """The gateway has had no lasting link to its MQTT broker for ``down_s`` seconds
    (None: it has one): no device's readings arrive over MQTT, so no clinical alarm can
    be raised from them, and the MQTT displays hear nothing."""
    down = down_s is not None and down_s >= after_s
    reason = (
        f"the gateway has had no lasting link to its MQTT broker for {down_s:.0f} s"
        f"{f' ({why})' if why else ''}: no device readings arrive over MQTT and no clinical"
        " alarm can be raised from them"
        if down and down_s is not None
        else "the gateway is connected to its MQTT broker"
    )
    return Observation(
        "gateway",
        "gateway_broker_unreachable",
        now,
        down,
        reason,
        {"disconnected_s": float(round(down_s or 0.0))},
        ("/health",),
    )


def clock_unsynchronised(now: float, synchronised: bool, held: int) -> Observation:
    """The gateway's clock is not synchronised and readings ahead of it are held: they
    are stored once it is, but until then they raise no alarm (the IEC 60601-1-8 way: a
    distributed alarm system says when it cannot do its job)."""
    return Observation(
        "gateway",
        "gateway_clock_unsynchronised",
        now,
        not synchronised and held > 0,
        f"{held} messages held until the gateway's clock is synchronised",
        {"held_messages": held},
        ("/health",),
    )
