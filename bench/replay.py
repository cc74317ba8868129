"""Replay speed: a recorded home through the live path, one message per commit, the
gateway clock at each arrival (edge_twin/ingest/replay.py), as ``edge-twin replay`` runs.

The reference home is firmware_sim's: ``--patients`` patients (its default cohort mix:
heart failure, diabetes, both; CGM, wrist, cuff, scale) over ``--days`` days at the
simulator's rates and delivery faults, written as a cohort (cached under var/cache/replay)
and replayed into a fresh SQLite file. Timed from the first message read to the last
message settled (twin, risk, alarms), cohort generation excluded.

``alarms_equal_to_live``: a smaller home (``--live-patients``, ``--live-hours``) is lived
by a gateway on a private mosquitto, its messages published one at a time with the clock
at each one's arrival, and the same messages are replayed into another file: true when
the readings, the twin's state and the clinical alarms with their audit events are the
same (tests/test_replay.py runs the same check).

    .venv/bin/python bench/replay.py [--patients 10] [--days 90] [--seed 31]
        [--live-patients 2] [--live-hours 24]
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

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config, load_config
from edge_twin.gateway import Gateway
from edge_twin.ingest import RawMessage, provision_from, read_capture, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, devices
from firmware_sim.cohort import DEFAULT_START, write_cohort
from firmware_sim.home import Home
from firmware_sim.physiology.profile import CohortMix
from firmware_sim.publisher import HomePublisher

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


History = tuple[list[tuple[object, ...]], ...]


def clinical_history(db: Path) -> History:
    """What the twin and the clinical alarms made of the data, without row ids: readings,
    filter states, clinical alarms, their audit events (escalations aside)."""
    with Store(db) as store:
        q = store.conn.execute
        stored = q(
            "SELECT device_id, signal, t, value, seq, received_at, flags FROM readings"
            " ORDER BY device_id, signal, t"
        ).fetchall()
        twin = q("SELECT * FROM twin_state ORDER BY patient_id, signal").fetchall()
        raised = q(
            "SELECT patient_id, alarm_type, priority, state, raised_at, updated_at, reason,"
            ' "values", evidence, resolved_at FROM alarms WHERE technical = 0'
            " ORDER BY raised_at, patient_id, alarm_type"
        ).fetchall()
        events = q(
            "SELECT a.patient_id, a.alarm_type, e.event, e.at, e.recorded_at, e.actor,"
            " e.reason, e.state FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id"
            # Escalation is idle work on the gateway clock: within a minute in a replay.
            " WHERE a.technical = 0 AND e.event != 'escalated'"
            " ORDER BY e.at, a.patient_id, a.alarm_type, e.id"
        ).fetchall()
    return stored, twin, raised, events


def _provision(db: Path, home: Home, at: float) -> None:
    with Store(db) as store:
        for d in home.devices:
            devices.provision(store, d.device_id, d.patient_id, d.device_type, at)


def live_and_replayed(
    home: Home, workdir: Path, timeout_s: float = 30.0
) -> tuple[History, History]:
    """The home lived by a gateway on a private broker (one message at a time, the clock at
    each arrival, each settled before the next), then replayed into another file."""
    messages = sorted(home.messages(), key=lambda m: m.t)
    start = messages[0].t
    with PrivateBroker(data_dir=workdir / "mosquitto") as broker:
        cfg = load_config(env={})
        cfg = replace(
            cfg,
            store=replace(cfg.store, path=workdir / "live.sqlite"),
            api=replace(cfg.api, port=0),
            assess=replace(cfg.assess, model_dir=workdir / "models"),
            mqtt=replace(cfg.mqtt, host=broker.host, port=broker.port, client_id="gw-live"),
        )
        _provision(cfg.store.path, home, start)
        clock = ManualClock(start)
        with (
            Gateway(cfg, clock, serve_api=False) as gw,
            HomePublisher(broker.host, broker.port, home.devices) as pub,
        ):
            pipeline = gw.pipeline
            assert pipeline is not None
            for n, m in enumerate(messages, start=1):
                clock.advance_to(m.t)
                pub.send(m)
                pub.flush()
                deadline = time.monotonic() + timeout_s
                while not pipeline.settled(n):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"message {n} not settled in {timeout_s} s")
                    time.sleep(0.002)
    replayed = workdir / "replayed.sqlite"
    _provision(replayed, home, start)
    with Store(replayed, "NORMAL") as store:
        replay_clock = ManualClock(start)
        capture = [RawMessage(m.topic, m.payload, m.t) for m in messages]
        replay(Pipeline(store, _config(cfg, replayed), replay_clock), capture, replay_clock)
    return clinical_history(cfg.store.path), clinical_history(replayed)


def _config(cfg: Config, db: Path) -> Config:
    return replace(cfg, store=replace(cfg.store, path=db))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache" / "replay")
    parser.add_argument("--live-patients", type=int, default=2)
    parser.add_argument("--live-hours", type=float, default=24.0)
    args = parser.parse_args()
    source = cohort(args.patients, args.days, args.seed, args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        seconds, stored = replay_into(Path(tmp) / "replay.sqlite", source)
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(
            args.live_patients,
            DEFAULT_START,
            args.live_hours,
            seed=args.seed,
            mix=CohortMix(heart_failure=0.0, diabetes=1.0),
            kinds=("cgm",),
        )
        live, replayed = live_and_replayed(home, Path(tmp))
    print(f"live-checked {len(live[0])} readings, {len(live[2])} clinical alarms", file=sys.stderr)
    result = {
        "patients": args.patients,
        "days": args.days,
        "seed": args.seed,
        "readings": stored,
        "seconds": round(seconds, 1),
        "readings_per_s": round(stored / seconds),
        "reference_home_s": round(seconds * (10 * 90) / (args.patients * args.days), 1),
        "live_checked_alarms": len(live[2]),
        "alarms_equal_to_live": live == replayed,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
