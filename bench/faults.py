"""Fault trials on real parts: the gateway killed, the broker restarted, a device flooding,
while a home streams; then the home's messages, the gateway's store, the FHIR server and
the webhook's receiver reconciled.

Every fault runs a private mosquitto, a gateway process (the real Gateway: ingest, the
twin, risk, alarms delivered over MQTT and to a webhook, FHIR sync, the API) on an
accelerated clock, so that hours of a home pass in seconds and every stage works while the
fault is played; firmware_sim's home publishes at QoS 1 paced by the same clock. The
upstream is the FHIR test server (tools/fhir-server: Medplum's router); the webhook's
receiver is a loopback endpoint that answers 500 to a seeded fifth of the posts.

``--fault``:

- ``kill``: ``--trials`` times, start the gateway, let it run a random 0.3-3 s (seeded),
  ``kill -9``; then start it once more and let it settle.
- ``broker``: mosquitto stopped and started again (a fifth of ``--trials`` times, at
  random moments, for 4-6 s and 0.3-2 s in turn) while the gateway runs (the devices,
  like real ones, keep what they could not send).
- ``flood``: one CGM also sends valid readings at 100x its rate (every 3 s of its own
  time instead of 5 min) for an hour of the home's time.
- ``all``: each in turn (``--trials`` kills, a fifth as many broker restarts, the flood).

Reconciled after each:

- readings: the set (device, signal, device time, value) in the store against what the
  same messages give when committed once, in one process, with no fault: lost
  (acknowledged by the broker to the devices and not stored), extra, duplicated
  (impossible by the store's key; checked anyway); alarm events recorded twice (the same
  alarm, event and time: an alarm raised again after a restart);
- FHIR: every stored reading of a device sent one by one has its Observation on the
  server, each hourly summary due by the end is there, nothing else is, and no
  identifier is held twice (the end waits until no hour is due unsent, as it waits for
  every queue: an hour falls due between two of the sync worker's rounds);
- webhook: every alarm event reached the receiver (at least once: it dedupes by the
  ``X-Edge-Twin-Event`` header; deliveries beyond the first are counted);
- the twin caught up (its log position is the newest reading), ``PRAGMA integrity_check``;
- the expected technical alarm (broker: ``gateway_broker_unreachable``, with
  ``alert.broker_alarm_after_s`` at 3 s; flood: ``device_flooding``), and two open alarms
  of one kind for one patient (an alarm raised again after a restart);
- worker deaths: a gateway process that ended by itself (any exit but our SIGKILL and the
  final clean stop), or "worker ... died" in its log.

    .venv/bin/python bench/faults.py [--fault all] [--trials 50] [--patients 3]
        [--hours 8] [--seed 17]
Last line: one JSON object (``--fault all``: one entry per fault).
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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_twin.clock import AcceleratedClock, Clock  # noqa: E402
from edge_twin.config import Config, load_config  # noqa: E402
from edge_twin.store import Store  # noqa: E402

if TYPE_CHECKING:
    from edge_twin.broker import PrivateBroker
    from edge_twin_demo.fhir_server import FhirTestServer
    from firmware_sim.home import Home
    from firmware_sim.messages import Message
    from tests.misbehaving_endpoint import MisbehavingEndpoint

START = 1_790_000_000.0
# Wall seconds of streaming per kill or restart: the home's hours are spread over them.
WALL_PER_TRIAL_S = 3.5
FLOOD_EVERY_S = 3.0  # a CGM's 5 min at 100x
FLOOD_HOURS = 1.0
WEBHOOK_FAILING_SHARE = 0.2
FAULTS = ("kill", "broker", "flood")


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


def config_for(
    broker: PrivateBroker, work: Path, fhir_url: str, webhook_url: str, speed: float
) -> tuple[Config, Path]:
    """The gateway's configuration. The webhook's retries wait on the wall clock (1 s,
    then doubling): on a clock running ``speed`` times faster that is ``speed`` s of the
    gateway's time, so alarm_delivery_failing waits ``speed`` x 10 s (10 s of wall time,
    as its 2 min default is ~100 first retries). gateway_broker_unreachable is timed on
    the wall clock: 3 s, so that the broker's outages here (1-6 s) raise it."""
    after = min(86_400.0, max(120.0, 10.0 * speed))
    secret = work / "webhook-secret"
    secret.write_text("bench-faults-webhook-secret-0123456789\n")
    path = work / "gateway.toml"
    path.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "gw-faults"\n'
        f'[store]\npath = "{work / "gateway.sqlite"}"\n[api]\nport = 0\n'
        f'[alert]\nwebhook_url = "{webhook_url}"\nwebhook_secret_file = "{secret}"\n'
        f"delivery_alarm_after_s = {after}\nbroker_alarm_after_s = 3\n"
        f'[sync]\nurl = "{fhir_url}"\n'
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
        if self.proc.poll() is not None:
            self.self_ended.append(self.proc.returncode)
            return self.proc.returncode
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(60)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def flood_messages(home: Home) -> list[Message]:
    """The first patient's CGM, for an hour from the home's second hour, also sending a
    valid reading every 3 s of its own time (between its own 5-min readings)."""
    from firmware_sim import wire
    from firmware_sim.messages import Message

    cgm = next(d for d in home.devices if d.device_type == "cgm")
    first = START + 3600.0 + 1.5
    out = []
    for k in range(int(FLOOD_HOURS * 3600.0 / FLOOD_EVERY_S)):
        t = first + k * FLOOD_EVERY_S
        payload = wire.senml_pack(cgm.device_id, [("glucose", "mg/dL", t, 140.0, None)])
        out.append(Message(t, cgm.device_id, wire.readings_topic(cgm.device_id), payload))
    return out


def reference(cfg: Config, home: Home, messages: list[Message], work: Path) -> set[tuple[Any, ...]]:
    """The readings the messages give committed once, with no fault."""
    from edge_twin.ingest import IngestWriter, RawMessage

    ref_cfg = replace(cfg, store=replace(cfg.store, path=work / "reference.sqlite"))
    with Store(ref_cfg.store.path) as store:
        provision(store, home, upstream=False)
        writer = IngestWriter(store, ref_cfg)
        writer.commit([RawMessage(m.topic, m.payload, m.t) for m in messages])
        return stored(store)


def stored(store: Store) -> set[tuple[Any, ...]]:
    rows = store.conn.execute("SELECT device_id, signal, t, value FROM readings")
    return {tuple(r) for r in rows}


def provision(store: Store, home: Home, upstream: bool) -> None:
    from edge_twin.store import devices
    from edge_twin.store import upstream as consent

    for d in home.devices:
        devices.provision(store, d.device_id, d.patient_id, d.device_type, START)
    if upstream:
        for p in home.patients:
            consent.set_consent(store, p.patient_id, True, START, "bench")


def settle(
    db: Path, clock: Clock, grace_s: float, quiet_s: float = 4.0, limit_s: float = 180.0
) -> bool:
    """Until the twin has applied every reading, FHIR sync and the alarm channels have
    sent everything (the wrist hours due by the gateway's ``clock`` too, ``grace_s`` after
    they ended) and nothing moved for ``quiet_s``."""
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
            elif (
                row[1] == row[2]
                and time.monotonic() - since >= quiet_s
                and synced(store, clock.now() - grace_s)
            ):
                return True
            time.sleep(0.2)
    return False


def synced(store: Store, ended_before: float) -> bool:
    """FHIR sync and the alarm channels (MQTT, webhook) have sent everything, and no wrist
    hour that ended before ``ended_before`` waits to be summarised."""
    from edge_twin.store import consumers, upstream
    from edge_twin.sync import SUMMARY_S

    if upstream.due_windows(store.conn, ended_before, SUMMARY_S, 1):
        return False
    return all(c.backlog == 0 for c in consumers.statuses(store.conn) if c.name != "twin")


def reconcile_fhir(
    store: Store, server: FhirTestServer, now: float, grace_s: float
) -> dict[str, int]:
    """The server against the store: Observations of the readings sent one by one, and
    the wrist hours due by ``now``; every identifier once."""
    from edge_twin.store import devices, readings
    from edge_twin.sync import SUMMARY_S, mapping

    bound = {d.device_id: d for d in devices.all_devices(store)}
    expected: set[str] = set()
    due_summaries: set[str] = set()
    summaries: set[str] = set()
    for r in readings.after(store, 0, 10**9):
        d = bound[r.device_id]
        ident = mapping.observation_identifier(r, d)
        if not mapping.summarised(d):
            expected.add(ident)
            continue
        summaries.add(ident)
        if mapping.window_start(r.t) + SUMMARY_S + grace_s < now - 60.0:
            due_summaries.add(ident)
    on_server = Counter(o["identifier"][0]["value"] for o in server.all("Observation"))
    held = Counter(
        (kind, r["identifier"][0]["value"])
        for kind in ("CommunicationRequest", "Communication", "Flag", "RiskAssessment")
        for r in server.all(kind)
    )
    got = set(on_server)
    return {
        "fhir_observations_expected": len(expected) + len(due_summaries),
        "fhir_lost": len((expected | due_summaries) - got),
        "fhir_extra": len(got - expected - summaries),
        "fhir_duplicated": sum(n - 1 for n in on_server.values() if n > 1)
        + sum(n - 1 for n in held.values() if n > 1),
        "fhir_alarm_resources": sum(held.values()),
    }


def reconcile_webhook(store: Store, endpoint: MisbehavingEndpoint) -> dict[str, int]:
    from edge_twin.alert import WEBHOOK_CONSUMER
    from edge_twin.store import consumers

    sent_to = consumers.position(store.conn, WEBHOOK_CONSUMER)
    events = {int(r[0]) for r in store.conn.execute("SELECT id FROM alarm_events")}
    posts = endpoint.posts()
    tries = Counter(int(p.headers["x-edge-twin-event"].rpartition(":")[2]) for p in posts)
    taken = Counter(
        int(p.headers["x-edge-twin-event"].rpartition(":")[2]) for p in posts if p.answer == "ok"
    )
    return {
        "webhook_events": len(events),
        # Events the gateway counts as delivered that the receiver never took (a loss),
        # and events written after the last check, still waiting when it was stopped.
        "webhook_not_delivered": len({e for e in events if e <= sent_to} - set(taken)),
        "webhook_pending_at_stop": len({e for e in events if e > sent_to}),
        "webhook_posts": len(posts),
        "webhook_posts_failed_share": round(
            sum(1 for p in posts if p.answer != "ok") / max(1, len(posts)), 3
        ),
        "webhook_retried_after_failure": sum(tries.values()) - sum(taken.values()),
        # At least once: a kill between the receiver's 2xx and the position's commit
        # sends it again (the receiver dedupes by X-Edge-Twin-Event).
        "webhook_delivered_twice": sum(n - 1 for n in taken.values() if n > 1),
    }


@dataclass
class Run:
    """One fault's home streaming through the rig, and what it found."""

    fault: str
    home: Home
    messages: list[Message]
    speed: float
    wall0: float
    gateway: GatewayProcess
    cfg: Config
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def clock(self) -> AcceleratedClock:
        return AcceleratedClock(START, self.speed, wall0=self.wall0)


@contextmanager
def rig(
    fault: str, args: argparse.Namespace, work: Path, broker: PrivateBroker, faults: int
) -> Iterator[Run]:
    from edge_twin_demo.fhir_server import FhirTestServer
    from firmware_sim.home import Home
    from tests.misbehaving_endpoint import MisbehavingEndpoint

    work.mkdir()
    home = Home(args.patients, START, args.hours, args.seed)
    messages = home.messages()
    if fault == "flood":
        messages = sorted([*messages, *flood_messages(home)], key=lambda m: m.t)
    stream_s = max(faults, 8) * WALL_PER_TRIAL_S + 5.0
    speed = args.hours * 3600.0 / stream_s
    endpoint = MisbehavingEndpoint()
    rng = random.Random(args.seed)
    endpoint.script(
        ["500" if rng.random() < WEBHOOK_FAILING_SHARE else "ok" for _ in range(100_000)]
    )
    with FhirTestServer() as server:
        cfg, config_file = config_for(broker, work, server.url, endpoint.url, speed)
        with Store(cfg.store.path) as store:
            provision(store, home, upstream=True)
        wall0 = time.monotonic() + 3.0
        gateway = GatewayProcess(config_file, speed, wall0, work / "gateway.log")
        run = Run(fault, home, messages, speed, wall0, gateway, cfg)
        try:
            yield run
            run.results = finish(run, work, server, endpoint)
        finally:
            gateway.ensure_stopped()
            endpoint.close()


def stream(run: Run, broker: PrivateBroker) -> threading.Event:
    """Publish the run's messages paced by its clock, from a thread; a device that finds
    the broker away keeps the message and sends it once it is back, as devices do."""
    from firmware_sim.publisher import HomePublisher, SimError, paced_by

    done = threading.Event()
    pace = paced_by(run.clock)

    def publish() -> None:
        with HomePublisher(broker.host, broker.port, run.home.devices) as pub:
            for m in run.messages:
                pace(m.t)
                while True:
                    try:
                        pub.send(m)
                        break
                    except SimError:
                        time.sleep(0.1)
            pub.flush(120.0)
        done.set()

    threading.Thread(target=publish, daemon=True).start()
    return done


def finish(
    run: Run, work: Path, server: FhirTestServer, endpoint: MisbehavingEndpoint
) -> dict[str, Any]:
    cfg = run.cfg
    settled = settle(cfg.store.path, run.clock, cfg.sync.summary_grace_s)
    now = run.clock.now()  # the gateway's time when it stopped
    final = run.gateway.stop()
    log = work / "gateway.log"
    expected = reference(cfg, run.home, run.messages, work)
    with Store(cfg.store.path) as store:
        got = stored(store)
        rows, distinct = store.conn.execute(
            "SELECT count(*), count(DISTINCT device_id || '|' || signal || '|' || t) FROM readings"
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
        # An alarm raised again after a restart while the first is still open: two open
        # alarms of one kind for one patient.
        open_twice = store.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM alarms WHERE state != 'resolved'"
            " GROUP BY patient_id, alarm_type HAVING count(*) > 1)"
        ).fetchone()[0]
        technical = sorted(
            {
                r[0]
                for r in store.conn.execute(
                    "SELECT DISTINCT a.alarm_type FROM alarms a WHERE a.patient_id = 'gateway'"
                    " OR a.alarm_type IN ('device_flooding', 'device_silent')"
                )
            }
        )
        fhir = reconcile_fhir(store, server, now, cfg.sync.summary_grace_s)
        webhook = reconcile_webhook(store, endpoint)
    deaths = len(run.gateway.self_ended) + (final != 0) + log.read_text().count("died")
    return {
        "fault": run.fault,
        "messages": len(run.messages),
        "readings_expected": len(expected),
        "readings_stored": rows,
        "lost": len(expected - got),
        "extra": len(got - expected),
        # Readings cannot repeat (the store's UNIQUE key; checked anyway); alarm
        # events could, if an alarm were raised again after a restart.
        "duplicated": rows - distinct,
        "alarm_events_duplicated": alarm_events - alarm_events_distinct,
        "alarms_open_twice": open_twice,
        "settled": settled,  # the twin, sync and alarm channels caught up in time
        "twin_caught_up": twin[0] == twin[1],
        "integrity_check": integrity,
        "worker_deaths": deaths,
        "risk_assessments": risks,
        "alarm_events": alarm_events,
        "technical_alarms": technical,
        **fhir,
        **webhook,
        "speed": round(run.speed),
    }


def play_kills(run: Run, broker: PrivateBroker, trials: int, rng: random.Random) -> None:
    run.gateway.start()
    done = stream(run, broker)
    for trial in range(trials):
        if trial:
            run.gateway.start()
        time.sleep(rng.uniform(0.3, 3.0))
        run.gateway.kill9()
    run.gateway.start()
    done.wait(600)


def play_broker_restarts(
    run: Run, broker: PrivateBroker, restarts: int, rng: random.Random
) -> None:
    run.gateway.start()
    done = stream(run, broker)
    for k in range(restarts):
        time.sleep(rng.uniform(0.5, 4.0))
        broker.stop()
        # Long outages (beyond the 3 s of broker_alarm_after_s here) and short ones, in turn.
        time.sleep(rng.uniform(4.0, 6.0) if k % 2 == 0 else rng.uniform(0.3, 2.0))
        broker.start()
    done.wait(600)


def play_flood(run: Run, broker: PrivateBroker) -> None:
    run.gateway.start()
    stream(run, broker).wait(600)


def play(fault: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from edge_twin.broker import PrivateBroker

    rng = random.Random(args.seed)
    count = {"kill": args.trials, "broker": max(1, args.trials // 5), "flood": 0}[fault]
    started = time.monotonic()
    with PrivateBroker() as broker, rig(fault, args, work / fault, broker, count) as run:
        print(
            f"{fault}: {len(run.messages)} messages over {args.hours:g} h at {run.speed:.0f}x;"
            f" {count} faults ...",
            file=sys.stderr,
        )
        players: dict[str, Callable[[], None]] = {
            "kill": lambda: play_kills(run, broker, count, rng),
            "broker": lambda: play_broker_restarts(run, broker, count, rng),
            "flood": lambda: play_flood(run, broker),
        }
        players[fault]()
    results: dict[str, Any] = {"trials": count, **run.results}
    results["seconds"] = round(time.monotonic() - started)
    print(
        f"{fault} x{count}: {results['lost']} lost, {results['duplicated']} duplicated,"
        f" {results['extra']} extra of {results['readings_expected']} readings; FHIR"
        f" {results['fhir_lost']} lost, {results['fhir_duplicated']} duplicated; webhook"
        f" {results['webhook_not_delivered']} not delivered; twin caught up:"
        f" {results['twin_caught_up']}; settled: {results['settled']}; integrity"
        f" {results['integrity_check']}; worker"
        f" deaths {results['worker_deaths']}; technical alarms {results['technical_alarms']}",
        file=sys.stderr,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fault", choices=(*FAULTS, "all"), default="all")
    parser.add_argument("--trials", type=int, default=50, help="kills (broker restarts: 1/5)")
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]), float(args.child[2]), float(args.child[3]))
        return
    chosen = FAULTS if args.fault == "all" else (args.fault,)
    with tempfile.TemporaryDirectory() as tmp:
        results = {fault: play(fault, args, Path(tmp)) for fault in chosen}
    print(json.dumps(results if args.fault == "all" else results[args.fault]))


if __name__ == "__main__":
    main()
