"""The gateway's local HTTP API and care-team dashboard (FastAPI).

Each request opens its own read connection to the store (SQLite allows many readers
beside the one writer in WAL mode), so the API never blocks ingest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge_twin import __version__
from edge_twin.alert import AlarmEngine, alarm_json
from edge_twin.api import dashboard, views
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
from edge_twin.domain import Signal
from edge_twin.errors import AlarmError, ConfigError, ModelError
from edge_twin.store import (
    Store,
    alarms,
    consumers,
    devices,
    forecasts,
    quarantine,
    readings,
    risks,
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


class AckBody(BaseModel):
    by: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="", max_length=500)


class PauseBody(BaseModel):
    by: str = Field(min_length=1, max_length=100)
    minutes: float = Field(ge=1, le=24 * 60)
    reason: str = Field(default="", max_length=500)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


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
) -> FastAPI:
    """The API on ``config.store.path``; ``read_only``: a store served for reading
    (``edge-twin serve``): every request that would change it is refused (405)."""
    app = FastAPIOffline(
        title="edge-twin gateway",
        version=__version__,
        description="Local API of an edge-twin home gateway: patients' twin state, readings,"
        " quarantine and health. Times are ISO 8601 UTC; values in canonical units.",
    )

    app.state.config = config
    app.state.read_only = read_only
    if read_only:

        @app.middleware("http")
        async def refuse_writes(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                return JSONResponse(
                    {"detail": "this store is served read-only (edge-twin serve)"}, 405
                )
            return await call_next(request)

    # DNS rebinding: a web page the user opened elsewhere may resolve its own name to the
    # gateway's address; the Host header it sends is not one of ours, so it is refused.
    # (No CORS middleware: other origins' scripts cannot read any answer.)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(config.api))

    def require_patient(store: Store, patient_id: str) -> None:
        if not devices.patient_exists(store, patient_id):
            raise HTTPException(404, f"unknown patient {patient_id!r}")

    def patient_state(store: Store, patient_id: str) -> dict[str, Any]:
        return views.patient_state(store, patient_id, clock.now(), config)

    @app.get("/health")
    def health(store: StoreDep) -> dict[str, Any]:
        """Liveness and what flowed: schema, counts, ingest connection; "degraded" with
        the reason when a worker the configuration asks for is not running."""
        running = ingest_status() if ingest_status else None
        problems = []
        if config.sync.url and running is not None and running.get("sync_worker_alive") is False:
            problems.append("the FHIR sync worker is not running")
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
            "consumers": [consumer_json(c, clock.now()) for c in consumers.statuses(store.conn)],
            # Counts only: which patients wait is for /sync (patient ids are patient data).
            "sync": sync_status(store, clock.now(), per_patient=False) if config.sync.url else None,
        }

    @app.get("/sync")
    def sync(store: StoreDep) -> dict[str, Any]:
        """FHIR upstream sync: on or off, backlog, failures, per patient consent, oldest
        unsent data and refused (parked) resources."""
        running = ingest_status() if ingest_status else None
        alive = None if running is None else running.get("sync_worker_alive")
        return {
            "enabled": bool(config.sync.url),
            "worker_alive": alive,
            **sync_status(store, clock.now()),
        }

    @app.get("/patients")
    def list_patients(store: StoreDep) -> list[dict[str, Any]]:
        by_patient: dict[str, list[dict[str, str]]] = {p: [] for p in devices.patient_ids(store)}
        for d in devices.all_devices(store):
            by_patient.setdefault(d.patient_id, []).append(
                {"device_id": d.device_id, "device_type": d.device_type.value}
            )
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
        store: StoreDep,
        patient_id: str | None = None,
        open_only: Annotated[bool, Query(alias="open")] = True,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """Alarms, newest first: open ones (active, acknowledged, paused) unless open=false."""
        return [alarm_json(a) for a in alarms.listing(store.conn, patient_id, open_only, limit)]

    @app.get("/alarms/{alarm_id}")
    def get_alarm(alarm_id: int, store: StoreDep) -> dict[str, Any]:
        """One alarm and its audit log: every state change, who, when, why."""
        a = alarms.get(store.conn, alarm_id)
        if a is None:
            raise HTTPException(404, f"no alarm {alarm_id}")
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
    def acknowledge(alarm_id: int, body: AckBody, store: StoreDep) -> dict[str, Any]:
        """Acknowledge an alarm: it resolves when its condition clears (a latched one whose
        condition has cleared resolves now)."""
        try:
            return alarm_json(
                engine(store).acknowledge(alarm_id, body.by, body.reason, clock.now())
            )
        except AlarmError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.post("/patients/{patient_id}/alarms/{alarm_type}/pause")
    def pause(patient_id: str, alarm_type: str, body: PauseBody, store: StoreDep) -> dict[str, Any]:
        """Pause (snooze) one alarm type of one patient for ``minutes``: nothing of that
        type sounds until then; afterwards it re-alerts only if the condition persists."""
        require_patient(store, patient_id)
        now = clock.now()
        try:
            a = engine(store).pause(
                patient_id, alarm_type, now + body.minutes * 60, body.by, body.reason, now
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
        patient_id: str, changes: dict[str, float], store: StoreDep, by: str = "api"
    ) -> dict[str, float]:
        """Change some thresholds; each is checked against its safe range and the alert /
        recovery pairs against each other (422 lists every problem)."""
        require_patient(store, patient_id)
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
        """Rejected messages and records with their reason, newest first."""
        return [quarantine_json(q) for q in quarantine.recent(store, limit, reason)]

    @app.get("/", response_class=HTMLResponse)
    def index(store: StoreDep) -> str:
        """The care-team dashboard."""
        states = [patient_state(store, p) for p in devices.patient_ids(store)]
        return dashboard.render(config.gateway.id, to_iso(clock.now()), states)

    return app
