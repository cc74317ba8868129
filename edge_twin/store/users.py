"""Users of the API and pages, their credentials, sessions and the access log (migration
0013). Passwords are kept as scrypt hashes, tokens as SHA-256 hashes: the store never
holds a secret that would let someone who copies it log in."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from edge_twin.domain import Role
from edge_twin.errors import ProvisioningError
from edge_twin.store.database import Store

# scrypt at n=2^14, r=8, p=1: ~50 ms and 16 MiB on a Pi-class CPU (OWASP's minimum).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 10


class Kind(StrEnum):
    SESSION = "session"  # a browser login (cookie)
    TOKEN = "token"  # an API token (a display, an integration)
    CODE = "code"  # a one-time login link (a patient's tablet, a test's browser)


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    all_patients: bool  # a care team that sees every patient of the gateway
    patients: frozenset[str]
    disabled: bool = False

    def may_see(self, patient_id: str) -> bool:
        if self.role is Role.ENGINEER:
            return False  # no clinical data
        return self.all_patients or patient_id in self.patients


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        found = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found.hex(), digest)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(
    store: Store,
    username: str,
    role: Role,
    password: str,
    at: float,
    patients: frozenset[str] = frozenset(),
    all_patients: bool = False,
) -> User:
    if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ProvisioningError(f"user name {username!r}: letters, digits, '-', '_', '.' only")
    if len(password) < MIN_PASSWORD:
        raise ProvisioningError(f"a password needs at least {MIN_PASSWORD} characters")
    if role is Role.PATIENT and (all_patients or len(patients) != 1):
        raise ProvisioningError("a patient user sees exactly one patient: give --patient once")
    if role is Role.ENGINEER and (all_patients or patients):
        raise ProvisioningError("an engineer sees no patient's clinical data: no --patient")
    with store.transaction() as conn:
        try:
            conn.execute(
                "INSERT INTO users (username, role, password_hash, all_patients, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (username, role.value, hash_password(password), int(all_patients), at),
            )
        except sqlite3.IntegrityError:
            raise ProvisioningError(f"user {username!r} exists already") from None
        conn.executemany(
            "INSERT INTO user_patients (username, patient_id) VALUES (?, ?)",
            [(username, p) for p in sorted(patients)],
        )
    user = get(store, username)
    assert user is not None
    return user


def get(store: Store, username: str) -> User | None:
    row = store.conn.execute(
        "SELECT username, role, all_patients, disabled FROM users WHERE username = ?",
        (username,),
    ).fetchone()
    if row is None:
        return None
    patients = frozenset(
        r[0]
        for r in store.conn.execute(
            "SELECT patient_id FROM user_patients WHERE username = ?", (username,)
        )
    )
    return User(row[0], Role(row[1]), bool(row[2]), patients, bool(row[3]))


@dataclass(frozen=True, slots=True)
class DisplayChoice:
    """A user's own display choices; None: the deployment's."""

    glucose_unit: str | None = None  # mg/dL | mmol/L
    time_zone: str | None = None  # IANA
    clock_24h: bool | None = None


def display_choice(store: Store, username: str) -> DisplayChoice:
    row = store.conn.execute(
        "SELECT glucose_unit, time_zone, clock_24h FROM user_display WHERE username = ?",
        (username,),
    ).fetchone()
    if row is None:
        return DisplayChoice()
    return DisplayChoice(row[0], row[1], None if row[2] is None else bool(row[2]))


def set_display_choice(store: Store, username: str, choice: DisplayChoice) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO user_display (username, glucose_unit, time_zone, clock_24h)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET"
            " glucose_unit = excluded.glucose_unit, time_zone = excluded.time_zone,"
            " clock_24h = excluded.clock_24h",
            (
                username,
                choice.glucose_unit,
                choice.time_zone,
                None if choice.clock_24h is None else int(choice.clock_24h),
            ),
        )


def listing(store: Store) -> list[User]:
    names = [r[0] for r in store.conn.execute("SELECT username FROM users ORDER BY username")]
    return [u for u in (get(store, n) for n in names) if u is not None]


def set_password(store: Store, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ProvisioningError(f"a password needs at least {MIN_PASSWORD} characters")
    with store.transaction() as conn:
        found = conn.execute(
            "UPDATE users SET password_hash = ? WHERE username = ?",
            (hash_password(password), username),
        ).rowcount
        if not found:
            raise ProvisioningError(f"no user {username!r}")
        # A new password ends every session and token the old one could have given.
        conn.execute("DELETE FROM sessions WHERE username = ?", (username,))


def disable(store: Store, username: str) -> None:
    with store.transaction() as conn:
        found = conn.execute(
            "UPDATE users SET disabled = 1 WHERE username = ?", (username,)
        ).rowcount
        if not found:
            raise ProvisioningError(f"no user {username!r}")
        conn.execute("DELETE FROM sessions WHERE username = ?", (username,))


# Checked against when there is no user (or a disabled one): one scrypt run either way, so
# the time of an answer does not tell which user names exist.
_NOBODY = hash_password(secrets.token_urlsafe(16))
MAX_PASSWORD = 1024


def login(store: Store, username: str, password: str) -> User | None:
    """The user if the password is theirs and they are not disabled."""
    if len(password) > MAX_PASSWORD:
        return None
    row = store.conn.execute(
        "SELECT password_hash, disabled FROM users WHERE username = ?", (username,)
    ).fetchone()
    usable = row is not None and not row[1]
    matches = check_password(password, row[0] if usable else _NOBODY)
    return get(store, username) if usable and matches else None


def issue(store: Store, username: str, kind: Kind, ttl_s: float, at: float, label: str = "") -> str:
    """A new secret for ``username`` (returned once; the store keeps its hash)."""
    token = secrets.token_urlsafe(32)
    with store.transaction() as conn:
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (at,))  # housekeeping
        conn.execute(
            "INSERT INTO sessions (token_hash, username, kind, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (_token_hash(token), username, kind.value, label, at, at + ttl_s),
        )
    return token


def resolve(store: Store, token: str, at: float, kinds: tuple[Kind, ...]) -> User | None:
    """The active user a session or token belongs to (None: unknown, expired, disabled)."""
    row = store.conn.execute(
        "SELECT s.username, s.kind FROM sessions s JOIN users u ON u.username = s.username"
        " WHERE s.token_hash = ? AND s.expires_at > ? AND NOT u.disabled",
        (_token_hash(token), at),
    ).fetchone()
    if row is None or Kind(row[1]) not in kinds:
        return None
    return get(store, row[0])


def redeem(store: Store, code: str, at: float) -> User | None:
    """A one-time login code: the user it was issued for, and it is gone."""
    user = resolve(store, code, at, (Kind.CODE,))
    if user is not None:
        with store.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(code),))
    return user


def end_session(store: Store, token: str) -> None:
    """Log out: a session ends; an API token is not a session (it is revoked by
    disabling its user)."""
    with store.transaction() as conn:
        conn.execute(
            "DELETE FROM sessions WHERE token_hash = ? AND kind = 'session'", (_token_hash(token),)
        )


def log_access(
    conn: sqlite3.Connection,
    at: float,
    who: tuple[str, str],
    method: str,
    route: str,
    patient_id: str | None,
    outcome: str,
) -> None:
    """Who (name, role: a user's, or an uploader phone's) asked for what (the route, not
    its values) of which patient, and the answer."""
    conn.execute(
        "INSERT INTO access_log (at, username, role, method, route, patient_id, outcome)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, who[0], who[1], method, route, patient_id, outcome),
    )


@dataclass(frozen=True, slots=True)
class Access:
    at: float
    username: str
    role: str
    method: str
    route: str
    patient_id: str | None
    outcome: str


def access_log(store: Store, patient_id: str | None = None, limit: int = 100) -> list[Access]:
    where, args = ("WHERE patient_id = ?", [patient_id]) if patient_id else ("", [])
    rows = store.conn.execute(
        "SELECT at, username, role, method, route, patient_id, outcome FROM access_log"
        f" {where} ORDER BY id DESC LIMIT ?",
        [*args, limit],
    )
    return [Access(*r) for r in rows]
