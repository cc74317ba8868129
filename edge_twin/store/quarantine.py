"""Quarantine: every rejected message kept once, each rejected record pointing at it.

    quarantine_messages  one row per message: topic, device, SHA-256 and length of the
                         whole message, and its bytes (the first ``keep_bytes`` when it
                         was refused for its size; whole otherwise, so that it can be
                         decoded again once the cause is fixed)
    quarantine           one row per rejection: reason, detail, record index
    quarantine_dropped   per device: messages refused beyond its quarantine rate, counted
                         and not stored (a device that floods cannot fill the disk)

Bounded: at most ``rows_per_message`` rejection rows per message (the last one says how
many more there were), ``per_device_per_min`` messages a minute and ``device_max_bytes``
bytes per device (the device's oldest messages go first), and ``retain_days``. Messages
held for the gateway's clock (``clock_unsynchronised``) are readings waiting to be stored:
none of these limits drop them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from edge_twin.domain import Rejection, RejectReason
from edge_twin.store.database import Store

# What a listing shows of a payload: enough to recognise it, never a whole flood.
PREVIEW_BYTES = 4096
RATE_WINDOW_S = 60.0
# A device's count of dropped messages starts again after this long without a drop (and
# device_flooding clears after as long).
FLOOD_WINDOW_S = 600.0
# Data waiting, not junk: readings held for the gateway's clock, and messages kept whole
# because they met a fault of the gateway's own. No rate, quota, row cap or retention
# drops them ("held").
_WAITING = frozenset({RejectReason.CLOCK_UNSYNCHRONISED, RejectReason.INTERNAL_ERROR})
_OVERSIZED = RejectReason.OVERSIZED


@dataclass(frozen=True, slots=True)
class QuarantineLimits:
    keep_bytes: int = 4096  # of a message refused for its size
    rows_per_message: int = 50
    per_device_per_min: int = 60
    device_max_bytes: int = 4 * 2**20
    retain_days: float = 30.0


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message with what was refused in it (the writer's input)."""

    received_at: float
    topic: str
    payload: bytes
    device_id: str | None
    rejections: Sequence[Rejection]


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """One rejection with its message: ``payload`` is a prefix (PREVIEW_BYTES) in
    listings and the whole kept message in ``oldest_with_reason``."""

    id: int
    received_at: float
    topic: str
    payload: bytes
    reason: str
    detail: str
    record_index: int | None
    device_id: str | None
    message_id: int
    length: int  # of the whole message
    sha256: str  # of the whole message
    kept: int  # bytes of it kept in the store

    @property
    def truncated(self) -> bool:
        """Only its first bytes were kept (refused for its size): it cannot be decoded
        again."""
        return self.length > self.kept


@dataclass(slots=True)
class Stored:
    """What ``insert`` did."""

    messages: int = 0
    rows: int = 0
    dropped: int = 0  # messages beyond a device's rate: counted, not stored
    evicted: int = 0  # older messages deleted for a device's byte quota


def insert(
    conn: sqlite3.Connection,
    items: Sequence[Rejected],
    limits: QuarantineLimits,
    admitted: bool = False,
) -> Stored:
    """Quarantine ``items`` in the caller's transaction, within ``limits``.
    ``admitted``: messages that were in the quarantine already and are put back after
    being decoded again (reprocess, the release after the clock): no rate or quota drops
    them, or decoding again would lose what it could not store yet."""
    out = Stored()
    touched: set[str] = set()
    for item in items:
        if not item.rejections:
            continue
        key = item.device_id or ""
        held = any(r.reason in _WAITING for r in item.rejections)
        free = held or admitted
        if not free and _recent(conn, key, item.received_at) >= limits.per_device_per_min:
            _count_dropped(conn, key, item)
            out.dropped += 1
            continue
        oversized = any(r.reason is _OVERSIZED for r in item.rejections)
        kept = item.payload[: limits.keep_bytes] if oversized else item.payload
        message_id = conn.execute(
            "INSERT INTO quarantine_messages (received_at, device_key, held, length, kept,"
            " sha256, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.received_at,
                key,
                int(held),
                len(item.payload),
                len(kept),
                hashlib.sha256(item.payload).hexdigest(),
                item.topic,
                kept,
            ),
        ).lastrowid
        # Every waiting row is kept (each is a reading); the others are capped.
        rows = [r for r in item.rejections if r.reason in _WAITING]
        junk = [r for r in item.rejections if r.reason not in _WAITING]
        if len(junk) > limits.rows_per_message:
            more = len(junk) - limits.rows_per_message + 1
            # The last row stands for the rest; its record_index None means "the whole
            # message" to a later decoding again.
            summary = Rejection(
                junk[-1].reason,
                f"and {more} more records refused, the last: {junk[-1].detail}"[:300],
            )
            junk = [*junk[: limits.rows_per_message - 1], summary]
        rows += junk
        conn.executemany(
            "INSERT INTO quarantine"
            " (message_id, received_at, topic, reason, detail, record_index, device_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    message_id,
                    item.received_at,
                    item.topic,
                    r.reason.value,
                    r.detail,
                    r.record_index,
                    item.device_id,
                )
                for r in rows
            ],
        )
        out.messages += 1
        out.rows += len(rows)
        if not free:
            touched.add(key)
    for key in touched:
        out.evicted += _within_quota(conn, key, limits.device_max_bytes)
    return out


def _recent(conn: sqlite3.Connection, key: str, at: float) -> int:
    """The device's messages quarantined in the minute up to ``at``."""
    row = conn.execute(
        "SELECT count(*) FROM quarantine_messages WHERE device_key = ? AND held = 0"
        " AND received_at > ? AND received_at <= ?",
        (key, at - RATE_WINDOW_S, at),
    ).fetchone()
    return int(row[0])


def _count_dropped(conn: sqlite3.Connection, key: str, item: Rejected) -> None:
    """Count a dropped message; a count older than the flood window starts again (it
    says how many recently, not since the gateway was installed)."""
    stale = "last_at < excluded.last_at - ?"
    conn.execute(
        "INSERT INTO quarantine_dropped (device_key, dropped, first_at, last_at, last_reason)"
        " VALUES (?, 1, ?, ?, ?) ON CONFLICT (device_key) DO UPDATE SET"
        f" dropped = CASE WHEN {stale} THEN 1 ELSE dropped + 1 END,"
        f" first_at = CASE WHEN {stale} THEN excluded.first_at ELSE first_at END,"
        " last_at = max(last_at, excluded.last_at), last_reason = excluded.last_reason",
        (
            key,
            item.received_at,
            item.received_at,
            item.rejections[0].reason.value,
            FLOOD_WINDOW_S,
            FLOOD_WINDOW_S,
        ),
    )


def _within_quota(conn: sqlite3.Connection, key: str, max_bytes: int) -> int:
    """Delete the device's oldest messages (not held) until it keeps at most
    ``max_bytes``; returns how many went."""
    total = conn.execute(
        "SELECT coalesce(sum(kept), 0) FROM quarantine_messages WHERE device_key = ? AND held = 0",
        (key,),
    ).fetchone()[0]
    if total <= max_bytes:
        return 0
    oldest = conn.execute(
        "SELECT id, kept FROM quarantine_messages WHERE device_key = ? AND held = 0 ORDER BY id",
        (key,),
    )
    doomed = []
    for message_id, size in oldest:
        if total <= max_bytes:
            break
        doomed.append(int(message_id))
        total -= size
    for message_id in doomed:
        _delete_message(conn, message_id)
    return len(doomed)


def _delete_message(conn: sqlite3.Connection, message_id: int) -> None:
    conn.execute("DELETE FROM quarantine WHERE message_id = ?", (message_id,))
    conn.execute("DELETE FROM quarantine_messages WHERE id = ?", (message_id,))


def purge(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` messages received before ``before`` (not those held for the
    clock), with their rows, in the caller's transaction; returns how many went."""
    ids = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM quarantine_messages WHERE held = 0 AND received_at < ? LIMIT ?",
            (before, limit),
        )
    ]
    for message_id in ids:
        _delete_message(conn, message_id)
    return len(ids)


_ROW = (
    "SELECT q.id, q.received_at, q.topic, {payload}, q.reason, q.detail, q.record_index,"
    " q.device_id, q.message_id, m.length, m.sha256, m.kept"
    " FROM quarantine q JOIN quarantine_messages m ON m.id = q.message_id"
)


def _select(
    conn: sqlite3.Connection, tail: str, args: Sequence[object], whole: bool = False
) -> list[QuarantinedMessage]:
    payload = "m.payload" if whole else f"substr(m.payload, 1, {PREVIEW_BYTES})"
    rows = conn.execute(_ROW.format(payload=payload) + f" {tail}", tuple(args))
    return [
        QuarantinedMessage(
            r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]
        )
        for r in rows
    ]


def recent(store: Store, limit: int = 100, reason: str | None = None) -> list[QuarantinedMessage]:
    """The newest rows (their payloads cut to PREVIEW_BYTES), newest first."""
    where, args = ("WHERE q.reason = ?", [reason]) if reason else ("", [])
    return _select(store.conn, f"{where} ORDER BY q.id DESC LIMIT ?", (*args, limit))


def counts_by_reason(store: Store) -> dict[str, int]:
    rows = store.conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 1")
    return {str(r[0]): int(r[1]) for r in rows}


def count(store: Store, reason: str) -> int:
    row = store.conn.execute("SELECT count(*) FROM quarantine WHERE reason = ?", (reason,))
    return int(row.fetchone()[0])


def oldest_with_reason(store: Store, reason: str, limit: int) -> list[QuarantinedMessage]:
    """The oldest ``limit`` rows quarantined for ``reason``, oldest first, each with its
    whole kept message (to decode again)."""
    return _select(store.conn, "WHERE q.reason = ? ORDER BY q.id LIMIT ?", (reason, limit), True)


def delete(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Delete rows by id in the caller's transaction (they were decoded again), and the
    messages no row points at any more."""
    messages = {
        int(r[0])
        for i in ids
        for r in conn.execute("SELECT message_id FROM quarantine WHERE id = ?", (i,))
    }
    conn.executemany("DELETE FROM quarantine WHERE id = ?", [(i,) for i in ids])
    for message_id in messages:
        conn.execute(
            "DELETE FROM quarantine_messages WHERE id = ?"
            " AND NOT EXISTS (SELECT 1 FROM quarantine WHERE message_id = ?)",
            (message_id, message_id),
        )
        # What remains of it no longer waits: the limits apply to it again.
        conn.execute(
            "UPDATE quarantine_messages SET held = 0 WHERE id = ? AND held = 1 AND NOT EXISTS"
            " (SELECT 1 FROM quarantine WHERE message_id = ? AND reason IN (?, ?))",
            (message_id, message_id, *sorted(r.value for r in _WAITING)),
        )


@dataclass(frozen=True, slots=True)
class Dropped:
    device_key: str  # '' when no device could be read from the messages
    dropped: int
    first_at: float
    last_at: float
    last_reason: str


def dropped_since(conn: sqlite3.Connection, since: float) -> list[Dropped]:
    """Devices with messages dropped beyond their rate at or after ``since``."""
    rows = conn.execute(
        "SELECT device_key, dropped, first_at, last_at, last_reason FROM quarantine_dropped"
        " WHERE last_at >= ? ORDER BY device_key",
        (since,),
    )
    return [Dropped(str(r[0]), int(r[1]), float(r[2]), float(r[3]), str(r[4])) for r in rows]


def size(store: Store) -> tuple[int, int]:
    """(messages, bytes kept) in the quarantine."""
    row = store.conn.execute(
        "SELECT count(*), coalesce(sum(kept), 0) FROM quarantine_messages"
    ).fetchone()
    return int(row[0]), int(row[1])
