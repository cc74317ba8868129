"""Quarantine: every rejected message or record, kept with its raw bytes and reason."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from edge_twin.domain import Rejection
from edge_twin.store.database import Store


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    id: int
    received_at: float
    topic: str
    payload: bytes
    reason: str
    detail: str
    record_index: int | None
    device_id: str | None


def insert(
    conn: sqlite3.Connection,
    items: Sequence[tuple[float, str, bytes, Rejection, str | None]],
) -> None:
    """Insert (received_at, topic, payload, rejection, device_id) rows in the caller's
    transaction."""
    conn.executemany(
        "INSERT INTO quarantine"
        " (received_at, topic, payload, reason, detail, record_index, device_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (at, topic, payload, rej.reason.value, rej.detail, rej.record_index, device)
            for at, topic, payload, rej, device in items
        ],
    )


def _select(store: Store, tail: str, args: Sequence[object]) -> list[QuarantinedMessage]:
    rows = store.conn.execute(
        "SELECT id, received_at, topic, payload, reason, detail, record_index, device_id"
        f" FROM quarantine {tail}",
        tuple(args),
    )
    return [QuarantinedMessage(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7]) for r in rows]


def recent(store: Store, limit: int = 100, reason: str | None = None) -> list[QuarantinedMessage]:
    where, args = ("WHERE reason = ?", [reason]) if reason else ("", [])
    return _select(store, f"{where} ORDER BY id DESC LIMIT ?", (*args, limit))


def counts_by_reason(store: Store) -> dict[str, int]:
    rows = store.conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 1")
    return {str(r[0]): int(r[1]) for r in rows}


def count(store: Store, reason: str) -> int:
    row = store.conn.execute("SELECT count(*) FROM quarantine WHERE reason = ?", (reason,))
    return int(row.fetchone()[0])


def oldest_with_reason(store: Store, reason: str, limit: int) -> list[QuarantinedMessage]:
    """The oldest ``limit`` rows quarantined for ``reason``, oldest first (to decode again)."""
    return _select(store, "WHERE reason = ? ORDER BY id LIMIT ?", (reason, limit))


def delete(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Delete rows by id in the caller's transaction (they were decoded again)."""
    conn.executemany("DELETE FROM quarantine WHERE id = ?", [(i,) for i in ids])
