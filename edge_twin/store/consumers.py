"""Durable positions in the store's append-only logs: one log, many consumers.

The readings log (``readings.id``), the alarm event log (``alarm_events.id``) and the risk
log (``risk_assessments.id``) only grow, their ids in commit order. Each consumer (the
twin, alarm delivery over MQTT and to the webhook, FHIR sync; next the dashboard's live
feed) has a name and a position: the id of the last entry it has finished with. It reads
a bounded batch after its position and advances the position in the same transaction as
its own writes, so after a crash it resumes exactly where its last commit left off: every
entry is applied once to what the consumer writes in the store, and at least once to what
it sends outside (receivers deduplicate by the entry's id).

Consumers know nothing of each other; the pipeline and the gateway schedule them. Adding
one is a name, a log, and a loop of read -> handle -> ``advance`` (docs/architecture.md).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from edge_twin.errors import StoreError


class Log(StrEnum):
    READINGS = "readings"
    ALARM_EVENTS = "alarm_events"
    RISKS = "risk_assessments"

    @property
    def _entry_time(self) -> str:
        # When an entry was appended: what "behind since" means for a consumer.
        return {"readings": "received_at", "alarm_events": "recorded_at"}.get(
            self.value, "computed_at"
        )


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    log: Log


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    name: str
    log: Log
    position: int
    backlog: int  # entries appended after the position
    oldest_pending_at: float | None  # when the first of them was appended (wall time)
    updated_at: float | None  # when the position last moved
    failures: int  # consecutive failures on the entry after the position
    last_error: str | None
    last_error_at: float | None


_COLUMNS = "name, log, position, updated_at, failures, last_error, last_error_at"


def register(conn: sqlite3.Connection, consumer: Consumer, start: int = 0) -> int:
    """Make sure ``consumer`` has a position; a new one starts at ``start`` (default: the
    log's beginning). Returns its position. A name is bound to one log for good."""
    conn.execute(
        "INSERT OR IGNORE INTO consumers (name, log, position) VALUES (?, ?, ?)",
        (consumer.name, consumer.log.value, start),
    )
    row = conn.execute(
        "SELECT log, position FROM consumers WHERE name = ?", (consumer.name,)
    ).fetchone()
    if row is None:  # the INSERT was ignored: the schema does not know this log
        raise StoreError(f"consumer {consumer.name!r}: the store has no {consumer.log} log")
    if row[0] != consumer.log.value:
        raise StoreError(f"consumer {consumer.name!r} reads the {row[0]} log, not {consumer.log}")
    return int(row[1])


def position(conn: sqlite3.Connection, consumer: Consumer) -> int:
    """The id of the last entry ``consumer`` has finished with (0: none yet)."""
    row = conn.execute("SELECT position FROM consumers WHERE name = ?", (consumer.name,)).fetchone()
    return int(row[0]) if row else 0


def advance(conn: sqlite3.Connection, consumer: Consumer, to: int, at: float) -> None:
    """Move ``consumer`` to ``to``, inside the caller's transaction (with the consumer's
    own writes). A position never moves back: that would apply entries twice."""
    register(conn, consumer)
    moved = conn.execute(
        "UPDATE consumers SET position = ?, updated_at = ?, failures = 0, last_error = NULL,"
        " last_error_at = NULL WHERE name = ? AND position <= ?",
        (to, at, consumer.name, to),
    ).rowcount
    if not moved:
        now = position(conn, consumer)
        raise StoreError(f"consumer {consumer.name!r} cannot move back from {now} to {to}")


def record_failure(conn: sqlite3.Connection, consumer: Consumer, error: str, at: float) -> int:
    """Count a failure to handle the entry after the position; returns how many in a row."""
    register(conn, consumer)
    conn.execute(
        "UPDATE consumers SET failures = failures + 1, last_error = ?, last_error_at = ?"
        " WHERE name = ?",
        (error[:500], at, consumer.name),
    )
    return int(
        conn.execute("SELECT failures FROM consumers WHERE name = ?", (consumer.name,)).fetchone()[
            0
        ]
    )


def clear_failures(conn: sqlite3.Connection, consumer: Consumer) -> None:
    """The consumer works again (it handled something since): its failures are history."""
    conn.execute(
        "UPDATE consumers SET failures = 0, last_error = NULL, last_error_at = NULL"
        " WHERE name = ? AND failures > 0",
        (consumer.name,),
    )


def dead_letter(
    conn: sqlite3.Connection, consumer: Consumer, entry_id: int, why: str, at: float
) -> None:
    """Set aside an entry its receiver refused for good (in the caller's transaction,
    with the ``advance`` past it): the rest flow on, and it stays listed."""
    conn.execute(
        "INSERT OR REPLACE INTO delivery_dead_letters (consumer, entry_id, at, reason)"
        " VALUES (?, ?, ?, ?)",
        (consumer.name, entry_id, at, why[:500]),
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    consumer: str
    entry_id: int
    at: float
    reason: str


def lagging(
    conn: sqlite3.Connection, names: tuple[str, ...], now: float, after_s: float
) -> dict[str, float]:
    """The consumers among ``names`` whose oldest waiting entry was appended more than
    ``after_s`` before ``now``: name -> its age (s)."""
    return {
        s.name: now - s.oldest_pending_at
        for s in statuses(conn)
        if s.name in names
        and s.oldest_pending_at is not None
        and now - s.oldest_pending_at > after_s
    }


def dead_letter_count(conn: sqlite3.Connection, since: float) -> int:
    """Entries set aside at or after ``since``."""
    row = conn.execute("SELECT count(*) FROM delivery_dead_letters WHERE at >= ?", (since,))
    return int(row.fetchone()[0])


def dead_letters(
    conn: sqlite3.Connection,
    consumer: Consumer | None = None,
    limit: int = 100,
    oldest_first: bool = False,
) -> list[DeadLetter]:
    """Entries set aside (``consumer``'s, or every consumer's), newest first; or oldest
    entry first, the order to send them again."""
    where, args = ("WHERE consumer = ?", (consumer.name,)) if consumer else ("", ())
    order = "entry_id" if oldest_first else "at DESC, entry_id DESC"
    rows = conn.execute(
        f"SELECT consumer, entry_id, at, reason FROM delivery_dead_letters {where}"
        f" ORDER BY {order} LIMIT ?",
        (*args, limit),
    )
    return [DeadLetter(str(r[0]), int(r[1]), float(r[2]), str(r[3])) for r in rows]


def forget_dead_letter(conn: sqlite3.Connection, consumer: Consumer, entry_id: int) -> None:
    """Delivered at last (or its entry is gone): no longer set aside."""
    conn.execute(
        "DELETE FROM delivery_dead_letters WHERE consumer = ? AND entry_id = ?",
        (consumer.name, entry_id),
    )


def backlog(conn: sqlite3.Connection, consumer: Consumer) -> int:
    """Entries appended after the position (ids count up by one, and entries after any
    consumer's position are never deleted)."""
    newest = conn.execute(f"SELECT max(id) FROM {consumer.log.value}").fetchone()[0]
    return max(0, int(newest or 0) - position(conn, consumer))


def slowest(conn: sqlite3.Connection, log: Log) -> int:
    """The lowest position of the log's consumers: every entry up to it has been handled
    by all of them (0 if it has none)."""
    row = conn.execute("SELECT min(position) FROM consumers WHERE log = ?", (log.value,))
    return int(row.fetchone()[0] or 0)


def statuses(conn: sqlite3.Connection) -> list[ConsumerStatus]:
    """Every registered consumer: how far it is and how far behind, for /health."""
    out = []
    for name, log, pos, updated, failures, error, error_at in conn.execute(
        f"SELECT {_COLUMNS} FROM consumers ORDER BY name"
    ).fetchall():
        kind = Log(log)
        newest = conn.execute(f"SELECT max(id) FROM {kind.value}").fetchone()[0]
        oldest = conn.execute(
            f"SELECT {kind._entry_time} FROM {kind.value} WHERE id > ? ORDER BY id LIMIT 1",
            (pos,),
        ).fetchone()
        out.append(
            ConsumerStatus(
                name,
                kind,
                int(pos),
                max(0, int(newest or 0) - int(pos)),
                None if oldest is None else float(oldest[0]),
                updated,
                int(failures),
                error,
                error_at,
            )
        )
    return out
