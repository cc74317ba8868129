"""Domain types: the only things the pipeline's stages pass to each other.

    ingest  -> Reading / Rejection
    estimate-> StateEstimate (+ Forecast)
    assess  -> ThresholdRisk
    alert   -> (issue #7)
    sync    -> (FHIR upstream)

All times are float epoch seconds, UTC, as given by the *device* (event time) unless the
field name says otherwise (``received_at`` is the gateway's clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum
from types import MappingProxyType


class Signal(StrEnum):
    """A physiological quantity the twin tracks, in its canonical unit (declared in
    ``SIGNALS`` below)."""

    GLUCOSE = "glucose"
    SYSTOLIC = "systolic"
    DIASTOLIC = "diastolic"
    HEART_RATE = "heart_rate"
    SPO2 = "spo2"
    RESP_RATE = "resp_rate"
    WEIGHT = "weight"
    SKIN_TEMP = "skin_temp"
    STEPS = "steps"  # count in the reading's interval

    @property
    def unit(self) -> str:
        return SIGNALS[self].unit


class DeviceType(StrEnum):
    CGM = "cgm"  # a sensor, or the phone app that relays it (a Nightscout uploader)
    WRIST = "wrist"  # a wristband, or a heart-rate strap
    BP_CUFF = "bp_cuff"
    SCALE = "scale"
    GLUCOSE_METER = "glucose_meter"  # finger-stick meter (Bluetooth Glucose Profile)
    PULSE_OXIMETER = "pulse_oximeter"  # spot-check or continuous (Pulse Oximeter Profile)

    @property
    def signals(self) -> frozenset[Signal]:
        """What a device of this type may report; anything else is quarantined."""
        return DEVICE_SIGNALS[self]


MMOL_TO_MGDL = 18.0182  # glucose molar mass 180.16 g/mol
KPA_TO_MMHG = 7.50062
LB_TO_KG = 0.45359237


def _same(v: float) -> float:
    return v


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """What the gateway declares about a signal. Adding a signal is one entry in
    ``SIGNALS`` plus its filter (``estimate/models.py``); the wire contract, config
    defaults and the alert stage read from here (the simulator writes the contract on its
    own, on purpose: docs/architecture.md)."""

    unit: str  # canonical unit (UCUM), what the twin, the API and the store use
    wire_units: Mapping[str, Callable[[float], float]]  # SenML units accepted -> canonical
    lo: float  # plausible range in the canonical unit: outside it is out_of_range
    hi: float
    devices: frozenset[DeviceType]  # the device types that may report it
    stale_after_s: float  # default of estimate.stale_after_s_<signal>
    clinical: bool  # a new reading may change a clinical alarm (alert/stage.py)


_MMHG = MappingProxyType({"mmHg": _same, "mm[Hg]": _same, "kPa": lambda v: v * KPA_TO_MMHG})
_PER_MIN = MappingProxyType({"1/min": _same, "/min": _same})
_WRIST = frozenset({DeviceType.WRIST})
_OXIMETRY = frozenset({DeviceType.WRIST, DeviceType.PULSE_OXIMETER})

SIGNALS: dict[Signal, SignalSpec] = {
    # Nightscout warns at 15 min without a CGM reading.
    Signal.GLUCOSE: SignalSpec(
        "mg/dL",
        {"mg/dL": _same, "mmol/L": lambda v: v * MMOL_TO_MGDL},
        20.0,
        600.0,
        frozenset({DeviceType.CGM, DeviceType.GLUCOSE_METER}),
        15 * 60,
        True,
    ),
    # A cuff: 1-3 readings a day.
    Signal.SYSTOLIC: SignalSpec(
        "mmHg", _MMHG, 40.0, 300.0, frozenset({DeviceType.BP_CUFF}), 36 * 3600, True
    ),
    Signal.DIASTOLIC: SignalSpec(
        "mmHg", _MMHG, 20.0, 200.0, frozenset({DeviceType.BP_CUFF}), 36 * 3600, True
    ),
    Signal.HEART_RATE: SignalSpec(
        "1/min",
        {**_PER_MIN, "beat/min": _same},
        20.0,
        300.0,
        frozenset({DeviceType.WRIST, DeviceType.BP_CUFF, DeviceType.PULSE_OXIMETER}),
        15 * 60,
        False,
    ),
    Signal.SPO2: SignalSpec(
        "%", {"%": _same, "/": lambda v: v * 100.0}, 50.0, 100.0, _OXIMETRY, 15 * 60, False
    ),
    Signal.RESP_RATE: SignalSpec("1/min", _PER_MIN, 2.0, 80.0, _WRIST, 15 * 60, False),
    # A scale: daily, some missed days.
    Signal.WEIGHT: SignalSpec(
        "kg",
        {"kg": _same, "g": lambda v: v / 1000.0, "lb": lambda v: v * LB_TO_KG},
        10.0,
        400.0,
        frozenset({DeviceType.SCALE}),
        48 * 3600,
        False,
    ),
    Signal.SKIN_TEMP: SignalSpec(
        "Cel", {"Cel": _same, "K": lambda v: v - 273.15}, 15.0, 45.0, _WRIST, 30 * 60, False
    ),
    Signal.STEPS: SignalSpec("count", {"count": _same}, 0.0, 100_000.0, _WRIST, 60 * 60, False),
}

DEVICE_SIGNALS: dict[DeviceType, frozenset[Signal]] = {
    kind: frozenset(s for s, spec in SIGNALS.items() if kind in spec.devices) for kind in DeviceType
}


class ReadingFlag(IntFlag):
    """Facts about how a reading arrived, for the stages that must treat it differently."""

    NONE = 0
    LATE = 1  # older than a reading already stored for the same device and signal
    BACKFILLED = 2  # arrived long after it was taken (device was offline): never alarm on it
    CLOCK_SKEW = 4  # the device's clock disagrees with the gateway's beyond tolerance
    # The device itself flagged the measurement: body movement or a loose cuff, a strip or
    # temperature warning, a questionable oximetry signal, or a value beyond its range
    # (a meter's "LO" is stored as the plausible range's end with this flag).
    DEVICE_CAUTION = 8


@dataclass(frozen=True, slots=True)
class Device:
    """A provisioned device: the gateway, not the payload, says whose it is."""

    device_id: str
    patient_id: str
    device_type: DeviceType


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What a device said about itself; None fields were not in the message."""

    device_id: str
    online: bool | None = None
    battery_pct: float | None = None
    firmware: str | None = None
    # Gateway time minus device time, estimated from the freshest messages (seconds).
    clock_offset_s: float | None = None
    # When the sensor in use stops (a CGM's session), device time.
    sensor_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded SenML record, in canonical units, not yet bound to a patient."""

    signal: Signal
    t: float
    value: float
    seq: int | None = None
    caution: bool = False  # the device flagged it (ReadingFlag.DEVICE_CAUTION)


@dataclass(frozen=True, slots=True)
class Reading:
    """A measurement bound to its patient through the device's provisioning."""

    patient_id: str
    device_id: str
    signal: Signal
    t: float
    value: float
    received_at: float
    seq: int | None = None
    flags: ReadingFlag = ReadingFlag.NONE
    id: int | None = None  # the store's row id, once stored


class RejectReason(StrEnum):
    """Why a message (or one record of it) was quarantined. Each has one meaning."""

    OVERSIZED = "oversized"
    WRONG_TOPIC = "wrong_topic"
    UNKNOWN_DEVICE = "unknown_device"
    MALFORMED = "malformed"  # not UTF-8 JSON
    NOT_SENML = "not_senml"  # JSON, but not a SenML pack
    UNKNOWN_MEASUREMENT = "unknown_measurement"
    WRONG_UNIT = "wrong_unit"
    BAD_VALUE = "bad_value"  # missing, non-numeric or non-finite value
    OUT_OF_RANGE = "out_of_range"
    BAD_TIME = "bad_time"  # missing, relative or non-finite time
    FUTURE_TIME = "future_time"  # device clock ahead of the gateway beyond tolerance
    # Ahead of the gateway while the gateway's own clock is not synchronised: held, and
    # decoded again once it is (a Pi has no real-time clock).
    CLOCK_UNSYNCHRONISED = "clock_unsynchronised"
    NOT_ALLOWED = "not_allowed"  # the device's type may not report this signal
    # Decoding or storing it failed on a fault of the gateway's own (a bug): kept so that
    # it neither stops ingest nor comes back for ever; decoded again once fixed.
    INTERNAL_ERROR = "internal_error"


class TreatmentKind(StrEnum):
    """What a treatment entered on the patient's phone (a Nightscout uploader) was."""

    CARBS = "carbs"  # grams eaten
    INSULIN = "insulin"  # units given (bolus)
    BOTH = "carbs_insulin"  # a meal bolus: both
    NOTE = "note"  # neither (a note, a sensor change, ...): kept, not plotted as a dose


@dataclass(frozen=True, slots=True)
class Treatment:
    """Carbohydrates eaten or insulin given, as the patient's uploader reported it: shown
    beside the glucose trace; the twin does not model them (yet)."""

    patient_id: str
    device_id: str
    t: float  # when it happened, the uploader's (device) time
    kind: TreatmentKind
    event_type: str  # the uploader's own word ("Meal Bolus", "Carb Correction", ...)
    carbs_g: float | None
    insulin_u: float | None
    received_at: float
    source_id: str | None = None  # the uploader's identifier of the record, if any


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str
    record_index: int | None = None  # None: the whole message


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a number came from: the model that made it and the evidence it used."""

    model: str
    model_version: str
    device_ids: tuple[str, ...]
    through_reading_id: int  # every stored reading up to this id was considered
    n_measurements: int
    n_rejected: int = 0  # readings the innovation gate rejected as implausible


Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Forecast:
    horizon_s: float
    mean: float
    sd: float

    @property
    def interval95(self) -> tuple[float, float]:
        return (self.mean - Z95 * self.sd, self.mean + Z95 * self.sd)


@dataclass(frozen=True, slots=True)
class IssuedForecast:
    """A forecast the twin issued, kept to be scored against the reading that comes:
    ``mean``/``sd`` the body's level as shown, ``reading_mean``/``reading_sd`` what a
    reading should show then (the level plus the sensor's own error and noise)."""

    patient_id: str
    signal: Signal
    issued_at: float  # event time of the estimate it came from
    horizon_s: float
    mean: float
    sd: float
    reading_mean: float
    reading_sd: float
    model: str
    model_version: str

    @property
    def target_t(self) -> float:
        return self.issued_at + self.horizon_s


@dataclass(frozen=True, slots=True)
class ForecastSkill:
    """How the twin's forecasts of one signal at one horizon fared against the readings
    that came, for one patient over a recent window."""

    patient_id: str
    signal: Signal
    horizon_s: float
    n: int
    rmse: float  # reading - forecast of the reading
    coverage95: float  # share of readings inside the 95% interval (nominal 0.95)
    width95: float  # mean width of that interval
    since: float  # target times from here on


@dataclass(frozen=True, slots=True)
class StateEstimate:
    """The twin's belief about one signal of one patient at event time ``t``."""

    patient_id: str
    signal: Signal
    t: float  # event time the estimate refers to
    mean: float
    sd: float
    rate_per_min: float | None  # None for models without a trend state
    rate_sd: float | None
    last_measured_at: float
    provenance: Provenance
    forecasts: tuple[Forecast, ...] = field(default=())

    @property
    def interval95(self) -> tuple[float, float]:
        return (self.mean - Z95 * self.sd, self.mean + Z95 * self.sd)

    def age(self, now: float) -> float:
        """Seconds since the last measurement that fed this estimate."""
        return max(0.0, now - self.last_measured_at)


@dataclass(frozen=True, slots=True)
class ThresholdRisk:
    """Probability that a signal crosses a threshold within a horizon, from a forecast."""

    signal: Signal
    threshold: float
    below: bool
    horizon_s: float
    probability: float
    kind: str = ""  # which of the patient's thresholds: "low", "urgent_low"

    def __post_init__(self) -> None:
        if not (0.0 <= self.probability <= 1.0) or math.isnan(self.probability):
            raise ValueError(f"probability out of [0, 1]: {self.probability}")


@dataclass(frozen=True, slots=True)
class PredictedLow:
    """P(glucose below the patient's low threshold within the predictor's horizon), from
    the twin and the readings of the last 45 min (assess/hypo_predictor.py), at event time
    ``t``. ``probability`` is None when it could not be assessed; ``why_not`` says why."""

    patient_id: str
    t: float
    threshold: float
    horizon_s: float
    probability: float | None
    trend_20min: float | None  # mg/dL/min over the readings of the last 20 min
    model: str
    model_version: str
    why_not: str | None = None


@dataclass(frozen=True, slots=True)
class ModelProvenance:
    """Which model computed a risk, from what."""

    model: str
    version: str
    sha256: str
    window_start: float  # the inputs' event-time window
    window_end: float
    inputs: tuple[str, ...]  # the signals that had data in the window


@dataclass(frozen=True, slots=True)
class Contribution:
    """How much one feature moved the risk: the risk minus the risk with this feature at
    its training median."""

    feature: str
    value: float
    typical: float
    effect: float


@dataclass(frozen=True, slots=True)
class DecompensationRisk:
    patient_id: str
    t: float  # event time the risk refers to
    horizon_days: float
    probability: float  # calibrated
    threshold: float  # the model's alert threshold
    confidence: str  # high | medium | low
    confidence_reasons: tuple[str, ...]
    contributions: tuple[Contribution, ...]  # the largest effects first
    features: tuple[tuple[str, float | None], ...]  # None: unknown, imputed
    provenance: ModelProvenance

    @property
    def above_threshold(self) -> bool:
        return self.probability >= self.threshold


class Role(StrEnum):
    """Who a user of the API and pages is, and so what they may see and do (api/access.py)."""

    PATIENT = "patient"  # their own data and alarms
    CARE_TEAM = "care_team"  # their patients: data, alarms, pauses, settings
    ENGINEER = "engineer"  # devices, health, quarantine metadata, sync: no clinical values


class Priority(StrEnum):
    """IEC 60601-1-8 alarm priorities, plus information signals."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class AlarmState(StrEnum):
    ACTIVE = "active"  # condition present (or latched), nobody has acknowledged it
    ACKNOWLEDGED = "acknowledged"  # someone has it; it resolves when the condition clears
    PAUSED = "paused"  # snoozed until paused_until; re-alerts then if the condition persists
    RESOLVED = "resolved"  # over


@dataclass(frozen=True, slots=True)
class Observation:
    """What one alarm condition looks like for a patient at event time ``t``."""

    patient_id: str
    alarm_type: str
    t: float
    present: bool  # the alarm condition holds (after hysteresis)
    reason: str  # in words, with the values: "glucose 52 mg/dL (95%: 44-60) below 55"
    values: dict[str, float | str | None] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()  # API links to what it is based on
    live: bool = True  # False: based on backfilled data, may resolve but never raise


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    patient_id: str
    alarm_type: str
    priority: Priority
    technical: bool
    state: AlarmState
    raised_at: float
    updated_at: float
    condition_present: bool  # False while a latched alarm waits for acknowledgement
    reason: str
    values: dict[str, float | str | None]
    evidence: tuple[str, ...]
    paused_until: float | None = None
    escalated_at: float | None = None
    acknowledged_by: str | None = None
