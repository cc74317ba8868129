"""Alarms, their audit log (which is also the delivery outbox), conditions, pauses and
per-patient settings. All alarm state lives here, so the pipeline, the API and the CLI
act on the same alarms through their own connections."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from edge_twin.domain import Alarm, AlarmState, Priority
from edge_twin.store.database import Store

_ALARM_COLUMNS = (
    "id, patient_id, alarm_type, priority, technical, state, raised_at, updated_at,"
    ' condition_present, reason, "values", evidence, paused_until, escalated_at,'
    " acknowledged_by"
)
OPEN_STATES = (AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED, AlarmState.PAUSED)


@dataclass(frozen=True)
class AlarmEvent:
    id: int
    alarm_id: int
    at: float
    recorded_at: float
    # raised | latched | acknowledged | paused | re-alerted | escalated | resolved
    event: str
    actor: str
    reason: str
    state: AlarmState


@dataclass(frozen=True)
class Condition:
    present: bool
    since: float | None
    t: float


@dataclass(frozen=True)
class Pause:
    until: float
    actor: str
    reason: str


def _alarm(row: tuple[Any, ...]) -> Alarm:
    return Alarm(
        id=row[0],
        patient_id=row[1],
        alarm_type=row[2],
        priority=Priority(row[3]),
        technical=bool(row[4]),
        state=AlarmState(row[5]),
        raised_at=row[6],
        updated_at=row[7],
        condition_present=bool(row[8]),
        reason=row[9],
        values=json.loads(row[10]),
        evidence=tuple(json.loads(row[11])),
        paused_until=row[12],
        escalated_at=row[13],
        acknowledged_by=row[14],
    )


def open_alarm(conn: sqlite3.Connection, patient_id: str, alarm_type: str) -> Alarm | None:
    row = conn.execute(
        f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE patient_id = ? AND alarm_type = ?"
        " AND state != ? ORDER BY id DESC LIMIT 1",
        (patient_id, alarm_type, AlarmState.RESOLVED.value),
    ).fetchone()
    return None if row is None else _alarm(row)


def get(conn: sqlite3.Connection, alarm_id: int) -> Alarm | None:
    row = conn.execute(f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
    return None if row is None else _alarm(row)


def get_many(conn: sqlite3.Connection, alarm_ids: set[int]) -> dict[int, Alarm]:
    """The alarms with these ids, in one query (delivery reads dozens at a time)."""
    if not alarm_ids:
        return {}
    marks = ", ".join("?" * len(alarm_ids))
    rows = conn.execute(
        f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE id IN ({marks})", tuple(alarm_ids)
    )
    return {a.id: a for a in map(_alarm, rows)}


def listing(
    conn: sqlite3.Connection,
    patient_id: str | None = None,
    open_only: bool = True,
    limit: int = 100,
) -> list[Alarm]:
    where, args = [], []
    if patient_id is not None:
        where.append("patient_id = ?")
        args.append(patient_id)
    if open_only:
        where.append("state != ?")
        args.append(AlarmState.RESOLVED.value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_ALARM_COLUMNS} FROM alarms {clause} ORDER BY id DESC LIMIT ?", (*args, limit)
    )
    return [_alarm(r) for r in rows]


def insert(conn: sqlite3.Connection, alarm: Alarm) -> int:
    cur = conn.execute(
        "INSERT INTO alarms (patient_id, alarm_type, priority, technical, state, raised_at,"
        ' updated_at, condition_present, reason, "values", evidence)'
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            alarm.patient_id,
            alarm.alarm_type,
            alarm.priority.value,
            int(alarm.technical),
            alarm.state.value,
            alarm.raised_at,
            alarm.updated_at,
            int(alarm.condition_present),
            alarm.reason,
            json.dumps(alarm.values),
            json.dumps(list(alarm.evidence)),
        ),
    )
    return int(cur.lastrowid or 0)


def _column_value(key: str, value: Any) -> Any:
    if key == "values":
        return json.dumps(value)
    if key == "evidence":
        return json.dumps(list(value))
    if isinstance(value, AlarmState):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def update(conn: sqlite3.Connection, alarm_id: int, **fields: Any) -> None:
    sets = ", ".join(f'"{k}" = ?' for k in fields)
    values = [_column_value(k, v) for k, v in fields.items()]
    conn.execute(f"UPDATE alarms SET {sets} WHERE id = ?", (*values, alarm_id))


def add_event(
    conn: sqlite3.Connection,
    alarm_id: int,
    at: float,
    recorded_at: float,
    event: str,
    actor: str,
    reason: str,
    state: AlarmState,
) -> int:
    cur = conn.execute(
        "INSERT INTO alarm_events (alarm_id, at, recorded_at, event, actor, reason, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (alarm_id, at, recorded_at, event, actor, reason, state.value),
    )
    return int(cur.lastrowid or 0)


def sounding_since(conn: sqlite3.Connection, alarm_ids: Sequence[int]) -> dict[int, float]:
    """When (gateway clock: ``recorded_at``) each alarm last started to sound: raised, or
    re-alerted after a pause."""
    out: dict[int, float] = {}
    for start in range(0, len(alarm_ids), 500):
        chunk = list(alarm_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT alarm_id, max(recorded_at) FROM alarm_events WHERE event IN"
            f" ('raised', 're-alerted') AND alarm_id IN ({marks}) GROUP BY alarm_id",
            chunk,
        )
        out.update({int(r[0]): float(r[1]) for r in rows})
    return out


def _event(r: tuple[Any, ...]) -> AlarmEvent:
    return AlarmEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], AlarmState(r[7]))


def events(conn: sqlite3.Connection, alarm_id: int) -> list[AlarmEvent]:
    rows = conn.execute(
        "SELECT id, alarm_id, at, recorded_at, event, actor, reason, state FROM alarm_events"
        " WHERE alarm_id = ? ORDER BY id",
        (alarm_id,),
    )
    return [_event(r) for r in rows]


def event(conn: sqlite3.Connection, event_id: int) -> AlarmEvent | None:
    row = conn.execute(
        "SELECT id, alarm_id, at, recorded_at, event, actor, reason, state FROM alarm_events"
        " WHERE id = ?",
        (event_id,),
    ).fetchone()
    return None if row is None else _event(row)


def events_after(conn: sqlite3.Connection, after_id: int, limit: int) -> list[AlarmEvent]:
    """Audit events with id > ``after_id`` in commit order: how consumers read the log."""
    rows = conn.execute(
        "SELECT id, alarm_id, at, recorded_at, event, actor, reason, state FROM alarm_events"
        " WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    )
    return [_event(r) for r in rows]


def raised_between(
    conn: sqlite3.Connection, patient_id: str, start: float, end: float
) -> list[Alarm]:
    """The patient's alarms raised in [start, end) or still open at ``start``, oldest
    first: the markers on a plot of that period."""
    rows = conn.execute(
        f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE patient_id = ? AND raised_at < ?"
        " AND (raised_at >= ? OR state != ?) ORDER BY raised_at, id",
        (patient_id, end, start, AlarmState.RESOLVED.value),
    )
    return [_alarm(r) for r in rows]


def patient_events(
    conn: sqlite3.Connection, patient_id: str, since: float, limit: int = 200
) -> list[tuple[AlarmEvent, str]]:
    """(event, alarm type) of the patient's alarms from event time ``since``, newest
    first: the audit trail a care team reads."""
    rows = conn.execute(
        "SELECT e.id, e.alarm_id, e.at, e.recorded_at, e.event, e.actor, e.reason, e.state,"
        " a.alarm_type FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id"
        " WHERE a.patient_id = ? AND e.at >= ? ORDER BY e.at DESC, e.id DESC LIMIT ?",
        (patient_id, since, limit),
    )
    return [(_event(r[:8]), str(r[8])) for r in rows]


def open_history_start(conn: sqlite3.Connection, since: float) -> int:
    """The position just before the first event recorded since ``since`` of an alarm still
    open (the log's end if there is none): where a delivery channel switched on for a
    gateway with a past starts, so that it learns the alarms that matter now without
    replaying months of history."""
    row = conn.execute(
        "SELECT min(e.id) - 1 FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id"
        " WHERE a.state != ? AND e.recorded_at >= ?",
        (AlarmState.RESOLVED.value, since),
    ).fetchone()
    if row[0] is not None:
        return int(row[0])
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM alarm_events").fetchone()[0])


def condition(conn: sqlite3.Connection, patient_id: str, alarm_type: str) -> Condition | None:
    row = conn.execute(
        "SELECT present, since, t FROM alarm_conditions WHERE patient_id = ? AND alarm_type = ?",
        (patient_id, alarm_type),
    ).fetchone()
    return None if row is None else Condition(bool(row[0]), row[1], row[2])


def present_conditions(conn: sqlite3.Connection, patient_id: str) -> set[str]:
    """The alarm types whose condition was present at the patient's last observation."""
    rows = conn.execute(
        "SELECT alarm_type FROM alarm_conditions WHERE patient_id = ? AND present = 1",
        (patient_id,),
    )
    return {r[0] for r in rows}


def engaged(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(patient, alarm type) pairs with a present condition or an open alarm: the only
    ones an absent condition can change."""
    rows = conn.execute(
        "SELECT patient_id, alarm_type FROM alarm_conditions WHERE present = 1"
        " UNION SELECT patient_id, alarm_type FROM alarms WHERE state != ?",
        (AlarmState.RESOLVED.value,),
    )
    return {(r[0], r[1]) for r in rows}


def set_condition(conn: sqlite3.Connection, patient_id: str, alarm_type: str, c: Condition) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO alarm_conditions (patient_id, alarm_type, present, since, t)"
        " VALUES (?, ?, ?, ?, ?)",
        (patient_id, alarm_type, int(c.present), c.since, c.t),
    )


def pause(conn: sqlite3.Connection, patient_id: str, alarm_type: str) -> Pause | None:
    row = conn.execute(
        "SELECT until, actor, reason FROM alarm_pauses WHERE patient_id = ? AND alarm_type = ?",
        (patient_id, alarm_type),
    ).fetchone()
    return None if row is None else Pause(*row)


def set_pause(conn: sqlite3.Connection, patient_id: str, alarm_type: str, p: Pause) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO alarm_pauses (patient_id, alarm_type, until, actor, reason)"
        " VALUES (?, ?, ?, ?, ?)",
        (patient_id, alarm_type, p.until, p.actor, p.reason),
    )


def settings(conn: sqlite3.Connection, patient_id: str) -> dict[str, float]:
    row = conn.execute(
        "SELECT settings FROM alarm_settings WHERE patient_id = ?", (patient_id,)
    ).fetchone()
    return {} if row is None else dict(json.loads(row[0]))


def settings_version(store: Store) -> int:
    """Bumped by every change of any patient's settings, from any process (migration 0010)."""
    return store.version("alarm_settings")


def set_settings(
    conn: sqlite3.Connection, patient_id: str, values: dict[str, float], at: float, by: str
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO alarm_settings (patient_id, settings, updated_at, updated_by)"
        " VALUES (?, ?, ?, ?)",
        (patient_id, json.dumps(values), at, by),
    )


@dataclass(frozen=True)
class AuditEntry:
    id: int
    patient_id: str
    alarm_type: str | None
    action: str  # pause | settings
    outcome: str  # done | refused
    at: float
    recorded_at: float
    actor: str
    reason: str
    old: Any  # JSON: the pause or settings before (None: none)
    new: Any  # ... asked for


def audit(
    conn: sqlite3.Connection,
    patient_id: str,
    alarm_type: str | None,
    action: str,
    outcome: str,
    at: float,
    recorded_at: float,
    actor: str,
    reason: str,
    old: Any,
    new: Any,
) -> int:
    cur = conn.execute(
        "INSERT INTO alarm_audit (patient_id, alarm_type, action, outcome, at, recorded_at,"
        " actor, reason, old, new) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            patient_id,
            alarm_type,
            action,
            outcome,
            at,
            recorded_at,
            actor,
            reason,
            json.dumps(old),
            json.dumps(new),
        ),
    )
    return int(cur.lastrowid or 0)


def audit_log(conn: sqlite3.Connection, patient_id: str, limit: int = 100) -> list[AuditEntry]:
    """The patient's pauses and settings changes, newest first."""
    rows = conn.execute(
        "SELECT id, patient_id, alarm_type, action, outcome, at, recorded_at, actor, reason,"
        " old, new FROM alarm_audit WHERE patient_id = ? ORDER BY id DESC LIMIT ?",
        (patient_id, limit),
    )
    return [
        AuditEntry(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            json.loads(r[9]),
            json.loads(r[10]),
        )
        for r in rows
    ]


EXPORT_COLUMNS = {
    "alarm_id": "e.alarm_id",
    "patient_id": "a.patient_id",
    "alarm_type": "a.alarm_type",
    "priority": "a.priority",
    "technical": "a.technical",
    "values": 'a."values"',
    "at": "e.at",
    "recorded_at": "e.recorded_at",
    "event": "e.event",
    "actor": "e.actor",
    "reason": "e.reason",
    "state": "e.state",
}


def export_rows(
    conn: sqlite3.Connection, since: float, until: float, patient_id: str | None
) -> Iterator[dict[str, Any]]:
    """Every audit event with event time in [since, until), with its alarm's patient, type,
    priority and values (``values`` decoded), oldest first, by column name."""
    where = "e.at >= ? AND e.at < ?"
    args: list[Any] = [since, until]
    if patient_id is not None:
        where += " AND a.patient_id = ?"
        args.append(patient_id)
    rows = conn.execute(
        f"SELECT {', '.join(EXPORT_COLUMNS.values())}"
        f" FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id WHERE {where}"
        " ORDER BY e.at, e.id",
        args,
    )
    for row in rows:
        doc = dict(zip(EXPORT_COLUMNS, row, strict=True))
        doc["values"] = json.loads(doc["values"])
        doc["technical"] = bool(doc["technical"])
        yield doc
