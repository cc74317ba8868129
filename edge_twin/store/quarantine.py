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


def recent(store: Store, limit: int = 100, reason: str | None = None) -> list[QuarantinedMessage]:
    where, args = ("WHERE reason = ?", [reason]) if reason else ("", [])
    rows = store.conn.execute(
        "SELECT id, received_at, topic, payload, reason, detail, record_index, device_id"
        f" FROM quarantine {where} ORDER BY id DESC LIMIT ?",
        (*args, limit),
    )
    return [QuarantinedMessage(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7]) for r in rows]


def counts_by_reason(store: Store) -> dict[str, int]:
    rows = store.conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 1")
    return {str(r[0]): int(r[1]) for r in rows}
