"""Stage 4, alert: the twin's state -> conditions -> the alarm engine -> delivery.

    on_data(patients whose twin moved)   clinical conditions at the patient's event time
    tick(now)                            technical conditions (stale glucose, devices,
                                         forecast fit, storage) and escalation, on the
                                         gateway clock

Event time drives clinical alarms: they are evaluated at the time of the newest reading,
so a replay raises the same alarms at the same event times as living it did. A glucose
observation built on a backfilled reading (the newest glucose reading arrived more than
``ingest.backfill_after_s`` after it was taken) may clear alarms but never raises one,
and no glucose alarm is raised while glucose is stale (the technical alarm says so).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable

from edge_twin.alert import conditions
from edge_twin.alert.engine import AlarmEngine
from edge_twin.assess import PREDICTOR_WINDOW_S, predict_low
from edge_twin.domain import (
    SIGNALS,
    Device,
    DeviceStatus,
    DeviceType,
    ForecastSkill,
    Observation,
    ReadingFlag,
    RejectReason,
    Signal,
)
from edge_twin.estimate import baseline_level, estimate_at, runs_current_model
from edge_twin.store import (
    Store,
    alarms,
    consumers,
    devices,
    forecasts,
    quarantine,
    readings,
    risks,
    twin_state,
    upstream,
)

DAY_S = 86400.0
BP_MIN_MEASUREMENTS = 3
BP_MAX_AGE_S = 3 * DAY_S  # a multi-day level needs recent cuff readings
RISK_MAX_AGE_S = 2 * DAY_S
STORAGE_EVERY_S = 60.0
DELIVERY_EVERY_S = 15.0
# A device that had messages dropped by the quarantine's rate in the flood window is
# flooding (quarantine.FLOOD_WINDOW_S, which its counts start again after).
FLOOD_EVERY_S = 60.0
# The upstream check reads the readings the sync has not sent yet: once a minute.
UPSTREAM_EVERY_S = 60.0
# A slow technical alarm (it needs days of scored forecasts): checked every half hour, so
# its aggregate over the forecast log stays off the per-reading path.
FORECAST_FIT_EVERY_S = 1800.0
TICK_EVERY_S = 5.0
# The glucose readings a clinical evaluation reads: the artefact check looks back 50 min
# and the predictor 45 (conditions.ARTEFACT_CONTEXT_S, PREDICTOR_WINDOW_S), whatever
# the sensor's sampling (1 to 15 min); the count only bounds a flood of readings.
RECENT_GLUCOSE_S = max(conditions.ARTEFACT_CONTEXT_S, PREDICTOR_WINDOW_S)
RECENT_GLUCOSE_MAX = 120
# The filter states a clinical evaluation reads.
CLINICAL_SIGNALS = (Signal.GLUCOSE, Signal.SYSTOLIC, Signal.DIASTOLIC)
# The signals whose new readings can change a clinical alarm (risk changes come through
# the risk stage); technical conditions and escalation run on a tick: a declared, bounded
# delay.
ALARM_SIGNALS = frozenset(s for s, spec in SIGNALS.items() if spec.clinical)


def _due(last: float, now: float, every: float) -> bool:
    """Time for a periodic check: ``every`` seconds since the last, or the clock went
    back (NTP corrected a clock that was ahead): a check is never skipped until the
    clock has caught up with its old mistake."""
    return not 0.0 <= now - last < every


class AlertStage:
    def __init__(
        self,
        store: Store,
        engine: AlarmEngine,
        stale_glucose_s: float,
        upstream_alarm_after_s: float | None = None,
        clock_synchronised: Callable[[], bool] | None = None,
    ) -> None:
        """``upstream_alarm_after_s``: FHIR sync is on, and a patient's data waiting this
        long upstream raises ``upstream_sync_failing``. ``clock_synchronised``: the
        gateway's clock may be unsynchronised (clock.ClockTrust), and readings held for
        it raise ``gateway_clock_unsynchronised``."""
        self._store = store
        self._clock_synchronised = clock_synchronised
        self.engine = engine
        self._stale_glucose_s = stale_glucose_s
        self._upstream_after_s = upstream_alarm_after_s
        self._upstream_checked = -math.inf
        self._storage_checked = -math.inf
        self._delivery: tuple[str, ...] = ()
        self._delivery_after_s = math.inf
        self._delivery_checked = -math.inf
        self._flood_checked = -math.inf
        self._broker: tuple[Callable[[], float | None], Callable[[], str | None], float] | None = (
            None
        )
        self._flood_read_id: int | None = None  # the log's end at the last flood check
        # Devices seen sending valid readings too dense: (device, signal) -> (rate, when).
        self._dense: dict[tuple[str, Signal], tuple[float, float]] = {}
        self._fit_checked = -math.inf
        self._ticked = -math.inf
        self._checked_at = -math.inf
        self._bindings: tuple[int, list[Device]] = (-1, [])

    def on_data(self, patient_ids: Iterable[str]) -> list[int]:
        observations: list[Observation] = []
        for pid in sorted(set(patient_ids)):
            observations += self._clinical(pid)
        return self.engine.observe(observations) if observations else []

    def _clinical(self, pid: str) -> list[Observation]:
        records = {r.signal: r for r in twin_state.load(self._store, pid, CLINICAL_SIGNALS)}
        s = self.engine.settings(pid)

        present = self.engine.present_conditions(pid)  # one query for every condition

        def was(kind: str) -> bool:
            return kind in present

        out: list[Observation] = []
        g = records.get(Signal.GLUCOSE)
        if g is not None and runs_current_model(g):
            recent = readings.newest(
                self._store,
                g.device_ids,
                Signal.GLUCOSE,
                limit=RECENT_GLUCOSE_MAX,
                since=g.t - RECENT_GLUCOSE_S,
            )
            live = bool(recent) and not recent[0].flags & ReadingFlag.BACKFILLED
            estimate = estimate_at(g, g.t, forecasts=False)
            low = predict_low(estimate, recent, s.low_mgdl)
            out += conditions.glucose(estimate, recent, low, s, was, live)
            if recent:
                # Stale is about the gateway's present: a backfilled burst is old on arrival.
                now = max(recent[0].t, recent[0].received_at)
                out.append(conditions.stale_glucose(pid, recent[0].t, now, self._stale_glucose_s))
        sys_, dia = records.get(Signal.SYSTOLIC), records.get(Signal.DIASTOLIC)
        if sys_ is not None and dia is not None:
            levels = []
            for rec in (sys_, dia):
                fresh = rec.t - rec.last_measured_at <= BP_MAX_AGE_S
                level = baseline_level(rec)
                if rec.n_measurements >= BP_MIN_MEASUREMENTS and fresh and level is not None:
                    levels.append(level)
            if len(levels) == 2:
                newest = readings.newest(self._store, sys_.device_ids, Signal.SYSTOLIC, limit=1)
                live = bool(newest) and not newest[0].flags & ReadingFlag.BACKFILLED
                t = max(sys_.t, dia.t)
                out += conditions.blood_pressure(pid, t, levels[0], levels[1], s, was, live)
        latest = risks.latest(self._store, pid)
        if latest:
            risk = latest[0]
            newest_t = twin_state.latest_time(self._store, pid) or risk.t
            if newest_t - risk.t <= RISK_MAX_AGE_S:
                out += conditions.decompensation(risk, was, True)
        return out

    def _forecast_fit(self, now: float) -> list[Observation]:
        by_patient: dict[str, list[ForecastSkill]] = {}
        for s in forecasts.skill(self._store):
            by_patient.setdefault(s.patient_id, []).append(s)
        # A patient whose scores aged out of the window still gets an observation while
        # the alarm is engaged, so that it can clear.
        for pid, kind in alarms.engaged(self._store.conn):
            if kind == "forecast_unreliable":
                by_patient.setdefault(pid, [])
        out = []
        for pid, skills in sorted(by_patient.items()):
            present = self.engine.present_conditions(pid)
            out.append(conditions.forecast_fit(pid, now, skills, present.__contains__))
        return out

    def _upstream(self, now: float, after_s: float) -> list[Observation]:
        conn = self._store.conn
        waiting = upstream.oldest_unsent(conn, upstream.positions(conn))
        parked = upstream.parked_by_patient(conn)
        engaged = {pid for pid, kind in alarms.engaged(conn) if kind == "upstream_sync_failing"}
        return [
            conditions.upstream_sync(
                pid, now, waiting.get(pid), parked.get(pid, (0, now))[0], after_s
            )
            for pid in sorted(waiting.keys() | parked.keys() | engaged)
        ]

    def _devices(self) -> list[Device]:
        """The provisioned devices, re-read when a binding changed (every 5 s otherwise)."""
        version = devices.bindings_version(self._store)
        if version != self._bindings[0]:
            self._bindings = (version, devices.all_devices(self._store))
        return self._bindings[1]

    def watch_delivery(self, channels: tuple[str, ...], after_s: float) -> None:
        """The alarm delivery channels running (log consumer names): one whose events
        wait longer than ``after_s`` raises ``alarm_delivery_failing``. A replay, which
        delivers nothing, watches none."""
        self._delivery, self._delivery_after_s = channels, after_s

    def watch_broker(
        self, down_for: Callable[[], float | None], why: Callable[[], str | None], after_s: float
    ) -> None:
        """The gateway's MQTT link: ``down_for`` says how long it has been without a
        lasting link (None: up; on the monotonic clock, ingest's MqttIngest.down_for),
        ``why`` its last error; down ``after_s`` or longer raises
        ``gateway_broker_unreachable``. A replay watches none."""
        self._broker = (down_for, why, after_s)

    def _broker_link(self, now: float) -> list[Observation]:
        assert self._broker is not None
        down_for, why, after_s = self._broker
        down_s = down_for()
        if down_s is not None and down_s < after_s:
            # Not long enough to say it is down, nor up for good: no word either way (a
            # word would clear an alarm raised before a restart, to raise it again).
            return []
        return [conditions.broker_unreachable(now, down_s, after_s, why())]

    def _delivery_failing(self, now: float) -> Observation:
        conn = self._store.conn
        lagging = consumers.lagging(conn, self._delivery, now, self._delivery_after_s)
        dead = consumers.dead_letter_count(conn, since=now - DAY_S)
        return conditions.delivery_failing(now, lagging, dead, self._delivery_after_s)

    def _flooding(self, now: float) -> list[Observation]:
        patient_of = {d.device_id: d.patient_id for d in self._devices()}
        by_patient: dict[str, dict[str, int]] = {}
        dense: dict[str, dict[tuple[str, Signal], float]] = {}
        for d in quarantine.dropped_since(self._store.conn, now - quarantine.FLOOD_WINDOW_S):
            pid = patient_of.get(d.device_key, "gateway")
            by_patient.setdefault(pid, {})[d.device_key] = d.dropped
        # Valid readings stored since the last check, by their gaps in device time (a
        # backlog drained at once keeps its devices' own spacing, a flood does not); a
        # dense device stays flooding for the flood window after it was last seen dense.
        newest = readings.max_id(self._store)
        first_check = self._flood_read_id is None
        if self._flood_read_id is not None:
            gaps = readings.close_gaps(
                self._store, self._flood_read_id, newest, conditions.CLOSE_GAP_MAX_S
            )
            for (device_id, signal), close in gaps.items():
                rate = conditions.readings_per_min(signal, close)
                if rate is not None:
                    self._dense[(device_id, signal)] = (rate, now)
        self._flood_read_id = newest
        for key, (rate, seen) in list(self._dense.items()):
            if not 0.0 <= now - seen < quarantine.FLOOD_WINDOW_S:
                del self._dense[key]
                continue
            pid = patient_of.get(key[0], "gateway")
            dense.setdefault(pid, {})[key] = rate
            by_patient.setdefault(pid, {})
        if not first_check:
            # Not on the first check after a start: what it cannot see yet (a flood before
            # the restart) must not be cleared, to be raised again a minute later.
            for pid, kind in alarms.engaged(self._store.conn):
                if kind == "device_flooding":
                    by_patient.setdefault(pid, {})  # so that it can clear
        return [
            conditions.device_flooding(now, pid, n, dense.get(pid))
            for pid, n in sorted(by_patient.items())
        ]

    @property
    def checked_at(self) -> float:
        """Gateway time of the last technical check written (-inf before the first)."""
        return self._checked_at

    def tick(self, now: float) -> list[int]:
        """Technical alarms and escalation at gateway time ``now`` (at most every
        TICK_EVERY_S)."""
        if not _due(self._ticked, now, TICK_EVERY_S):
            return []
        self._ticked = now
        observations: list[Observation] = []
        statuses = devices.statuses(self._store)
        by_patient: dict[str, list[DeviceStatus]] = {}
        cgm_last: dict[str, float] = {}
        for d in self._devices():
            if d.device_type is DeviceType.CGM:
                last = readings.latest_time(self._store, d.device_id, Signal.GLUCOSE)
                if last is not None:
                    cgm_last[d.patient_id] = max(last, cgm_last.get(d.patient_id, last))
            by_patient.setdefault(d.patient_id, []).append(
                statuses.get(d.device_id) or DeviceStatus(d.device_id)
            )
        for pid, device_states in sorted(by_patient.items()):
            s = self.engine.settings(pid)
            observations += conditions.device_problems(pid, now, device_states, s)
            if pid in cgm_last:
                observations.append(
                    conditions.stale_glucose(pid, cgm_last[pid], now, self._stale_glucose_s)
                )
        if _due(self._fit_checked, now, FORECAST_FIT_EVERY_S):
            self._fit_checked = now
            observations += self._forecast_fit(now)
        upstream_due = _due(self._upstream_checked, now, UPSTREAM_EVERY_S)
        if self._upstream_after_s is not None and upstream_due:
            self._upstream_checked = now
            observations += self._upstream(now, self._upstream_after_s)
        if _due(self._storage_checked, now, STORAGE_EVERY_S):
            self._storage_checked = now
            usage = shutil.disk_usage(self._store.path.parent)
            observations.append(conditions.storage(now, usage.free, usage.total))
        if _due(self._flood_checked, now, FLOOD_EVERY_S):
            self._flood_checked = now
            observations += self._flooding(now)
            kept = quarantine.count(self._store, RejectReason.INTERNAL_ERROR)
            observations.append(conditions.internal_errors(now, kept))
        if self._delivery and _due(self._delivery_checked, now, DELIVERY_EVERY_S):
            self._delivery_checked = now
            observations.append(self._delivery_failing(now))
        if self._broker is not None:
            observations += self._broker_link(now)
        if self._clock_synchronised is not None:
            synchronised = self._clock_synchronised()
            held = quarantine.count(self._store, RejectReason.CLOCK_UNSYNCHRONISED)
            observations.append(conditions.clock_unsynchronised(now, synchronised, held))
        written = self.engine.observe(observations)
        self._checked_at = now
        return written + self.engine.escalate(now)
