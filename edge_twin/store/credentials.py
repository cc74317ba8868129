"""The broker's users and their password hashes (never a password), and the log of who
provisioned, rotated or revoked what. ``edge_twin.provisioning`` writes the broker's
password file and ACL from these rows."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from edge_twin.errors import ProvisioningError
from edge_twin.store.database import Store


class Kind(StrEnum):
    DEVICE = "device"
    DISPLAY = "display"
    GATEWAY = "gateway"  # the gateway service's own credential


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    kind: Kind
    issued_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: float
    actor: str
    action: str
    subject: str
    detail: str


def issue(
    store: Store, username: str, kind: Kind, hashed: str, at: float, actor: str, action: str
) -> None:
    """Give ``username`` a (new) password hash, replacing any earlier one (``action``:
    issued or rotated), logged in the same transaction."""
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT kind FROM broker_credentials WHERE username = ?", (username,)
        ).fetchone()
        if row is not None and row[0] != kind.value:
            raise ProvisioningError(f"broker user {username!r} is a {row[0]}, not a {kind.value}")
        conn.execute(
            "INSERT INTO broker_credentials (username, kind, hash, issued_at, revoked_at)"
            " VALUES (?, ?, ?, ?, NULL) ON CONFLICT (username) DO UPDATE SET"
            " hash = excluded.hash, issued_at = excluded.issued_at, revoked_at = NULL",
            (username, kind.value, hashed, at),
        )
        _log(conn, at, actor, action, username, kind.value)


def revoke(store: Store, username: str, at: float, actor: str) -> bool:
    """Revoke ``username``'s credential; False if it had none (or it was revoked)."""
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE broker_credentials SET revoked_at = ? WHERE username = ?"
            " AND revoked_at IS NULL",
            (at, username),
        ).rowcount
        if changed:
            _log(conn, at, actor, "credential revoked", username, "")
    return bool(changed)


def get(store: Store, username: str) -> Credential | None:
    row = store.conn.execute(
        "SELECT username, kind, issued_at, revoked_at FROM broker_credentials WHERE username = ?",
        (username,),
    ).fetchone()
    return None if row is None else Credential(row[0], Kind(row[1]), row[2], row[3])


def hash_of(store: Store, username: str) -> str | None:
    """The current hash of an unrevoked credential."""
    row = store.conn.execute(
        "SELECT hash FROM broker_credentials WHERE username = ? AND revoked_at IS NULL",
        (username,),
    ).fetchone()
    return None if row is None else str(row[0])


def active_hashes(store: Store) -> dict[str, str]:
    rows = store.conn.execute(
        "SELECT username, hash FROM broker_credentials WHERE revoked_at IS NULL"
    )
    return {str(r[0]): str(r[1]) for r in rows}


def listing(store: Store) -> list[Credential]:
    rows = store.conn.execute(
        "SELECT username, kind, issued_at, revoked_at FROM broker_credentials ORDER BY username"
    )
    return [Credential(r[0], Kind(r[1]), r[2], r[3]) for r in rows]


def log(store: Store, at: float, actor: str, action: str, subject: str, detail: str = "") -> None:
    with store.transaction() as conn:
        _log(conn, at, actor, action, subject, detail)


def _log(
    conn: sqlite3.Connection, at: float, actor: str, action: str, subject: str, detail: str
) -> None:
    conn.execute(
        "INSERT INTO provisioning_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (at, actor, action, subject, detail),
    )


def history(store: Store, limit: int = 100) -> list[LogEntry]:
    rows = store.conn.execute(
        "SELECT at, actor, action, subject, detail FROM provisioning_log ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [LogEntry(*r) for r in rows]
