"""API and page latency with a full store: the main pages and endpoints of a gateway that
holds ``--days`` days of ``--patients`` patients, p50/p99 per endpoint.

The store is firmware_sim's reference home (its default cohort mix: heart failure,
diabetes, both; CGM, wrist, cuff, scale; the simulator's rates and delivery faults)
replayed through the gateway's own pipeline (``edge-twin replay``'s path: readings, the
twin, risks, alarms). Building it takes about 10 minutes per simulated month, so it is
cached under var/cache/api by cohort (delete it to rebuild with changed pipeline code);
each run works on a migrated copy (the access log grows as the pages are read).

The API runs as the gateway serves it (uvicorn on loopback, its clock at the end of the
data), without ingest beside it; one client asks each endpoint ``--requests`` times in
turn, as the user its rule allows (care team, patient, engineer), after ``--warmup``
unmeasured requests; patient routes rotate over the patients. Latency is the client's,
request to last byte.

    .venv/bin/python bench/api.py [--patients 10] [--days 90] [--seed 31] [--requests 60]
Last line: one JSON object with ``endpoints`` (name -> {p50_ms, p99_ms}) and
``worst_p99_ms``; the goal is every p99 under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay import cohort, replay_into  # noqa: E402

from edge_twin.api import create_app  # noqa: E402
from edge_twin.api.server import ApiServer  # noqa: E402
from edge_twin.clock import ManualClock  # noqa: E402
from edge_twin.config import load_config  # noqa: E402
from edge_twin.domain import Role  # noqa: E402
from edge_twin.store import Store, users  # noqa: E402

GOAL_P99_MS = 300.0
PASSWORD = "bench-password-not-secret"

# name -> (role, path); {p}: a patient, rotating
ENDPOINTS: dict[str, tuple[Role, str]] = {
    "dashboard": (Role.CARE_TEAM, "/"),
    "patient_page": (Role.CARE_TEAM, "/patients/{p}/view"),
    "patient_page_90d": (Role.CARE_TEAM, "/patients/{p}/view?days=90&hours=72"),
    "own_page": (Role.PATIENT, "/patient"),
    "patients": (Role.CARE_TEAM, "/patients"),
    "state": (Role.CARE_TEAM, "/patients/{p}/state"),
    "readings_1000": (Role.CARE_TEAM, "/patients/{p}/readings?limit=1000"),
    "risk_100": (Role.CARE_TEAM, "/patients/{p}/risk?limit=100"),
    "forecast_skill": (Role.CARE_TEAM, "/patients/{p}/forecast-skill"),
    "alarms": (Role.CARE_TEAM, "/alarms"),
    "alarm_audit": (Role.CARE_TEAM, "/patients/{p}/alarm-audit"),
    "alarm_settings": (Role.CARE_TEAM, "/patients/{p}/alarm-settings"),
    "health": (Role.ENGINEER, "/health"),
    "devices": (Role.ENGINEER, "/devices"),
    "sync": (Role.ENGINEER, "/sync"),
    "model": (Role.ENGINEER, "/model"),
    "quarantine": (Role.ENGINEER, "/quarantine"),
    "openapi": (Role.ENGINEER, "/openapi.json"),
}


def cached_store(patients: int, days: float, seed: int, cache: Path) -> Path:
    source = cohort(patients, days, seed, ROOT / "var" / "cache" / "replay")
    out = cache / f"{source.name}.sqlite"
    if not out.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"building the store from {source} (cached at {out})", file=sys.stderr)
        partial = out.with_suffix(".partial")
        for stale in cache.glob(f"{partial.name}*"):
            stale.unlink()
        seconds, stored = replay_into(partial, source)
        print(f"{stored} readings replayed in {seconds:.0f} s", file=sys.stderr)
        with Store(partial) as store:
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        partial.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache" / "api")
    args = parser.parse_args()
    built = cached_store(args.patients, args.days, args.seed, args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "api.sqlite"
        shutil.copy(built, db)
        cfg = load_config(env={})
        cfg = replace(
            cfg,
            store=replace(cfg.store, path=db),
            assess=replace(cfg.assess, model_dir=Path(tmp) / "models"),
        )
        with Store(db) as store:
            end = float(store.conn.execute("SELECT max(t) FROM readings").fetchone()[0])
            patients = [r[0] for r in store.conn.execute("SELECT patient_id FROM patients")]
            tokens = {}
            for role, name, mine in (
                (Role.CARE_TEAM, "bench-care", frozenset()),
                (Role.PATIENT, "bench-patient", frozenset(patients[:1])),
                (Role.ENGINEER, "bench-engineer", frozenset()),
            ):
                users.add(store, name, role, PASSWORD, end, mine, role is Role.CARE_TEAM)
                tokens[role] = users.issue(store, name, users.Kind.TOKEN, 86400.0, time.time())
        server = ApiServer(create_app(cfg, ManualClock(end + 60.0)), "127.0.0.1", 0)
        server.start()
        figures: dict[str, dict[str, float]] = {}
        try:
            clients = {
                role: httpx.Client(
                    base_url=server.url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
                for role, token in tokens.items()
            }
            for name, (role, path) in ENDPOINTS.items():
                took = []
                for i in range(args.warmup + args.requests):
                    url = path.replace("{p}", patients[i % len(patients)])
                    started = time.perf_counter()
                    r = clients[role].get(url)
                    elapsed = time.perf_counter() - started
                    if r.status_code != 200:
                        raise SystemExit(f"{name}: {url} answered {r.status_code}: {r.text[:200]}")
                    if i >= args.warmup:
                        took.append(elapsed * 1000.0)
                p50, p99 = np.percentile(took, [50, 99])
                figures[name] = {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}
                print(f"{name:18s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms", file=sys.stderr)
            for c in clients.values():
                c.close()
        finally:
            server.stop()
    worst = max(figures, key=lambda n: figures[n]["p99_ms"])
    print(
        json.dumps(
            {
                "patients": args.patients,
                "days": args.days,
                "seed": args.seed,
                "requests": args.requests,
                "endpoints": figures,
                "worst_p99_ms": figures[worst]["p99_ms"],
                "worst_endpoint": worst,
                "goal_p99_ms": GOAL_P99_MS,
                "goal_met": figures[worst]["p99_ms"] < GOAL_P99_MS,
            }
        )
    )


if __name__ == "__main__":
    main()
