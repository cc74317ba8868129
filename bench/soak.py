"""Soak: the reference home for days of event time, with faults sprinkled in, while the
gateway's memory and queues are watched.

The rig of bench/faults.py (a private mosquitto, the gateway in a process of its own with
FHIR sync to the FHIR test server and a webhook whose receiver fails a fifth of the posts,
on an accelerated clock; firmware_sim's home publishing at QoS 1) runs the reference home
(``--patients`` patients, each with a wrist wearable, a BP cuff and a scale, and a CGM
when diabetic) for
``--days`` at ``--speed`` times real time. Sprinkled in: the broker restarted every
``--restart-every-s`` wall seconds, and one garbage message per 500 (quarantined).

Every ``--sample-s`` wall seconds: the gateway process's RSS (/proc VmRSS) and its queues:
the twin's lag (readings not yet applied), what FHIR sync and the two alarm channels have
not sent yet, the quarantine's messages. RSS "start" is the first sample after the
first tenth of the run (the model loaded, caches and SQLite's page cache filled), "end"
the last before the final settle; growth = end / start - 1 (goal < 10%). Queues are
reported at the same two moments and at their largest. Then everything is reconciled as
in bench/faults.py (lost, duplicated, FHIR, webhook, integrity, worker deaths).

    .venv/bin/python bench/soak.py [--patients 10] [--days 7] [--speed 1440]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.faults import (  # noqa: E402
    START,
    WEBHOOK_FAILING_SHARE,
    GatewayProcess,
    Run,
    config_for,
    finish,
    provision,
    stream,
)
from bench.footprint import status_kib  # noqa: E402
from edge_twin.store import Store  # noqa: E402

GARBAGE_EVERY = 500


def queues(store: Store) -> dict[str, int]:
    """What waits: the twin's lag, each log consumer's backlog, the quarantine."""
    from edge_twin.store import consumers

    newest = store.conn.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()[0]
    twin = store.conn.execute("SELECT position FROM consumers WHERE name = 'twin'").fetchone()
    out = {"twin_lag": int(newest - (twin[0] if twin else 0))}
    for c in consumers.statuses(store.conn):
        if c.name != "twin":
            out[c.name] = int(c.backlog)
    out["quarantine"] = int(store.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--speed", type=float, default=1440.0)
    parser.add_argument("--restart-every-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=29)
    args = parser.parse_args()

    from edge_twin.broker import PrivateBroker
    from edge_twin_demo.fhir_server import FhirTestServer
    from firmware_sim.home import Home
    from firmware_sim.messages import Message
    from tests.misbehaving_endpoint import MisbehavingEndpoint

    rng = random.Random(args.seed)
    home = Home(args.patients, START, args.days * 24.0, args.seed)
    messages: list[Message] = []
    garbage = 0
    for k, m in enumerate(home.messages()):
        messages.append(m)
        if k % GARBAGE_EVERY == GARBAGE_EVERY - 1:
            messages.append(Message(m.t, m.device_id, m.topic, b"\x00garbage %d" % k))
            garbage += 1
    wall_s = args.days * 86400.0 / args.speed
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        PrivateBroker() as broker,
        FhirTestServer() as server,
    ):
        work = Path(tmp)
        endpoint = MisbehavingEndpoint()
        endpoint.script(
            ["500" if rng.random() < WEBHOOK_FAILING_SHARE else "ok" for _ in range(100_000)]
        )
        cfg, config_file = config_for(broker, work, server.url, endpoint.url, args.speed)
        with Store(cfg.store.path) as store:
            provision(store, home, upstream=True)
        wall0 = time.monotonic() + 3.0
        gateway = GatewayProcess(config_file, args.speed, wall0, work / "gateway.log")
        run = Run("soak", home, messages, args.speed, wall0, gateway, cfg)
        samples: list[tuple[float, int, dict[str, int]]] = []
        try:
            gateway.start()
            assert gateway.proc is not None
            pid = gateway.proc.pid
            print(
                f"soak: {len(messages)} messages, {args.patients} patients, {args.days:g} days"
                f" at {args.speed:g}x ({wall_s / 60:.0f} min) ...",
                file=sys.stderr,
            )
            done = stream(run, broker)
            restarts = 0
            next_restart = time.monotonic() + args.restart_every_s
            with Store(cfg.store.path) as store:
                while not done.wait(args.sample_s):
                    samples.append((time.monotonic(), status_kib(pid, "VmRSS"), queues(store)))
                    if time.monotonic() >= next_restart:
                        broker.stop()
                        time.sleep(rng.uniform(0.5, 3.0))
                        broker.start()
                        restarts += 1
                        next_restart = time.monotonic() + args.restart_every_s
                    if len(samples) % 12 == 0:
                        rss, q = samples[-1][1], samples[-1][2]
                        print(
                            f"  {time.monotonic() - started:5.0f} s: RSS {rss / 1024:.0f} MB,"
                            f" queues {q}",
                            file=sys.stderr,
                        )
            run.results = finish(run, work, server, endpoint)
        finally:
            gateway.ensure_stopped()
            endpoint.close()
    if len(samples) < 2:
        raise SystemExit(f"the run was shorter than two samples of {args.sample_s:g} s")
    span = samples[-1][0] - samples[0][0]
    warm = [s for s in samples if s[0] - samples[0][0] >= 0.1 * span]
    first, last = warm[0], warm[-1]
    names = sorted({k for _, _, q in samples for k in q})
    results: dict[str, Any] = {
        "patients": args.patients,
        "devices": len(home.devices),
        "days": args.days,
        "speed": args.speed,
        "messages": len(messages),
        "garbage_messages": garbage,
        "broker_restarts": restarts,
        "wall_s": round(time.monotonic() - started),
        "rss_start_mb": round(first[1] / 1024, 1),
        "rss_end_mb": round(last[1] / 1024, 1),
        "rss_max_mb": round(max(s[1] for s in samples) / 1024, 1),
        "rss_growth": round(last[1] / first[1] - 1.0, 4),
        "goal_rss_growth": 0.10,
        "queues_start": {k: first[2].get(k, 0) for k in names},
        "queues_end": {k: last[2].get(k, 0) for k in names},
        "queues_max": {k: max(q.get(k, 0) for _, _, q in samples) for k in names},
        **{k: v for k, v in run.results.items() if k not in ("fault", "speed")},
    }
    print(
        f"soak: RSS {results['rss_start_mb']} -> {results['rss_end_mb']} MB"
        f" ({results['rss_growth']:+.1%}); {results['lost']} lost, {results['duplicated']}"
        f" duplicated of {results['readings_expected']}; FHIR {results['fhir_lost']} lost;"
        f" worker deaths {results['worker_deaths']}",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
