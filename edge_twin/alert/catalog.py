"""The alarms the gateway can raise, and the per-patient thresholds they use.

Priorities follow IEC 60601-1-8 practice: high for what needs action within minutes
(urgent low), medium within the hour or day, low for awareness. High-priority alarms
latch: they stay until someone acknowledges them, even after the condition clears.
Technical alarms (data or equipment trouble) are kept apart from clinical ones and never
outrank an urgent clinical alarm.

Every threshold has an alert value and a recovery value (hysteresis): an alarm raised at
70 mg/dL clears only above 80, so noise around the threshold does not make it flap.
Persistence: a condition must hold this long (event time) before it raises an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from edge_twin.domain import Priority
from edge_twin.errors import ConfigError

# The longest pause of an alarm type, by priority: a high-priority alarm may be paused
# only while it sounds, briefly (the common CGM snooze is 30 min, Nightscout's default);
# the rest for a bounded time, never for good (IEC 60601-1-8: paused is time-limited).
MAX_PAUSE_S = {
    Priority.HIGH: 30 * 60.0,
    Priority.MEDIUM: 4 * 3600.0,
    Priority.LOW: 24 * 3600.0,
    Priority.INFO: 24 * 3600.0,
}


@dataclass(frozen=True)
class AlarmType:
    name: str
    priority: Priority
    technical: bool
    persistence_s: float
    description: str

    @property
    def latching(self) -> bool:
        return self.priority is Priority.HIGH

    @property
    def max_pause_s(self) -> float:
        return MAX_PAUSE_S[self.priority]

    @property
    def pause_needs_open_alarm(self) -> bool:
        """A high-priority alarm cannot be paused before it sounds."""
        return self.priority is Priority.HIGH


CATALOG: dict[str, AlarmType] = {
    a.name: a
    for a in (
        AlarmType(
            "urgent_low",
            Priority.HIGH,
            False,
            0.0,
            "glucose below the urgent-low threshold (the twin's estimate or the newest"
            " reading, unless a sensor artefact is suspected)",
        ),
        # No persistence delay: a reading below the threshold alarms at once, as the bare
        # threshold a CGM app shows does (a 10-min delay here made the gateway's low alarm
        # less sensitive than that threshold on independent physiology); hysteresis and the
        # artefact hold keep noise and compression lows out.
        AlarmType(
            "low",
            Priority.MEDIUM,
            False,
            0.0,
            "glucose below the low threshold (the twin's estimate or the newest reading,"
            " unless a sensor artefact is suspected)",
        ),
        AlarmType(
            "predicted_low",
            Priority.MEDIUM,
            False,
            0.0,
            "probability of glucose below the low threshold within the predictor's horizon"
            " (45 min), from the twin and the last 45 min of readings",
        ),
        AlarmType("high", Priority.LOW, False, 30 * 60.0, "glucose above the high threshold"),
        AlarmType(
            "bp_high_sustained",
            Priority.MEDIUM,
            False,
            0.0,
            "blood pressure high on the multi-day level (the twin's personal baseline), not"
            " a single reading",
        ),
        AlarmType(
            "decompensation_risk",
            Priority.MEDIUM,
            False,
            0.0,
            "heart-failure decompensation risk at or above the model's threshold",
        ),
        AlarmType(
            "signal_stale",
            Priority.MEDIUM,
            True,
            0.0,
            "no glucose reading for longer than its staleness limit: glucose alarms cannot"
            " be raised",
        ),
        AlarmType("device_offline", Priority.LOW, True, 0.0, "a device reported itself offline"),
        AlarmType("battery_low", Priority.LOW, True, 0.0, "a device's battery is low"),
        AlarmType(
            "forecast_unreliable",
            Priority.LOW,
            True,
            0.0,
            "the twin's forecasts for this patient leave their 95% interval far more often"
            " than 5% of the time: the models do not fit this patient",
        ),
        AlarmType(
            "sensor_session_ending",
            Priority.LOW,
            True,
            0.0,
            "a CGM's sensor session ends soon (or has ended): a new sensor is needed",
        ),
        # A distributed alarm system reports its own failure (IEC 60601-1-8): the care
        # team's copy of the data is the other half of the distributed system.
        AlarmType(
            "upstream_sync_failing",
            Priority.MEDIUM,
            True,
            0.0,
            "the care team's FHIR server has not received this patient's data for longer than"
            " sync.alarm_after_s, or refused some of it",
        ),
        AlarmType(
            "gateway_storage",
            Priority.MEDIUM,
            True,
            0.0,
            "the gateway's disk is nearly full: readings may stop being stored",
        ),
        AlarmType(
            "alarm_delivery_failing",
            Priority.MEDIUM,
            True,
            0.0,
            "alarms cannot reach a care-team channel (the webhook, the MQTT displays) or its"
            " receiver refused some: until it is fixed they show on the gateway's pages only",
        ),
        AlarmType(
            "device_flooding",
            Priority.LOW,
            True,
            0.0,
            "a device sends more bad messages than the quarantine takes (the excess is"
            " counted, not kept), or valid readings far faster than it can sample (they are"
            " stored): its firmware or configuration needs a look",
        ),
        AlarmType(
            "gateway_broker_unreachable",
            Priority.MEDIUM,
            True,
            0.0,
            "the gateway cannot reach its MQTT broker: devices' readings do not arrive and"
            " no clinical alarm can be raised from them until it is back",
        ),
        AlarmType(
            "gateway_internal_error",
            Priority.MEDIUM,
            True,
            0.0,
            "messages met a fault of the gateway's own and are kept aside (internal_error):"
            " their readings are not in the twin until the fault is fixed and they are"
            " decoded again",
        ),
        AlarmType(
            "gateway_clock_unsynchronised",
            Priority.MEDIUM,
            True,
            0.0,
            "the gateway's clock is not synchronised (no NTP since boot: a Pi has no"
            " real-time clock) and readings that look ahead of it are held: they raise no"
            " alarm until it is",
        ),
    )
}


@dataclass(frozen=True)
class AlarmSettings:
    """Per-patient thresholds (canonical units). Bounds keep them clinically sane."""

    urgent_low_mgdl: float = 55.0
    urgent_low_clear_mgdl: float = 65.0
    low_mgdl: float = 70.0
    low_clear_mgdl: float = 80.0
    high_mgdl: float = 250.0
    high_clear_mgdl: float = 220.0
    # The shipped predictor's own alarm level (assess/shipped/hypo_predictor.json; a test
    # keeps them equal): the lowest with <= 0.9 false alarms a patient-day in training.
    predicted_low_probability: float = 0.14
    bp_systolic_mmhg: float = 160.0
    bp_diastolic_mmhg: float = 100.0
    bp_clear_margin_mmhg: float = 10.0
    battery_low_pct: float = 15.0
    sensor_ending_warn_h: float = 12.0
    # A high-priority alarm nobody acknowledged within this is escalated to the care team.
    escalate_after_min: float = 15.0


BOUNDS: dict[str, tuple[float, float]] = {
    "urgent_low_mgdl": (40, 60),
    "urgent_low_clear_mgdl": (45, 90),
    "low_mgdl": (55, 100),
    "low_clear_mgdl": (60, 120),
    "high_mgdl": (140, 400),
    "high_clear_mgdl": (120, 390),
    "predicted_low_probability": (0.05, 0.95),
    "bp_systolic_mmhg": (130, 220),
    "bp_diastolic_mmhg": (80, 130),
    "bp_clear_margin_mmhg": (0, 30),
    "battery_low_pct": (5, 50),
    "sensor_ending_warn_h": (1, 72),
    "escalate_after_min": (1, 240),
}


# Settings a former version had; stored values of them are ignored, not refused.
RETIRED = frozenset({"predicted_low_horizon_min"})  # the predictor's horizon is trained


def validated(base: AlarmSettings, changes: dict[str, Any]) -> AlarmSettings:
    """``base`` with ``changes`` applied; ConfigError lists every problem with its fix."""
    known = {f.name for f in fields(AlarmSettings)}
    problems = []
    clean: dict[str, float] = {}
    for key, value in changes.items():
        if key not in known:
            problems.append(f"unknown alarm setting {key!r} (known: {', '.join(sorted(known))})")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: {value!r} is not a number")
            continue
        lo, hi = BOUNDS[key]
        if not lo <= value <= hi:
            problems.append(f"{key}: {value!r} is out of range: use a value from {lo} to {hi}")
            continue
        clean[key] = float(value)
    settings = replace(base, **clean) if not problems else base
    pairs = (
        ("urgent_low_mgdl", "urgent_low_clear_mgdl", "must be below"),
        ("low_mgdl", "low_clear_mgdl", "must be below"),
        ("urgent_low_mgdl", "low_mgdl", "must be below"),
        ("high_clear_mgdl", "high_mgdl", "must be below"),
        ("low_clear_mgdl", "high_clear_mgdl", "must be below"),
    )
    for a, b, words in pairs:
        if not problems and getattr(settings, a) >= getattr(settings, b):
            problems.append(
                f"{a} ({getattr(settings, a):g}) {words} {b} ({getattr(settings, b):g})"
            )
    if problems:
        raise ConfigError("invalid alarm settings:\n  - " + "\n  - ".join(problems))
    return settings
