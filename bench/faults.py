"""Fault trials: the gateway killed with SIGKILL at random moments while a home streams.

A private mosquitto; a gateway process (the real Gateway: ingest, the twin, risk, alarms
and their delivery over MQTT, the API) on an accelerated clock, so that hours of a home
pass in seconds and the twin, risk and alarms all work while it is killed; firmware_sim's
home publishes at QoS 1 paced by the same clock. ``--trials`` times: start the gateway,
let it run a random 0.3-3 s (seeded), ``kill -9``; then start it once more and let it
settle. Then reconcile:

- readings: the set (device, signal, device time, value) in the store against what the
  same messages give when committed once, in one process, with no fault: lost (acknowledged
  by the broker to the devices and not stored), extra, duplicated (impossible by the
  store's key; checked anyway); alarm events recorded twice (the same alarm, event and
  time: an alarm raised again after a restart);
- the twin caught up (its log position is the newest reading), ``PRAGMA integrity_check``;
- worker deaths: a gateway process that ended by itself (any exit but our SIGKILL and the
  final clean stop), or "worker ... died" in its log.

    .venv/bin/python bench/faults.py [--trials 50] [--patients 3] [--hours 8] [--seed 17]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_twin.clock import AcceleratedClock  # noqa: E402
from edge_twin.config import Config, load_config  # noqa: E402
from edge_twin.store import Store  # noqa: E402

if TYPE_CHECKING:
    from firmware_sim.home import Home

START = 1_790_000_000.0
# Wall seconds of streaming per trial: the home's hours are spread over the trials.
WALL_PER_TRIAL_S = 3.5


def child(config_file: str, start: float, speed: float, wall0: float) -> None:
    """The gateway process: runs until its standard input closes; a dead worker ends it
    with status 70, as ``edge-twin run`` does."""
    from edge_twin.gateway import Gateway

    cfg = load_config(Path(config_file))

    def died(worker: str, why: str) -> None:
        print(f"worker {worker} died: {why}", file=sys.stderr, flush=True)
        os._exit(70)

    with Gateway(cfg, AcceleratedClock(start, speed, wall0=wall0), on_death=died):
        print("ready", flush=True)
        sys.stdin.read()


def config_for(broker_host: str, broker_port: int, work: Path) -> tuple[Config, Path]:
    path = work / "gateway.toml"
    path.write_text(
        f'[mqtt]\nhost = "{broker_host}"\nport = {broker_port}\nclient_id = "gw-faults"\n'
        f'[store]\npath = "{work / "gateway.sqlite"}"\n[api]\nport = 0\n'
    )
    return load_config(path), path


class GatewayProcess:
    def __init__(self, config_file: Path, speed: float, wall0: float, log: Path) -> None:
        self._args = [sys.executable, __file__, "--child", str(config_file)]
        self._args += [str(START), str(speed), str(wall0)]
        self._log = log
        self.proc: subprocess.Popen[str] | None = None
        self.self_ended: list[int] = []  # exit codes of processes that ended on their own

    def start(self) -> None:
        with self._log.open("a") as log:
            self.proc = subprocess.Popen(
                self._args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the gateway did not start: {self._log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            self.self_ended.append(self.proc.returncode)
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(60)


def reference(cfg: Config, home: Home, work: Path) -> set[tuple[object, ...]]:
    """The readings the home's messages give committed once, with no fault."""
    from edge_twin.ingest import IngestWriter, RawMessage

    ref_cfg = replace(cfg, store=replace(cfg.store, path=work / "reference.sqlite"))
    with Store(ref_cfg.store.path) as store:
        provision(store, home)
        writer = IngestWriter(store, ref_cfg)
        writer.commit([RawMessage(m.topic, m.payload, m.t) for m in home.messages()])
        return stored(store)


def stored(store: Store) -> set[tuple[object, ...]]:
    rows = store.conn.execute("SELECT device_id, signal, t, value FROM readings")
    return {tuple(r) for r in rows}


def provision(store: Store, home: Home) -> None:
    from edge_twin.store import devices

    for d in home.devices:
        devices.provision(store, d.device_id, d.patient_id, d.device_type, START)


def settle(db: Path, quiet_s: float = 4.0, limit_s: float = 120.0) -> None:
    """Until the twin has applied every reading and nothing moved for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    last, since = None, time.monotonic()
    with Store(db) as store:
        while time.monotonic() < deadline:
            row = store.conn.execute(
                "SELECT (SELECT count(*) FROM readings), (SELECT coalesce(max(id), 0) FROM"
                " readings), (SELECT position FROM consumers WHERE name = 'twin')"
            ).fetchone()
            if row != last:
                last, since = row, time.monotonic()
            elif row[1] == row[2] and time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]), float(args.child[2]), float(args.child[3]))
        return

    from edge_twin.broker import PrivateBroker
    from firmware_sim.home import Home
    from firmware_sim.publisher import HomePublisher, paced_by

    home = Home(args.patients, START, args.hours, args.seed)
    messages = home.messages()
    rng = random.Random(args.seed)
    stream_s = args.trials * WALL_PER_TRIAL_S + 5.0
    speed = args.hours * 3600.0 / stream_s
    with tempfile.TemporaryDirectory() as tmp, PrivateBroker() as broker:
        work = Path(tmp)
        cfg, config_file = config_for(broker.host, broker.port, work)
        expected = reference(cfg, home, work)
        with Store(cfg.store.path) as store:
            provision(store, home)
        log = work / "gateway.log"
        wall0 = time.monotonic() + 3.0
        gateway = GatewayProcess(config_file, speed, wall0, log)
        clock = AcceleratedClock(START, speed, wall0=wall0)
        gateway.start()
        published = threading.Event()

        def publish() -> None:
            with HomePublisher(broker.host, broker.port, home.devices) as pub:
                pub.publish(messages, pace=paced_by(clock))
            published.set()

        sender = threading.Thread(target=publish, daemon=True)
        sender.start()
        print(
            f"{len(messages)} messages over {args.hours:g} h at {speed:.0f}x;"
            f" {args.trials} kills ...",
            file=sys.stderr,
        )
        kills = []
        for trial in range(args.trials):
            if trial:
                gateway.start()
            up = rng.uniform(0.3, 3.0)
            time.sleep(up)
            gateway.kill9()
            kills.append(round(clock.now() - START))
        gateway.start()
        published.wait(stream_s * 3)
        settle(cfg.store.path)
        final = gateway.stop()
        with Store(cfg.store.path) as store:
            got = stored(store)
            rows, distinct = store.conn.execute(
                "SELECT count(*), count(DISTINCT device_id || '|' || signal || '|' || t)"
                " FROM readings"
            ).fetchone()
            integrity = store.conn.execute("PRAGMA integrity_check").fetchone()[0]
            twin = store.conn.execute(
                "SELECT (SELECT position FROM consumers WHERE name = 'twin'),"
                " (SELECT max(id) FROM readings)"
            ).fetchone()
            risks = store.conn.execute("SELECT count(*) FROM risk_assessments").fetchone()[0]
            alarm_events, alarm_events_distinct = store.conn.execute(
                "SELECT count(*), count(DISTINCT alarm_id || '|' || event || '|' || at)"
                " FROM alarm_events"
            ).fetchone()
        deaths = len(gateway.self_ended) + (final != 0) + log.read_text().count("died")
        results = {
            "trials": args.trials,
            "messages": len(messages),
            "readings_expected": len(expected),
            "readings_stored": rows,
            "lost": len(expected - got),
            "extra": len(got - expected),
            # Readings cannot repeat (the store's UNIQUE key; checked anyway); alarm
            # events could, if an alarm were raised again after a restart.
            "duplicated": rows - distinct,
            "alarm_events_duplicated": alarm_events - alarm_events_distinct,
            "twin_caught_up": twin[0] == twin[1],
            "integrity_check": integrity,
            "worker_deaths": deaths,
            "risk_assessments": risks,
            "alarm_events": alarm_events,
            "speed": round(speed),
            "kills_at_simulated_s": kills[:10],
        }
    print(
        f"kill -9 x{args.trials}: {results['lost']} lost, {results['duplicated']} duplicated,"
        f" {results['extra']} extra of {len(expected)} readings; twin caught up:"
        f" {results['twin_caught_up']}; integrity {integrity}; worker deaths {deaths}",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
