"""The alarm state machine. All state is in the store; every change is an audit event.

    Observation (condition present or not, at event time t)
      -> persistence (held for AlarmType.persistence_s) -> raise / update / clear

    states      active -> acknowledged -> resolved
                active -> (condition clears) -> resolved, or for high priority: latched
                          (stays active, condition_present = 0) until acknowledged
                any open -> paused until T (snooze, scoped by patient and alarm type);
                          at T, the next observation re-alerts if the condition is still
                          there, or resolves it
                active high priority, unacknowledged for escalate_after_min -> escalated

Rules against alarm fatigue kept here: one open alarm per (patient, type) (dedup); an
observation from backfilled data (``live=False``) can clear an alarm but never raise one;
a paused type raises nothing until its time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import fields

from edge_twin.alert.catalog import CATALOG, RETIRED, AlarmSettings, AlarmType, validated
from edge_twin.domain import Alarm, AlarmState, Observation
from edge_twin.errors import AlarmError, ConfigError
from edge_twin.store import Store, alarms
from edge_twin.store.alarms import Condition, Pause

GATEWAY = "gateway"  # the actor of automatic changes


class AlarmEngine:
    def __init__(
        self,
        store: Store,
        wall: Callable[[], float],
        defaults: AlarmSettings | None = None,
        care_team_channel: bool = False,
    ) -> None:
        """``wall``: the gateway clock; ``defaults``: the thresholds of a patient with no
        settings of their own (docs/alerts.md; the catalog's unless a bench says else).
        ``care_team_channel``: an escalation reaches the care team (alert.webhook_url);
        without one, it says so rather than claim anyone was told."""
        self._store = store
        self._escalated_to = (
            "queued for the care team's on-call webhook"
            if care_team_channel
            else "no care-team channel is configured (alert.webhook_url): shown on the"
            " gateway's pages and displays only"
        )
        self.defaults = defaults or AlarmSettings()
        self._wall = wall  # for recorded_at only; decisions use event time
        # Each patient's validated settings, while the settings' version is unchanged.
        self._settings: dict[str, AlarmSettings] = {}
        self._settings_version = -1

    def settings(self, patient_id: str) -> AlarmSettings:
        version = alarms.settings_version(self._store)
        if version != self._settings_version:
            self._settings.clear()
            self._settings_version = version
        cached = self._settings.get(patient_id)
        if cached is None:
            stored = alarms.settings(self._store.conn, patient_id)
            cached = validated(self.defaults, {k: v for k, v in stored.items() if k not in RETIRED})
            self._settings[patient_id] = cached
        return cached

    def present_conditions(self, patient_id: str) -> set[str]:
        """The patient's alarm types whose condition was present last time (hysteresis)."""
        return alarms.present_conditions(self._store.conn, patient_id)

    # --- conditions -------------------------------------------------------------------

    def observe(self, observations: list[Observation]) -> list[int]:
        """Apply observations in one transaction; returns the audit events written."""
        written: list[int] = []
        # Durable (fsynced): the audit log and the delivery outbox must survive power loss.
        with self._store.transaction() as conn:
            engaged = alarms.engaged(conn)
            for obs in observations:
                # An absent condition with nothing present or open before changes nothing:
                # skip its reads (the technical check observes every device every 5 s).
                if obs.present or (obs.patient_id, obs.alarm_type) in engaged:
                    written += self._observe(conn, obs)
        return written

    def _observe(self, conn: sqlite3.Connection, obs: Observation) -> list[int]:
        spec = CATALOG[obs.alarm_type]
        pid, kind = obs.patient_id, obs.alarm_type
        before = alarms.condition(conn, pid, kind)
        since = None
        if obs.present:
            since = (
                before.since if before and before.present and before.since is not None else obs.t
            )
        if before is None or (before.present, before.since) != (obs.present, since):
            alarms.set_condition(conn, pid, kind, Condition(obs.present, since, obs.t))
        held = obs.present and since is not None and obs.t - since >= spec.persistence_s
        alarm = alarms.open_alarm(conn, pid, kind)
        pause = alarms.pause(conn, pid, kind)
        paused = pause is not None and obs.t < pause.until
        out: list[int] = []

        def event(
            a: Alarm | int, name: str, state: AlarmState, reason: str, actor: str = GATEWAY
        ) -> None:
            alarm_id = a if isinstance(a, int) else a.id
            out.append(
                alarms.add_event(conn, alarm_id, obs.t, self._wall(), name, actor, reason, state)
            )

        if alarm is None:
            if held and obs.live and not paused:
                new = Alarm(
                    0,
                    pid,
                    kind,
                    spec.priority,
                    spec.technical,
                    AlarmState.ACTIVE,
                    obs.t,
                    obs.t,
                    True,
                    obs.reason,
                    dict(obs.values),
                    obs.evidence,
                )
                event(alarms.insert(conn, new), "raised", AlarmState.ACTIVE, obs.reason)
            return out
        if alarm.state is AlarmState.PAUSED:
            if obs.t < (alarm.paused_until or 0.0):
                if not obs.present:
                    self._resolve(conn, alarm, obs.t, f"cleared while paused: {obs.reason}", out)
                return out
            if held and obs.live:
                alarms.update(
                    conn,
                    alarm.id,
                    state=AlarmState.ACTIVE,
                    updated_at=obs.t,
                    reason=obs.reason,
                    values=dict(obs.values),
                    condition_present=True,
                    raised_at=obs.t,
                    escalated_at=None,
                    acknowledged_by=None,
                )
                event(
                    alarm,
                    "re-alerted",
                    AlarmState.ACTIVE,
                    f"pause over, still present: {obs.reason}",
                )
            elif not obs.present:
                self._resolve(conn, alarm, obs.t, f"pause over, cleared: {obs.reason}", out)
            return out
        if obs.present:
            alarms.update(
                conn,
                alarm.id,
                updated_at=obs.t,
                reason=obs.reason,
                values=dict(obs.values),
                evidence=obs.evidence,
                condition_present=True,
            )
            return out
        if alarm.state is AlarmState.ACTIVE and spec.latching:
            if alarm.condition_present:
                alarms.update(conn, alarm.id, updated_at=obs.t, condition_present=False)
                event(
                    alarm,
                    "latched",
                    AlarmState.ACTIVE,
                    f"condition cleared, stays until acknowledged: {obs.reason}",
                )
            return out
        self._resolve(conn, alarm, obs.t, f"condition cleared: {obs.reason}", out)
        return out

    def _resolve(
        self,
        conn: sqlite3.Connection,
        alarm: Alarm,
        t: float,
        reason: str,
        out: list[int],
        actor: str = GATEWAY,
    ) -> None:
        alarms.update(
            conn,
            alarm.id,
            state=AlarmState.RESOLVED,
            updated_at=t,
            resolved_at=t,
            condition_present=False,
        )
        out.append(
            alarms.add_event(
                conn, alarm.id, t, self._wall(), "resolved", actor, reason, AlarmState.RESOLVED
            )
        )

    # --- people ---------------------------------------------------------------------------

    def acknowledge(self, alarm_id: int, by: str, reason: str, at: float) -> Alarm:
        with self._store.transaction() as conn:
            alarm = alarms.get(conn, alarm_id)
            if alarm is None:
                raise AlarmError(f"no alarm {alarm_id}")
            if alarm.state is AlarmState.RESOLVED:
                raise AlarmError(f"alarm {alarm_id} is already resolved")
            out: list[int] = []
            why = reason or "acknowledged"
            if alarm.condition_present:
                alarms.update(
                    conn,
                    alarm_id,
                    state=AlarmState.ACKNOWLEDGED,
                    updated_at=at,
                    acknowledged_by=by,
                    paused_until=None,
                )
            else:
                alarms.update(conn, alarm_id, acknowledged_by=by)
            alarms.add_event(
                conn, alarm_id, at, self._wall(), "acknowledged", by, why, AlarmState.ACKNOWLEDGED
            )
            if not alarm.condition_present:  # latched, condition cleared: acknowledging ends it
                self._resolve(conn, alarm, at, "acknowledged after the condition cleared", out, by)
            found = alarms.get(conn, alarm_id)
        assert found is not None
        return found

    def pause(
        self, patient_id: str, alarm_type: str, until: float, by: str, reason: str, at: float
    ) -> Alarm | None:
        """Snooze one alarm type of one patient until ``until`` (event time), within the
        type's bound (catalog.MAX_PAUSE_S); a high-priority type only while it sounds.
        Audited, done or refused (alarm_audit)."""
        spec = CATALOG.get(alarm_type)
        asked = {"until": until, "minutes": round((until - at) / 60.0, 1)}
        with self._store.transaction() as conn:
            before = alarms.pause(conn, patient_id, alarm_type)
            old = None if before is None else {"until": before.until, "by": before.actor}
            alarm = None if spec is None else alarms.open_alarm(conn, patient_id, alarm_type)
            refusal = self._pause_refusal(spec, alarm, alarm_type, until, at)
            outcome = "refused" if refusal else "done"
            why = f"{reason} (refused: {refusal})" if refusal else reason
            alarms.audit(
                conn,
                patient_id,
                alarm_type,
                "pause",
                outcome,
                at,
                self._wall(),
                by,
                why,
                old,
                asked,
            )
            if refusal is None:
                alarms.set_pause(conn, patient_id, alarm_type, Pause(until, by, reason))
            if refusal is None and alarm is not None:
                alarms.update(
                    conn, alarm.id, state=AlarmState.PAUSED, paused_until=until, updated_at=at
                )
                alarms.add_event(
                    conn,
                    alarm.id,
                    at,
                    self._wall(),
                    "paused",
                    by,
                    f"{reason or 'paused'} until {until:.0f}",
                    AlarmState.PAUSED,
                )
                alarm = alarms.get(conn, alarm.id)
        if refusal is not None:  # the refusal is committed to the audit log first
            raise AlarmError(refusal)
        return alarm

    @staticmethod
    def _pause_refusal(
        spec: AlarmType | None, alarm: Alarm | None, alarm_type: str, until: float, at: float
    ) -> str | None:
        if spec is None:
            return f"unknown alarm type {alarm_type!r}; known: {', '.join(CATALOG)}"
        if until <= at:
            return "a pause must end in the future"
        if until - at > spec.max_pause_s:
            return (
                f"{alarm_type} is {spec.priority.value} priority: it may be paused for at most"
                f" {spec.max_pause_s / 60:.0f} min"
            )
        if spec.pause_needs_open_alarm and alarm is None:
            return (
                f"{alarm_type} is high priority: it can be paused only while it sounds, not before"
            )
        return None

    def set_settings(
        self, patient_id: str, changes: dict[str, object], by: str, at: float
    ) -> AlarmSettings:
        """Change a patient's thresholds, each checked against its safe range; audited
        with the old and new values, done or refused."""
        current = alarms.settings(self._store.conn, patient_id)
        merged = {**{k: v for k, v in current.items() if k not in RETIRED}, **changes}
        try:
            settings = validated(self.defaults, merged)  # ConfigError with every problem
        except ConfigError as exc:
            with self._store.transaction() as conn:
                alarms.audit(
                    conn,
                    patient_id,
                    None,
                    "settings",
                    "refused",
                    at,
                    self._wall(),
                    by,
                    str(exc),
                    current,
                    _jsonable(changes),
                )
            raise
        overrides = {
            f.name: float(getattr(settings, f.name))
            for f in fields(settings)
            if getattr(settings, f.name) != getattr(self.defaults, f.name)
        }
        with self._store.transaction() as conn:
            alarms.set_settings(conn, patient_id, overrides, at, by)
            alarms.audit(
                conn,
                patient_id,
                None,
                "settings",
                "done",
                at,
                self._wall(),
                by,
                "",
                current,
                overrides,
            )
        return settings

    # --- time -------------------------------------------------------------------------------

    def escalate(self, now: float) -> list[int]:
        """Escalate high-priority alarms nobody acknowledged in time: measured on the
        gateway clock from when the alarm started to sound (``now`` is gateway time; the
        alarm's raised_at is the reading's device time, which a device clock off by
        minutes would make escalate early or late)."""
        out: list[int] = []
        with self._store.transaction() as conn:
            open_alarms = alarms.listing(conn, open_only=True, limit=10_000)
            sounding = alarms.sounding_since(conn, [a.id for a in open_alarms])
            for alarm in open_alarms:
                spec = CATALOG.get(alarm.alarm_type)
                if (
                    spec is None
                    or not spec.latching
                    or alarm.state is not AlarmState.ACTIVE
                    or alarm.escalated_at is not None
                ):
                    continue
                limit = self.settings(alarm.patient_id).escalate_after_min * 60.0
                since = sounding.get(alarm.id, alarm.raised_at)
                if now - since >= limit:
                    alarms.update(conn, alarm.id, escalated_at=now)
                    out.append(
                        alarms.add_event(
                            conn,
                            alarm.id,
                            now,
                            self._wall(),
                            "escalated",
                            GATEWAY,
                            f"unacknowledged for {(now - since) / 60:.0f} min:"
                            f" {self._escalated_to}",
                            AlarmState.ACTIVE,
                        )
                    )
        return out


def _jsonable(changes: dict[str, object]) -> dict[str, object]:
    """What was asked, as JSON can keep it (a refused value may be anything)."""
    return {
        str(k): v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)
        for k, v in changes.items()
    }
