"""The gateway's local HTTP API and care-team dashboard (FastAPI).

Each request opens its own read connection to the store (SQLite allows many readers
beside the one writer in WAL mode), so the API never blocks ingest.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge_twin import __version__
from edge_twin.alert import AlarmEngine, alarm_json, delivery_channels, storage_low
from edge_twin.api import (
    access,
    dashboard,
    engineer_page,
    events,
    login,
    nightscout,
    patient_detail,
    patient_view,
    settings_view,
    views,
)
from edge_twin.api.serialize import (
    audit_json,
    consumer_json,
    device_json,
    drift_json,
    quarantine_json,
    reading_json,
    risk_json,
    skill_json,
)
from edge_twin.assess import active_model, drift_report
from edge_twin.clock import Clock, to_iso
from edge_twin.config import ApiSection, Config
from edge_twin.domain import Alarm, Device, RejectReason, Role, Signal
from edge_twin.errors import AlarmError, ConfigError, ModelError
from edge_twin.ingest import Inlet
from edge_twin.store import (
    Store,
    alarms,
    consumers,
    devices,
    forecasts,
    quarantine,
    readings,
    risks,
    users,
)
from edge_twin.sync import sync_status


def _open_store(request: Request) -> Iterator[Store]:
    state = request.app.state
    store = Store(state.config.store.path, migrate=False, read_only=state.read_only)
    try:
        yield store
    finally:
        store.close()


StoreDep = Annotated[Store, Depends(_open_store)]


def _authorize(request: Request, store: StoreDep) -> None:
    access.authorize(request, store, request.app.state.guard)


def _user(request: Request) -> users.User:
    user: users.User = request.state.user  # set by _authorize for every ruled route
    return user


UserDep = Annotated[users.User, Depends(_user)]


# An alarm's id is a SQLite rowid: a larger number is not an alarm (422, not an overflow).
AlarmId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


# The acting user is the one logged in: a "by" in the body is ignored.
class AckBody(BaseModel):
    reason: str = Field(default="", max_length=500)


class DisplayBody(BaseModel):
    glucose_unit: Literal["mg/dL", "mmol/L"] | None = None
    time_zone: str | None = Field(default=None, max_length=64)
    clock_24h: bool | None = None


class PauseBody(BaseModel):
    minutes: float = Field(ge=1, le=24 * 60)
    reason: str = Field(default="", max_length=500)


# Nothing received from any device for this long: the dashboard says so (a CGM sends every
# 5 min, a wristband every minute).
NO_DATA_AFTER_S = 30 * 60.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def store_disk(path: Path) -> dict[str, int]:
    """Free space where the store lives, and the store's size with its WAL."""
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    usage = shutil.disk_usage(path.parent)
    return {
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "store_bytes": sum(f.stat().st_size for f in files if f.exists()),
    }


def allowed_hosts(api: ApiSection) -> list[str]:
    """The Host header values the API answers: loopback, the address it listens on (a
    specific one), and the names listed in ``api.allowed_hosts``."""
    hosts = list(LOOPBACK_HOSTS)
    if api.host not in ("0.0.0.0", "::", ""):
        hosts.append(api.host)
    hosts += [h.strip() for h in api.allowed_hosts.split(",") if h.strip()]
    return hosts


def create_app(
    config: Config,
    clock: Clock,
    ingest_status: Callable[[], dict[str, Any]] | None = None,
    read_only: bool = False,
    inlet: Inlet | None = None,
) -> FastAPI:
    """The API on ``config.store.path``; ``read_only``: a store served for reading
    (``edge-twin serve``): every request that would change it is refused (405), and
    logins live in memory. ``inlet``: the running ingest's, for the Nightscout uploads
    (without it they are refused with 503)."""
    app = FastAPIOffline(
        # Every route passes its access rule first (api/access.py).
        dependencies=[Depends(_authorize)],
        title="edge-twin gateway",
        version=__version__,
        description="Local API of an edge-twin home gateway: patients' twin state, readings,"
        " quarantine and health. Times are ISO 8601 UTC; values in canonical units.",
    )

    app.state.config = config
    app.state.read_only = read_only
    try:
        zone = ZoneInfo(config.api.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"api.time_zone {config.api.time_zone!r} is not an IANA time zone (e.g. Europe/Paris)"
        ) from exc
    deployment = dashboard.Display(zone, config.api.glucose_unit == "mmol/L")

    def display_for(store: Store, user: users.User) -> dashboard.Display:
        """The deployment's display, with what the user chose for themselves over it."""
        own = users.display_choice(store, user.username)
        return dashboard.Display(
            ZoneInfo(own.time_zone) if own.time_zone else deployment.zone,
            deployment.glucose_mmol if own.glucose_unit is None else own.glucose_unit == "mmol/L",
            deployment.clock_24h if own.clock_24h is None else own.clock_24h,
        )

    guard = access.Guard(read_only, frozenset(allowed_hosts(config.api)), access.MemorySessions())
    app.state.guard = guard
    if read_only:
        # Logging in and out change nothing in the store here (sessions live in memory).
        writable = {("POST", "/login"), ("POST", "/logout")}

        @app.middleware("http")
        async def refuse_writes(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            asked = (request.method, request.url.path)
            if request.method not in ("GET", "HEAD", "OPTIONS") and asked not in writable:
                return JSONResponse(
                    {"detail": "this store is served read-only (edge-twin serve)"}, 405
                )
            return await call_next(request)

    @app.middleware("http")
    async def guard_plain_routes(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """The OpenAPI document is a plain route, outside the routes' dependencies: the
        same login is asked for here."""
        if request.url.path == app.openapi_url:
            try:
                await run_in_threadpool(_logged_in, request)
            except HTTPException as exc:
                return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        return await call_next(request)

    def _logged_in(request: Request) -> None:
        with Store(config.store.path, migrate=False, read_only=read_only) as store:
            access.authenticate(request, store, guard)

    # DNS rebinding: a web page the user opened elsewhere may resolve its own name to the
    # gateway's address; the Host header it sends is not one of ours, so it is refused.
    # (No CORS middleware: other origins' scripts cannot read any answer.)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(config.api))

    def require_patient(store: Store, patient_id: str) -> None:
        if not devices.patient_exists(store, patient_id):
            raise HTTPException(404, f"unknown patient {patient_id!r}")

    def patient_state(store: Store, patient_id: str) -> dict[str, Any]:
        return views.patient_state(store, patient_id, clock.now(), config)

    nightscout.install(app, config, clock, lambda: inlet)

    @app.get("/health/live")
    def live() -> dict[str, str]:
        """Liveness, for a supervisor: the API answers (needs no login; says nothing)."""
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse)
    def login_page() -> str:
        """The login form."""
        return login.render(config.gateway.id)

    @app.post("/login")
    async def log_in(request: Request, store: StoreDep) -> Response:
        """Log in with a user name and password, as a form (the page: a session cookie,
        then the dashboard) or as JSON (an API client: a bearer token for the session)."""
        form = request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        )
        body = await request.body()
        try:
            if form:
                fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            else:
                fields = {str(k): str(v) for k, v in json.loads(body or b"{}").items()}
        except (ValueError, AttributeError, UnicodeDecodeError):
            raise HTTPException(400, "send username and password") from None
        name, password = fields.get("username", ""), fields.get("password", "")
        # scrypt takes tens of ms: off the event loop, or every route would wait for it.
        user = await run_in_threadpool(users.login, store, name, password)
        if user is None:
            if form:
                page = login.render(config.gateway.id, "Wrong user name or password.")
                return HTMLResponse(page, 401)
            raise HTTPException(401, "wrong user name or password")
        return await run_in_threadpool(_session_for, store, user, form)

    @app.get("/login/link")
    def log_in_by_link(code: str, store: StoreDep, next: str = "") -> Response:
        """A one-time login link (``edge-twin users link``): for a tablet by the
        patient's bed, or a test's browser. The code works once, for minutes; ``next``:
        the gateway's page to open then."""
        if read_only:
            raise HTTPException(405, "a store served read-only takes no login links: log in")
        user = users.redeem(store, code, time.time())
        if user is None:
            raise HTTPException(401, "this login link is used up or expired")
        local = next.startswith("/") and not next.startswith("//") and "\\" not in next
        return _session_for(store, user, to_page=True, page=next if local else "")

    @app.post("/logout")
    def log_out(request: Request, store: StoreDep) -> Response:
        """End this session."""
        token, _ = access.token_of(request)
        if token is not None:
            guard.memory.end(token)
            if not read_only:
                users.end_session(store, token)
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(access.SESSION_COOKIE)
        return response

    def _session_for(store: Store, user: users.User, to_page: bool, page: str = "") -> Response:
        """A page's login gets a session cookie and the page; an API client's, the
        session's bearer token (no cookie)."""
        ttl = config.api.session_hours * 3600.0
        now = time.time()
        if read_only:
            token = secrets.token_urlsafe(32)
            guard.memory.add(token, user.username, now + ttl)
        else:
            token = users.issue(store, user.username, users.Kind.SESSION, ttl, now)
        if not to_page:
            return JSONResponse({"token": token, "expires_in": int(ttl), "role": user.role.value})
        landing = {Role.CARE_TEAM: "/", Role.PATIENT: "/patient", Role.ENGINEER: "/engineer"}
        home = page or landing[user.role]
        response = RedirectResponse(home, 303)
        response.set_cookie(
            access.SESSION_COOKIE,
            token,
            max_age=int(ttl),
            httponly=True,
            samesite="strict",
            secure=config.api.secure_cookies or bool(config.api.tls_cert),
        )
        return response

    def health_report(store: Store) -> dict[str, Any]:
        running = ingest_status() if ingest_status else None
        workers = running.pop("workers", []) if running is not None else []
        problems = [w["problem"] for w in workers if w["problem"]]
        if running is not None and running.get("webhook_problem"):
            problems.append(running["webhook_problem"])
        if running is not None:  # a gateway running here (not `edge-twin serve` of a copy)
            problems += delivery_problems(store)
        internal = quarantine.count(store, RejectReason.INTERNAL_ERROR)
        if internal:
            problems.append(
                f"{internal} messages met a fault of the gateway's own and are kept as"
                " internal_error (see the log; edge-twin reprocess --reason internal_error"
                " once fixed)"
            )
        if running is not None and running.get("commits_failing_since") is not None:
            problems.append(
                "the store cannot be written since"
                f" {to_iso(running['commits_failing_since'])} ({running['last_error']}):"
                " readings are not stored; the broker keeps them until they are"
            )
        disk = store_disk(config.store.path)
        if storage_low(disk["free_bytes"], disk["total_bytes"]):
            problems.append(f"the disk is nearly full: {disk['free_bytes'] / 2**20:.0f} MiB free")
        if running is not None and running.get("running", True) and not running.get("connected"):
            why = running.get("last_error") or "no answer yet"
            problems.append(
                f"ingest is not connected to the broker at {config.mqtt.host}:"
                f"{config.mqtt.port} ({why}); retrying"
            )
        held = quarantine.count(store, RejectReason.CLOCK_UNSYNCHRONISED)
        if held and running is not None and running.get("clock_synchronised") is False:
            problems.append(
                f"the gateway's clock is not synchronised: {held} messages that look ahead"
                " of it are held until it is"
            )
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "gateway_id": config.gateway.id,
            "version": __version__,
            "now": to_iso(clock.now()),
            "schema": store.schema_version(),
            "readings": readings.count(store),
            "quarantined": quarantine.counts_by_reason(store),
            "ingest": running,
            "workers": workers,
            "consumers": [consumer_json(c, clock.now()) for c in consumers.statuses(store.conn)],
            # Counts only: which patients wait is for /sync (patient ids are patient data).
            "sync": sync_status(store, clock.now(), per_patient=False) if config.sync.url else None,
            "disk": disk,
        }

    running_channels = delivery_channels(config.alert)

    def delivery_problems(store: Store) -> list[str]:
        """The running alarm delivery channels with events waiting longer than
        alert.delivery_alarm_after_s (alarm_delivery_failing's rule), and events refused
        for good in the last day."""
        now, after = clock.now(), config.alert.delivery_alarm_after_s
        out = [
            f"alarm delivery {name} has had events waiting for {age / 60:.0f} min"
            for name, age in consumers.lagging(store.conn, running_channels, now, after).items()
        ]
        dead = consumers.dead_letter_count(store.conn, now - 86400.0)
        if dead:
            out.append(f"{dead} alarm events refused for good by the webhook in the last day")
        return out

    @app.get("/health")
    def health(store: StoreDep) -> dict[str, Any]:
        """Liveness and what flowed: schema, counts, ingest connection, each log
        consumer's backlog, disk; "degraded" with the reason when a worker the
        configuration asks for is not running."""
        return health_report(store)

    @app.get("/sync")
    def sync(request: Request, store: StoreDep, user: UserDep) -> dict[str, Any]:
        """FHIR upstream sync: on or off, backlog, failures; for a care team, per patient
        of theirs: consent, oldest unsent data and refused (parked) resources."""
        running = ingest_status() if ingest_status else None
        alive = None if running is None else running.get("sync_worker_alive")
        care = user.role is Role.CARE_TEAM
        status = sync_status(store, clock.now(), per_patient=care)
        if care:
            status["patients"] = [p for p in status["patients"] if user.may_see(p["patient_id"])]
            shown = [p["patient_id"] for p in status["patients"]]
            access.record(store, guard, user, "GET", "/sync", shown, True)
        return {"enabled": bool(config.sync.url), "worker_alive": alive, **status}

    @app.get("/patients")
    def list_patients(store: StoreDep, user: UserDep) -> list[dict[str, Any]]:
        """The patients the user may see, with their devices."""
        by_patient: dict[str, list[dict[str, str]]] = {
            p: [] for p in devices.patient_ids(store) if user.may_see(p)
        }
        for d in devices.all_devices(store):
            if d.patient_id in by_patient:
                by_patient[d.patient_id].append(
                    {"device_id": d.device_id, "device_type": d.device_type.value}
                )
        access.record(store, guard, user, "GET", "/patients", list(by_patient), True)
        return [{"patient_id": p, "devices": ds} for p, ds in by_patient.items()]

    @app.get("/devices")
    def list_devices(store: StoreDep) -> list[dict[str, Any]]:
        """Provisioned devices with what each last said about itself (the evidence of the
        technical alarms). Times are the device's own clock."""
        statuses = devices.statuses(store)
        return [device_json(d, statuses.get(d.device_id)) for d in devices.all_devices(store)]

    @app.get("/patients/{patient_id}/state")
    def get_state(patient_id: str, store: StoreDep) -> dict[str, Any]:
        """The twin's estimate of every signal now, with 95% intervals, forecasts,
        threshold risks, staleness and provenance."""
        require_patient(store, patient_id)
        return patient_state(store, patient_id)

    @app.get("/patients/{patient_id}/readings")
    def get_readings(
        patient_id: str,
        store: StoreDep,
        signal: Signal | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """Stored readings, newest first."""
        require_patient(store, patient_id)
        return [reading_json(r) for r in readings.for_patient(store, patient_id, signal, limit)]

    @app.get("/patients/{patient_id}/risk")
    def get_risk(
        patient_id: str, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 1
    ) -> list[dict[str, Any]]:
        """Decompensation risk assessments, newest first: calibrated probability, the
        model's threshold, confidence, top contributing features, provenance."""
        require_patient(store, patient_id)
        return [risk_json(r) for r in risks.latest(store, patient_id, limit)]

    @app.get("/patients/{patient_id}/forecast-skill")
    def get_forecast_skill(patient_id: str, store: StoreDep) -> dict[str, Any]:
        """How the twin's forecasts for this patient fared against the readings that came
        over the 7 days (event time) up to the newest scored one: per signal and horizon,
        how many were scored, RMSE, the share of readings inside the 95% interval (nominal
        0.95) and its mean width."""
        require_patient(store, patient_id)
        found = forecasts.skill(store, patient_id)
        return {
            "patient_id": patient_id,
            "since": to_iso(found[0].since) if found else None,
            "nominal_coverage95": 0.95,
            "skill": [skill_json(s) for s in found],
        }

    @app.get("/model")
    def get_model(
        store: StoreDep, last: Annotated[int, Query(ge=1, le=100_000)] = 500
    ) -> dict[str, Any]:
        """The active risk model (its card) and the drift of the last ``last`` assessments'
        features from its training distribution."""
        try:
            model = active_model(config.assess.model_dir)
        except ModelError as exc:
            raise HTTPException(503, str(exc)) from exc
        card = model.card
        return {
            "name": card.name,
            "version": card.version,
            "sha256": card.sha256,
            "horizon_days": card.horizon_days,
            "threshold": card.threshold,
            "validation": card.validation,
            "intended_use": card.intended_use,
            "limits": card.limits,
            "drift": drift_json(drift_report(card, risks.recent_features(store, last))),
        }

    def engine(store: Store) -> AlarmEngine:
        return AlarmEngine(store, clock.now)

    @app.get("/alarms")
    def list_alarms(
        request: Request,
        store: StoreDep,
        user: UserDep,
        patient_id: str | None = None,
        open_only: Annotated[bool, Query(alias="open")] = True,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """Alarms of the patients the user may see, newest first: open ones (active,
        acknowledged, paused) unless open=false."""
        if patient_id is not None:
            if not access.require_patient_access(request, store, guard, user, patient_id):
                raise HTTPException(403, f"{user.username} may not see {patient_id}")
            listed = alarms.listing(store.conn, patient_id, open_only, limit)
        else:
            everyone = alarms.listing(store.conn, None, open_only, 100_000)
            listed = [a for a in everyone if user.may_see(a.patient_id)][:limit]
            shown = sorted({a.patient_id for a in listed})
            access.record(store, guard, user, "GET", "/alarms", shown, True)
        return [alarm_json(a) for a in listed]

    def visible_alarm(request: Request, store: Store, user: users.User, alarm_id: int) -> Alarm:
        """The alarm, if it is of a patient the user may see; 404 alike for one that is
        not and one that does not exist (ids reveal nothing)."""
        a = alarms.get(store.conn, alarm_id)
        if a is None or not access.require_patient_access(
            request, store, guard, user, a.patient_id
        ):
            raise HTTPException(404, f"no alarm {alarm_id}")
        return a

    @app.get("/alarms/{alarm_id}")
    def get_alarm(
        request: Request, alarm_id: AlarmId, store: StoreDep, user: UserDep
    ) -> dict[str, Any]:
        """One alarm and its audit log: every state change, who, when, why."""
        a = visible_alarm(request, store, user, alarm_id)
        return {
            **alarm_json(a),
            "audit": [
                {
                    "event": e.event,
                    "at": to_iso(e.at),
                    "recorded_at": to_iso(e.recorded_at),
                    "actor": e.actor,
                    "why": e.reason,
                    "state": e.state.value,
                }
                for e in alarms.events(store.conn, alarm_id)
            ],
        }

    @app.post("/alarms/{alarm_id}/acknowledge")
    def acknowledge(
        request: Request, alarm_id: AlarmId, body: AckBody, store: StoreDep, user: UserDep
    ) -> dict[str, Any]:
        """Acknowledge an alarm, as the logged-in user: it resolves when its condition
        clears (a latched one whose condition has cleared resolves now)."""
        visible_alarm(request, store, user, alarm_id)
        try:
            return alarm_json(
                engine(store).acknowledge(alarm_id, user.username, body.reason, clock.now())
            )
        except AlarmError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.post("/patients/{patient_id}/alarms/{alarm_type}/pause")
    def pause(
        patient_id: str, alarm_type: str, body: PauseBody, store: StoreDep, user: UserDep
    ) -> dict[str, Any]:
        """Pause (snooze) one alarm type of one patient for ``minutes``, as the logged-in
        user, within the engine's bounds: nothing of that type sounds until then;
        afterwards it re-alerts only if the condition persists."""
        require_patient(store, patient_id)
        now = clock.now()
        try:
            a = engine(store).pause(
                patient_id, alarm_type, now + body.minutes * 60, user.username, body.reason, now
            )
        except AlarmError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"paused_until": to_iso(now + body.minutes * 60), "alarm": a and alarm_json(a)}

    @app.get("/patients/{patient_id}/alarm-settings")
    def get_alarm_settings(patient_id: str, store: StoreDep) -> dict[str, float]:
        """The patient's alarm thresholds (defaults unless changed)."""
        require_patient(store, patient_id)
        return asdict(engine(store).settings(patient_id))

    @app.put("/patients/{patient_id}/alarm-settings")
    def put_alarm_settings(
        patient_id: str, changes: dict[str, float], store: StoreDep, user: UserDep
    ) -> dict[str, float]:
        """Change some thresholds, as the logged-in user; each is checked against its safe
        range and the alert / recovery pairs against each other (422 lists every
        problem)."""
        require_patient(store, patient_id)
        by = user.username
        try:
            return asdict(engine(store).set_settings(patient_id, dict(changes), by, clock.now()))
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/patients/{patient_id}/alarm-audit")
    def get_alarm_audit(
        patient_id: str, store: StoreDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """Every pause and settings change of the patient's alarms, done or refused, with
        who, when, the old and the new values; newest first."""
        require_patient(store, patient_id)
        return [audit_json(e) for e in alarms.audit_log(store.conn, patient_id, limit)]

    @app.get("/quarantine")
    def get_quarantine(
        store: StoreDep,
        reason: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """Rejected messages and records with their reason, newest first: metadata (an
        engineer sees no clinical values: the payloads are left out)."""
        found = quarantine.recent(store, limit, reason)
        return [quarantine_json(q, values=False) for q in found]

    @app.get("/", response_class=HTMLResponse)
    def index(store: StoreDep, user: UserDep) -> str:
        """The care-team dashboard: the user's patients."""
        mine = [p for p in devices.patient_ids(store) if user.may_see(p)]
        access.record(store, guard, user, "GET", "/", mine, True)
        states = [patient_state(store, p) for p in mine]
        open_alarms: dict[str, list[dict[str, Any]]] = {}
        for a in alarms.listing(store.conn, None, True, 10_000):
            if a.patient_id in mine:
                open_alarms.setdefault(a.patient_id, []).append(alarm_json(a))
        now = to_iso(clock.now())
        problems = data_problems(store)
        show = display_for(store, user)
        return dashboard.render(config.gateway.id, now, states, open_alarms, show, problems)

    def data_problems(store: Store) -> list[str]:
        """Why the pages may not show the present: ingest not connected, or nothing
        received for longer than any sensor's normal silence."""
        out = []
        running = ingest_status() if ingest_status else None
        if running is not None and running.get("running", True) and not running.get("connected"):
            out.append(
                "the gateway is not connected to its MQTT broker: readings are not arriving"
                f" ({running.get('last_error') or 'no answer yet'})"
            )
        if ingest_status is not None and devices.all_devices(store):
            newest = readings.last_arrival(store)
            silence = clock.now() - newest
            if math.isfinite(newest) and silence > NO_DATA_AFTER_S:
                out.append(f"no reading has arrived for {silence / 60:.0f} min")
        return out

    @app.get("/patients/{patient_id}/view", response_class=HTMLResponse)
    def patient_detail_page(
        patient_id: str,
        store: StoreDep,
        user: UserDep,
        days: Annotated[int, Query(ge=1, le=90)] = 14,
        hours: Annotated[int, Query(ge=1, le=72)] = 24,
    ) -> str:
        """One patient's page: glucose with the twin's estimate and forecast cone, the
        glucose summary of the period (time in ranges, GMI, CV, daily profile), blood
        pressure, weight and its change, heart rate, SpO2, breathing, steps, the
        decompensation risk over time, the alarms and their audit trail."""
        require_patient(store, patient_id)
        show = display_for(store, user)
        h = views.patient_timeline(store, patient_id, clock.now(), config, days, hours, show.zone)
        back = "/" if user.role is Role.CARE_TEAM else "/patient"
        problems = data_problems(store)
        care = user.role is Role.CARE_TEAM
        return patient_detail.render(
            config.gateway.id, h, show, days, hours, problems, back, can_pause=care
        )

    closing = threading.Event()  # set by ApiServer.stop: open event streams end
    app.state.closing = closing
    source = events.EventSource(config.store.path, read_only, guard, data_problems, closing)

    @app.get("/events", response_class=StreamingResponse)
    async def live_events(request: Request, store: StoreDep, user: UserDep) -> StreamingResponse:
        """Server-sent events for the pages: an alarm event, new readings, or a change in
        why data may not be current, for the user's own patients; no values (a page
        fetches itself again). Starts at the logs' ends; ends with the login."""

        def log_access() -> None:
            mine = [p for p in devices.patient_ids(store) if user.may_see(p)]
            access.record(store, guard, user, "GET", "/events", mine, True)
            # The request's connection would otherwise stay open as long as the stream.
            store.close()

        await run_in_threadpool(log_access)
        return StreamingResponse(
            events.stream(source, request, user),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/me")
    def me(store: StoreDep, user: UserDep) -> dict[str, Any]:
        """Who is logged in: name, role, the patients they may see, and how the pages
        show things to them (their own choices, and what is in effect)."""
        own = users.display_choice(store, user.username)
        show = display_for(store, user)
        return {
            "username": user.username,
            "role": user.role.value,
            "all_patients": user.all_patients,
            "patients": sorted(user.patients),
            "display": {
                "own": asdict(own),
                "effective": {
                    "glucose_unit": "mmol/L" if show.glucose_mmol else "mg/dL",
                    "time_zone": str(show.zone),
                    "clock_24h": show.clock_24h,
                },
            },
        }

    @app.put("/me/display")
    def set_my_display(body: DisplayBody, store: StoreDep, user: UserDep) -> dict[str, Any]:
        """Choose how the pages show things to you: glucose unit, time zone, 24-hour
        clock; null for the deployment's."""
        if body.time_zone is not None:
            try:
                ZoneInfo(body.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise HTTPException(
                    422, f"{body.time_zone!r} is not an IANA time zone (e.g. Europe/Paris)"
                ) from None
        choice = users.DisplayChoice(body.glucose_unit, body.time_zone, body.clock_24h)
        users.set_display_choice(store, user.username, choice)
        return me(store, user)

    @app.get("/settings", response_class=HTMLResponse)
    def settings_page(store: StoreDep, user: UserDep) -> str:
        """The logged-in user's display settings, as a form."""
        return settings_view.render(user, users.display_choice(store, user.username), deployment)

    @app.get("/engineer", response_class=HTMLResponse)
    def engineer(store: StoreDep, user: UserDep) -> str:
        """The field engineer's page: health, devices and what they last said, open
        technical alarms, log consumers, sync counts, disk, quarantine metadata; no
        clinical values."""
        statuses = devices.statuses(store)
        found = [
            {**device_json(d, statuses.get(d.device_id)), "last_seen_at": last_seen(store, d)}
            for d in devices.all_devices(store)
        ]
        technical = [
            alarm_json(a) for a in alarms.listing(store.conn, None, True, 10_000) if a.technical
        ]
        recent = [quarantine_json(q, values=False) for q in quarantine.recent(store, 20, None)]
        show = display_for(store, user)
        return engineer_page.render(health_report(store), found, technical, recent, show)

    def last_seen(store: Store, d: Device) -> str | None:
        heard = [readings.latest_time(store, d.device_id, s) for s in d.device_type.signals]
        last = max((t for t in heard if t is not None), default=None)
        return None if last is None else to_iso(last)

    @app.get("/patient", response_class=HTMLResponse)
    def patient_page(store: StoreDep, user: UserDep) -> str:
        """The patient's own page (a tablet or a TV at home): glucose now with its trend,
        the latest blood pressure and weight, their alarms in plain words with what to do
        and a button to say they saw it, their devices' last sign of life."""
        (pid,) = sorted(user.patients)  # a patient user sees exactly one (users.add)
        access.record(store, guard, user, "GET", "/patient", [pid], True)
        statuses = devices.statuses(store)
        mine = [
            {**device_json(d, statuses.get(d.device_id)), "last_seen_at": last_seen(store, d)}
            for d in devices.all_devices(store)
            if d.patient_id == pid
        ]
        open_alarms = [alarm_json(a) for a in alarms.listing(store.conn, pid, True, 100)]
        state = patient_state(store, pid)
        now = to_iso(clock.now())
        return patient_view.render(pid, now, state, open_alarms, mine, display_for(store, user))

    return app
