"""Who may call what: every route has a rule (a route without one is refused, and
tests/test_access.py fails), and every call but liveness and logging in needs an
authenticated user with a role that the rule allows.

    patient    their own data and alarms (acknowledge)
    care_team  their patients (or all, if so created): data, alarms (acknowledge, pause
               within the engine's bounds), settings, the dashboard, sync and devices
    engineer   devices, health, sync counts, the model, quarantine metadata: no clinical
               values
    uploader   a phone provisioned as a device (edge-twin uploader issue): its own
               patient's uploads to the Nightscout routes (/api/v1/), nothing else

A user is authenticated by a session cookie (the pages; SameSite=Strict, HttpOnly) or an
``Authorization: Bearer`` token (an API client, a display); an uploader by the SHA-1 hex
digest of its secret in the ``api-secret`` header (Nightscout's convention), and only on
the routes whose rule says ``uploader``. The acting identity of every
change is the authenticated user, never a name in the request. Every read of a patient's
data (one row per patient a list returned) and every change is written to the access log
(who, route, patient, allowed or refused; no values).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute

from edge_twin.domain import Device, Role
from edge_twin.errors import StoreError
from edge_twin.store import Store, uploaders, users

log = logging.getLogger(__name__)

SESSION_COOKIE = "edge_twin_session"
ANY = frozenset(Role)
CLINICAL = frozenset({Role.PATIENT, Role.CARE_TEAM})
OPERATIONS = frozenset({Role.ENGINEER, Role.CARE_TEAM})
CARE = frozenset({Role.CARE_TEAM})
ENGINEERS = frozenset({Role.ENGINEER})


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[Role]  # empty: open to anyone (liveness, logging in)
    # The route's {patient_id} must be one the user may see.
    patient: bool = False
    # For a phone uploading like a Nightscout client (by its api-secret), not a user.
    uploader: bool = False


OPEN = Rule(frozenset())
UPLOADER = Rule(frozenset(), uploader=True)
API_SECRET_HEADER = "api-secret"
UPLOADER_ROLE = "uploader"  # in the access log

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/health/live"): OPEN,
    ("GET", "/login"): OPEN,
    ("POST", "/login"): OPEN,
    ("GET", "/login/link"): OPEN,
    ("POST", "/logout"): Rule(ANY),
    ("GET", "/docs"): Rule(ANY),
    ("GET", "/docs/oauth2-redirect"): Rule(ANY),
    ("GET", "/redoc"): Rule(ANY),
    ("GET", "/openapi.json"): Rule(ANY),  # a plain route: checked by the app's middleware
    ("GET", "/me"): Rule(ANY),  # who is logged in, their display settings
    ("PUT", "/me/display"): Rule(ANY),  # their own
    ("GET", "/settings"): Rule(ANY),  # the same, as a page
    ("GET", "/health"): Rule(OPERATIONS),
    ("GET", "/sync"): Rule(OPERATIONS),  # per patient only for a care team's own
    ("GET", "/devices"): Rule(OPERATIONS),
    ("GET", "/model"): Rule(OPERATIONS),
    ("GET", "/quarantine"): Rule(ENGINEERS),  # metadata only
    ("GET", "/engineer"): Rule(ENGINEERS),  # the engineer's page: no clinical values
    ("GET", "/"): Rule(CARE),
    ("GET", "/patient"): Rule(frozenset({Role.PATIENT})),  # their own page
    ("GET", "/patients"): Rule(CLINICAL),  # the ones the user may see
    ("GET", "/events"): Rule(CLINICAL),  # the same: live updates of the pages
    ("GET", "/alarms"): Rule(CLINICAL),  # the same
    ("GET", "/alarms/{alarm_id}"): Rule(CLINICAL),  # the alarm's patient, checked there
    ("POST", "/alarms/{alarm_id}/acknowledge"): Rule(CLINICAL),  # the same
    ("GET", "/patients/{patient_id}/view"): Rule(CLINICAL, patient=True),  # the page
    ("GET", "/patients/{patient_id}/state"): Rule(CLINICAL, patient=True),
    ("GET", "/patients/{patient_id}/readings"): Rule(CLINICAL, patient=True),
    ("GET", "/patients/{patient_id}/risk"): Rule(CLINICAL, patient=True),
    ("GET", "/patients/{patient_id}/forecast-skill"): Rule(CLINICAL, patient=True),
    ("GET", "/patients/{patient_id}/alarm-settings"): Rule(CLINICAL, patient=True),
    ("GET", "/patients/{patient_id}/alarm-audit"): Rule(CLINICAL, patient=True),
    ("PUT", "/patients/{patient_id}/alarm-settings"): Rule(CARE, patient=True),
    ("POST", "/patients/{patient_id}/alarms/{alarm_type}/pause"): Rule(CARE, patient=True),
    # The Nightscout REST API v1 subset phone uploaders use (api/nightscout.py).
    ("GET", "/api/v1/status.json"): UPLOADER,
    ("GET", "/api/v1/status"): UPLOADER,
    ("GET", "/api/v1/verifyauth"): UPLOADER,
    ("GET", "/api/v1/experiments/test"): UPLOADER,
    ("POST", "/api/v1/entries"): UPLOADER,
    ("POST", "/api/v1/entries.json"): UPLOADER,
    ("POST", "/api/v1/treatments"): UPLOADER,
    ("POST", "/api/v1/treatments.json"): UPLOADER,
    ("PUT", "/api/v1/treatments"): UPLOADER,
    ("POST", "/api/v1/devicestatus"): UPLOADER,
    ("POST", "/api/v1/devicestatus.json"): UPLOADER,
}
# Served without a login: the docs pages' script and style (public code, no data).
PUBLIC_PREFIXES = ("/static-offline-docs",)


class MemorySessions:
    """Sessions of a store served read-only (``edge-twin serve``): the store cannot hold
    them, so they live in the process, as long as it does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_hash: dict[str, tuple[str, float]] = {}

    def add(self, token: str, username: str, expires_at: float) -> None:
        with self._lock:
            self._by_hash[hashlib.sha256(token.encode()).hexdigest()] = (username, expires_at)

    def user(self, store: Store, token: str, at: float) -> users.User | None:
        with self._lock:
            found = self._by_hash.get(hashlib.sha256(token.encode()).hexdigest())
        if found is None or found[1] <= at:
            return None
        user = users.get(store, found[0])
        return None if user is None or user.disabled else user

    def end(self, token: str) -> None:
        with self._lock:
            self._by_hash.pop(hashlib.sha256(token.encode()).hexdigest(), None)


@dataclass(frozen=True, slots=True)
class Guard:
    """What the app knows that every check needs."""

    read_only: bool
    allowed_hosts: frozenset[str]
    memory: MemorySessions


def rule_for(request: Request) -> tuple[str, Rule | None]:
    route = request.scope.get("route")
    path = route.path if isinstance(route, APIRoute) else request.url.path
    method = "GET" if request.method == "HEAD" else request.method
    return path, RULES.get((method, path))


def token_of(request: Request) -> tuple[str | None, tuple[users.Kind, ...]]:
    """The bearer token (a session or an API token) or the session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip(), (users.Kind.TOKEN, users.Kind.SESSION)
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie, (users.Kind.SESSION,)


def authenticate(request: Request, store: Store, guard: Guard) -> users.User:
    token, kinds = token_of(request)
    now = time.time()
    user = None
    if token is not None:
        user = users.resolve(store, token, now, kinds)
        if user is None and guard.read_only:
            user = guard.memory.user(store, token, now)
    if user is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Bearer"})
    return user


def authorize(request: Request, store: Store, guard: Guard) -> users.User | None:
    """The user the request acts as, after its route's rule: 401 without a valid login,
    403 when the role or the patient is not theirs, or a change comes from another
    site. Logged when it concerns a patient or is refused."""
    path, rule = rule_for(request)
    if rule is None:
        raise HTTPException(403, f"{request.method} {path} has no access rule")
    if request.method not in ("GET", "HEAD") and not _same_site(request, guard):
        raise HTTPException(403, "a change must come from the gateway's own pages")
    if rule.uploader:
        request.state.uploader = authenticate_uploader(request, store, guard, path)
        return None
    if not rule.roles:
        return None
    user = authenticate(request, store, guard)
    patient = request.path_params.get("patient_id") if rule.patient else None
    if rule.patient and patient is None:
        raise HTTPException(403, f"{path}: its rule names a patient the route does not have")
    allowed = user.role in rule.roles and (patient is None or user.may_see(patient))
    if patient is not None or not allowed:
        record(store, guard, user, request.method, path, [patient], allowed)
    if not allowed:
        raise HTTPException(403, f"{user.role.value} {user.username} may not do this")
    request.state.user = user
    return user


def authenticate_uploader(request: Request, store: Store, guard: Guard, path: str) -> Device:
    """The phone whose secret's SHA-1 hex digest is in the ``api-secret`` header: 401
    without it or with a wrong one, 403 for a user's login. An upload and a refused
    secret go to the access log (the phone as ``uploader``; never the header)."""
    header = request.headers.get(API_SECRET_HEADER, "")
    device = uploaders.device_for(store, header) if header else None
    if device is not None:
        if request.method not in ("GET", "HEAD"):
            record(
                store,
                guard,
                (device.device_id, UPLOADER_ROLE),
                request.method,
                path,
                [device.patient_id],
                True,
            )
        return device
    if not header and token_of(request)[0] is not None:
        raise HTTPException(403, "this route is for uploaders: send their api-secret header")
    if header:
        record(store, guard, ("?", UPLOADER_ROLE), request.method, path, [None], False)
    raise HTTPException(401, "send the uploader's secret in the api-secret header (SHA-1 hex)")


def _same_site(request: Request, guard: Guard) -> bool:
    """A browser's change request names its origin: it must be one of the gateway's own
    host names (SameSite cookies alone let another port of the same host through)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-origin request (an API client, a form of ours)
    return (urlsplit(origin).hostname or "") in guard.allowed_hosts


def require_patient_access(
    request: Request, store: Store, guard: Guard, user: users.User, patient_id: str
) -> bool:
    """For routes that find their patient in the store (an alarm's): the same check,
    logged; False if the user may not."""
    path, _ = rule_for(request)
    allowed = user.may_see(patient_id)
    record(store, guard, user, request.method, path, [patient_id], allowed)
    return allowed


def record(
    store: Store,
    guard: Guard,
    user: users.User | tuple[str, str],
    method: str,
    route: str,
    patients: Iterable[str | None],
    allowed: bool,
) -> None:
    """One access-log row per patient (a list logs every patient it returned); ``user``:
    a user, or (name, role) of another identity (an uploader phone)."""
    who = (user.username, user.role.value) if isinstance(user, users.User) else user
    outcome = "allowed" if allowed else "refused"
    rows = list(patients) or [None]
    if guard.read_only:  # a store served read-only keeps its log in the process's log
        for patient in rows:
            log.warning("access %s %s %s %s %s", who[0], method, route, patient, outcome)
        return
    at = time.time()
    try:
        with store.transaction() as conn:
            for patient in rows:
                users.log_access(conn, at, who, method, route, patient, outcome)
    except StoreError as exc:
        raise HTTPException(503, f"the access log cannot be written: {exc}") from exc
