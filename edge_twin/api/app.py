"""The gateway's local HTTP API and care-team dashboard (FastAPI).

Each request opens its own read connection to the store (SQLite allows many readers
beside the one writer in WAL mode), so the API never blocks ingest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from edge_twin import __version__
from edge_twin.api import dashboard
from edge_twin.api.serialize import estimate_json, quarantine_json, reading_json
from edge_twin.clock import Clock, to_iso
from edge_twin.config import Config
from edge_twin.domain import Signal
from edge_twin.estimate.view import patient_estimates
from edge_twin.store import Store, devices, quarantine, readings


def _open_store(request: Request) -> Iterator[Store]:
    store = Store(request.app.state.config.store.path, migrate=False)
    try:
        yield store
    finally:
        store.close()


StoreDep = Annotated[Store, Depends(_open_store)]


def create_app(
    config: Config, clock: Clock, ingest_status: Callable[[], dict[str, Any]] | None = None
) -> FastAPI:
    app = FastAPI(
        title="edge-twin gateway",
        version=__version__,
        description="Local API of an edge-twin home gateway: patients' twin state, readings,"
        " quarantine and health. Times are ISO 8601 UTC; values in canonical units.",
    )

    app.state.config = config

    def require_patient(store: Store, patient_id: str) -> None:
        if not devices.patient_exists(store, patient_id):
            raise HTTPException(404, f"unknown patient {patient_id!r}")

    def patient_state(store: Store, patient_id: str) -> dict[str, Any]:
        now = clock.now()
        stale_after = config.estimate.stale_after_s
        return {
            "patient_id": patient_id,
            "as_of": to_iso(now),
            "signals": {
                e.signal.value: estimate_json(e, now, stale_after)
                for e in patient_estimates(store, patient_id, now)
            },
        }

    @app.get("/health")
    def health(store: StoreDep) -> dict[str, Any]:
        """Liveness and what flowed: schema, counts, ingest connection."""
        return {
            "status": "ok",
            "gateway_id": config.gateway.id,
            "version": __version__,
            "now": to_iso(clock.now()),
            "schema": store.schema_version(),
            "readings": readings.count(store),
            "quarantined": quarantine.counts_by_reason(store),
            "ingest": ingest_status() if ingest_status else None,
        }

    @app.get("/patients")
    def list_patients(store: StoreDep) -> list[dict[str, Any]]:
        by_patient: dict[str, list[dict[str, str]]] = {p: [] for p in devices.patient_ids(store)}
        for d in devices.all_devices(store):
            by_patient.setdefault(d.patient_id, []).append(
                {"device_id": d.device_id, "device_type": d.device_type.value}
            )
        return [{"patient_id": p, "devices": ds} for p, ds in by_patient.items()]

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
