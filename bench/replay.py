"""Replay speed: a recorded home through the live path, one message per commit, the
gateway clock at each arrival (edge_twin/ingest/replay.py), as ``edge-twin replay`` runs.

The reference home is firmware_sim's: ``--patients`` patients (its default cohort mix:
heart failure, diabetes, both; CGM, wrist, cuff, scale) over ``--days`` days at the
simulator's rates and delivery faults, written as a cohort (cached under var/cache/replay)
and replayed into a fresh SQLite file. Timed from the first message read to the last
message settled (twin, risk, alarms), cohort generation excluded.

That replay raises the alarms live ingest raised, at the same times, is tested against a
live gateway on a real broker (tests/test_replay.py); this measures its speed.

    .venv/bin/python bench/replay.py [--patients 10] [--days 90] [--seed 31]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edge_twin.clock import ManualClock
from edge_twin.config import load_config
from edge_twin.ingest.replay import provision_from, read_capture, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store
from firmware_sim.cohort import DEFAULT_START, write_cohort
from firmware_sim.home import Home

ROOT = Path(__file__).resolve().parent.parent


def cohort(patients: int, days: float, seed: int, cache: Path) -> Path:
    out = cache / f"home-p{patients}-d{days:g}-s{seed}"
    if not (out / "cohort.json").exists():
        started = time.monotonic()
        write_cohort(Home(patients, DEFAULT_START, days * 24, seed=seed), out, jobs=2)
        print(f"cohort written in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return out


def replay_into(db: Path, source: Path) -> tuple[float, int]:
    """Replay ``source`` into ``db``; returns (seconds, readings stored)."""
    cfg = load_config(env={})
    cfg = replace(
        cfg,
        store=replace(cfg.store, path=db),
        assess=replace(cfg.assess, model_dir=db.parent / "models"),
    )
    with Store(db, "NORMAL") as store:
        provision_from(source / "devices.jsonl", store, DEFAULT_START)
        clock = ManualClock(DEFAULT_START)
        started = time.monotonic()
        pipeline = Pipeline(store, cfg, clock)
        last = [0]

        def progress(done: object) -> None:
            n = getattr(done, "messages", 0)
            if n - last[0] >= 50_000:
                last[0] = n
                print(f"replayed {n} messages", file=sys.stderr)

        summary = replay(pipeline, read_capture(source), clock, progress, 10_000)
        return time.monotonic() - started, summary.readings_new


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache" / "replay")
    args = parser.parse_args()
    source = cohort(args.patients, args.days, args.seed, args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        seconds, stored = replay_into(Path(tmp) / "replay.sqlite", source)
    result = {
        "patients": args.patients,
        "days": args.days,
        "seed": args.seed,
        "readings": stored,
        "seconds": round(seconds, 1),
        "readings_per_s": round(stored / seconds),
        "reference_home_s": round(seconds * (10 * 90) / (args.patients * args.days), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
