"""FHIR catch-up after an outage: a home's backlog through the gateway's sync, beside a
plain poster of the same bundles, against the same real FHIR server in the same run.

The backlog: firmware_sim's home of ``--patients`` patients over ``--hours`` hours (CGM,
wrist, cuff, scale), lived through the real ingest path into SQLite (cached under
var/cache/sync), every patient consenting, nothing sent yet: as after ``--hours`` offline.

1. gateway: ``FhirSync`` drains it (sync/worker.py, the code the gateway's thread runs:
   reading the logs, mapping, bundles of ``sync.batch_max``, positions committed) into a
   fresh server (tools/fhir-server: Medplum's router, validating every resource). Timed
   from the first read to the last position committed; the bundles it sent are kept.
2. raw: the server is reset and the same bundles are POSTed by a bare HTTP client, back
   to back: what the server can take.

``gateway_rps`` and ``raw_rps`` count the resources the gateway meant to send (support
entries for Patient and Device are in both runs' bundles but not counted), medians of
``--repeat`` runs of each, alternated; ``ratio`` = the median of the runs' gateway / raw
(goal >= 0.7), ``ratio_min`` the worst. ``duplicates_on_server``: identifiers held more than once
after the gateway's run and a second full resend (a crash before any position moved).

    .venv/bin/python bench/sync.py [--patients 10] [--hours 72] [--seed 41] [--batch 100]
        [--repeat 3]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from edge_twin.clock import ManualClock
from edge_twin.config import SyncSection, load_config
from edge_twin.ingest import RawMessage, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, devices, upstream
from edge_twin.sync import FhirClient, FhirSync
from edge_twin_demo.fhir_server import FhirTestServer
from firmware_sim.cohort import DEFAULT_START
from firmware_sim.home import Home

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("Observation", "CommunicationRequest", "Communication", "Flag", "RiskAssessment")


def backlog(patients: int, hours: float, seed: int, cache: Path) -> Path:
    """The home's store after ``hours`` with nothing synced (built once, then cached)."""
    db = cache / f"home-p{patients}-h{hours:g}-s{seed}.sqlite"
    if db.exists():
        return db
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    home = Home(patients, DEFAULT_START, hours, seed=seed)
    tmp = db.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    cfg = load_config(env={})
    cfg = replace(
        cfg,
        store=replace(cfg.store, path=tmp),
        assess=replace(cfg.assess, model_dir=cache / "models"),
    )
    with Store(tmp, "NORMAL") as store:
        for d in home.devices:
            devices.provision(store, d.device_id, d.patient_id, d.device_type, DEFAULT_START)
        for pid in devices.patient_ids(store):
            upstream.set_consent(store, pid, True, DEFAULT_START, "bench")
        clock = ManualClock(DEFAULT_START)
        messages = sorted(home.messages(), key=lambda m: m.t)
        capture = [RawMessage(m.topic, m.payload, m.t) for m in messages]
        replay(Pipeline(store, cfg, clock), capture, clock)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tmp.rename(db)
    print(f"backlog built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return db


class RecordingClient(FhirClient):
    """The gateway's client, keeping each bundle it sent for the raw run."""

    def __init__(self, cfg: SyncSection) -> None:
        super().__init__(cfg)
        self.bundles: list[list[dict[str, Any]]] = []

    def transaction(self, entries: Any) -> list[dict[str, Any]]:
        answered = super().transaction(entries)
        self.bundles.append(list(entries))
        return answered


def gateway_run(db: Path, url: str, cfg: SyncSection) -> tuple[float, int, RecordingClient]:
    client = RecordingClient(cfg)
    later = time.time() + 10 * 86400  # every hour's summary is due
    with Store(db) as store, FhirSync(store, client, "gw-bench", cfg, now=lambda: later) as sync:
        started = time.monotonic()
        while sync.step():
            pass
        seconds = time.monotonic() - started
    client.close()
    if sync.parked:
        raise SystemExit(f"the server refused {sync.parked} resources: see sync_parked")
    return seconds, sync.accepted, client


def raw_run(url: str, bundles: list[list[dict[str, Any]]]) -> float:
    bodies = [
        json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": b}) for b in bundles
    ]
    headers = {"Content-Type": "application/fhir+json"}
    with httpx.Client(timeout=60) as http:
        started = time.monotonic()
        for body in bodies:
            http.post(url, content=body, headers=headers).raise_for_status()
        return time.monotonic() - started


def duplicates(server: FhirTestServer) -> int:
    held = Counter((kind, r["identifier"][0]["value"]) for kind in KINDS for r in server.all(kind))
    return sum(n - 1 for n in held.values() if n > 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--hours", type=float, default=72.0)
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--batch", type=int, default=100, help="sync.batch_max")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache" / "sync")
    args = parser.parse_args()
    source = backlog(args.patients, args.hours, args.seed, args.cache)
    runs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, FhirTestServer() as server:
        cfg = replace(load_config(env={}).sync, url=server.url, batch_max=args.batch)
        for n in range(args.repeat):
            server.reset()
            db = Path(tmp) / f"gateway-{n}.sqlite"
            shutil.copyfile(source, db)
            seconds, sent, client = gateway_run(db, server.url, cfg)
            if n == 0:
                held = server.counts()
                # A crash before any position moved: everything is sent again.
                with Store(db) as store:
                    store.conn.execute("UPDATE consumers SET position = 0 WHERE name LIKE 'fhir-%'")
                gateway_run(db, server.url, cfg)
                dupes = duplicates(server)
            server.reset()
            raw_seconds = raw_run(server.url, client.bundles)
            runs.append((seconds, raw_seconds))
            print(
                f"run {n + 1}: gateway {sent} resources in {seconds:.2f} s"
                f" ({sent / seconds:,.0f}/s), raw poster {raw_seconds:.2f} s"
                f" ({sent / raw_seconds:,.0f}/s): ratio {raw_seconds / seconds:.3f}",
                file=sys.stderr,
            )
    seconds = statistics.median(r[0] for r in runs)
    raw_seconds = statistics.median(r[1] for r in runs)
    ratios = [raw / gw for gw, raw in runs]
    gateway_rps = sent / seconds
    raw_rps = sent / raw_seconds
    result = {
        "patients": args.patients,
        "hours": args.hours,
        "seed": args.seed,
        "batch": args.batch,
        "bundles": len(client.bundles),
        "resources_sent": sent,
        "gateway_s": round(seconds, 2),
        "raw_s": round(raw_seconds, 2),
        "gateway_rps": round(gateway_rps),
        "raw_rps": round(raw_rps),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "repeat": args.repeat,
        "resources_on_server": held,
        "duplicates_on_server": dupes,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
