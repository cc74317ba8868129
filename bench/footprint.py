"""Footprint of a gateway serving the reference home: resident memory and CPU.

The gateway (ingest, twin, risk, alarms, delivery over MQTT, the API) runs in a process of
its own, as ``edge-twin run`` does, against a private mosquitto; firmware_sim's reference
home (``--patients`` patients of the default cohort mix, each with a CGM, a wrist
wearable, a BP cuff and a scale, at the simulator's rates) publishes from this process.

Two runs, each in a fresh gateway process on a fresh store:

1. idle: the gateway at real-time speed with no traffic for ``--idle-s`` wall seconds
   (its own timers: technical checks, escalation, the watchdog beat);
2. load: ``--hours`` of the home published paced at ``--speed`` times real time, the
   gateway's clock running at the same speed (event time: the twin, alarms and checks
   see an hour pass in 3600/speed wall seconds), until everything is settled.

CPU is the gateway process's user + system time (/proc). At real-time rates the home
costs the idle share plus ``load CPU seconds / simulated seconds`` of one core (on the
high side: the load run's CPU includes its own timers, run ``--speed`` times as often).
RSS is the process's peak (VmHWM). Goals (issue #15): <= 200 MB RSS and <= 5% of one
core. ``--python`` runs the gateway with an installed release's interpreter (runtime
dependencies only: a development venv also has pandas, which sqlite-utils then loads).

    .venv/bin/python bench/footprint.py [--patients 10] [--hours 6] [--speed 120]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The gateway process imports only what the gateway does (its RSS is the figure): the
# simulator and the broker are imported by the parent alone.
from edge_twin.clock import AcceleratedClock  # noqa: E402
from edge_twin.config import Config, load_config  # noqa: E402
from edge_twin.store import Store, readings  # noqa: E402

if TYPE_CHECKING:
    from edge_twin.broker import PrivateBroker

START = 1_790_000_000.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def child(config_file: str, start: float, speed: float, wall0: float) -> None:
    """The gateway process: runs until its standard input closes."""
    from edge_twin.gateway import Gateway

    cfg = load_config(Path(config_file))
    with Gateway(cfg, AcceleratedClock(start, speed, wall0=wall0)):
        print("ready", flush=True)
        sys.stdin.read()


def settled_count(db: Path, quiet_s: float = 3.0) -> int:
    """Readings stored once the count has not moved for ``quiet_s`` (the twin, risk and
    alarms run behind each commit, within that)."""
    with Store(db) as store:
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet_s:
            now = readings.count(store)
            if now != last:
                last, since = now, time.monotonic()
            time.sleep(0.2)
        return last


def config_for(broker: PrivateBroker, work: Path, name: str) -> tuple[Config, Path]:
    cfg = load_config(env={})
    cfg = replace(
        cfg,
        mqtt=replace(cfg.mqtt, host=broker.host, port=broker.port, client_id=f"gw-{name}"),
        store=replace(cfg.store, path=work / f"{name}.sqlite"),
        assess=replace(cfg.assess, model_dir=work / "models"),
        api=replace(cfg.api, port=0),
    )
    path = work / f"{name}.toml"
    path.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "gw-{name}"\n'
        f'[store]\npath = "{cfg.store.path}"\n[assess]\nmodel_dir = "{work / "models"}"\n'
        "[api]\nport = 0\n"
    )
    return cfg, path


def start_gateway(
    python: str, config_file: Path, speed: float, wall0: float
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [python, __file__, "--child", str(config_file), str(START), str(speed), str(wall0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the gateway process did not start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--speed", type=float, default=120.0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="The interpreter of the gateway process: an installed gateway's (e.g."
        " /opt/edge-twin/current/bin/python, runtime dependencies only) for its footprint;"
        " by default this one (a development venv also loads what the tests need).",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]), float(args.child[2]), float(args.child[3]))
        return

    from edge_twin.broker import PrivateBroker
    from edge_twin.store import devices
    from firmware_sim.home import Home
    from firmware_sim.publisher import HomePublisher, paced_by

    home = Home(args.patients, START, args.hours, args.seed)
    messages = home.messages()
    with tempfile.TemporaryDirectory() as tmp, PrivateBroker() as broker:
        work = Path(tmp)
        results: dict[str, object] = {}

        # 1. idle, at real-time speed
        cfg, config_file = config_for(broker, work, "idle")
        with Store(cfg.store.path) as store:
            for d in home.devices:
                devices.provision(store, d.device_id, d.patient_id, d.device_type, START)
        proc = start_gateway(args.python, config_file, 1.0, time.monotonic())
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        print(f"idle: {args.idle_s:.0f} s ...", file=sys.stderr)
        time.sleep(args.idle_s)
        idle_share = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        idle_rss = status_kib(proc.pid, "VmRSS")
        stop(proc)

        # 2. the home at --speed
        cfg, config_file = config_for(broker, work, "load")
        with Store(cfg.store.path) as store:
            for d in home.devices:
                devices.provision(store, d.device_id, d.patient_id, d.device_type, START)
        wall0 = time.monotonic() + 2.0  # simulated time starts once both are up
        proc = start_gateway(args.python, config_file, args.speed, wall0)
        clock = AcceleratedClock(START, args.speed, wall0=wall0)
        cpu0 = cpu_seconds(proc.pid)
        print(
            f"load: {len(messages)} messages over {args.hours:g} h at {args.speed:g}x ...",
            file=sys.stderr,
        )
        with HomePublisher(broker.host, broker.port, home.devices) as pub:
            pub.publish(messages, pace=paced_by(clock))
        stored = settled_count(cfg.store.path)
        simulated = max(clock.now() - START, args.hours * 3600.0)
        load_cpu = cpu_seconds(proc.pid) - cpu0
        peak_rss = status_kib(proc.pid, "VmHWM")
        stop(proc)

        results = {
            "python": args.python,
            "patients": args.patients,
            "devices": len(home.devices),
            "messages": len(messages),
            "readings_stored": stored,
            "hours": args.hours,
            "speed": args.speed,
            "idle_cpu_share_one_core": round(idle_share, 4),
            "idle_rss_mb": round(idle_rss / 1024, 1),
            "load_cpu_s": round(load_cpu, 2),
            "simulated_s": round(simulated),
            "load_cpu_per_simulated_s": round(load_cpu / simulated, 5),
            # Living it at real time: the idle gateway plus the home's work at its rate.
            "realtime_cpu_share_one_core": round(idle_share + load_cpu / simulated, 4),
            "peak_rss_mb": round(peak_rss / 1024, 1),
            "goal_rss_mb": 200,
            "goal_cpu_share": 0.05,
        }
    print(
        f"idle: {idle_share:.2%} of a core, {idle_rss / 1024:.0f} MB; the home at real time:"
        f" {idle_share + load_cpu / simulated:.2%} of a core (idle + the home's work at its"
        f" rate), peak {peak_rss / 1024:.0f} MB",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
