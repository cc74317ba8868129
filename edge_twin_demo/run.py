"""``edge-twin-demo``: a simulated home through the whole pipeline, at accelerated time.

    private mosquitto  <- firmware_sim devices publish (QoS 1, paced by simulated time)
         |
    Gateway (ingest -> estimate -> assess -> alert -> sync; API + dashboard on a loopback
         |   port)
         +--> a FHIR test server (tools/fhir-server: Medplum's router, in memory) on a
         |    loopback port, every patient consenting: the care team's side
    summary: what flowed, each patient's twin against the simulator's truth, and the
             resources that reached the FHIR server by type

Before the live part, ``history_days`` of the same home are replayed into the store at
speed through the gateway's own pipeline (``edge-twin replay``'s path): the weeks a
decompensation takes to build. The default seed and the home's alignment (it ends at the
last 12:00 UTC, so the simulated days fall on the same hours every run) give a story: a
heart-failure patient whose decompensation builds over the history, and a diabetic
patient with lows during the live hours. The summary says, for each labelled episode,
whether and how early the gateway alarmed.

The SQLite file is left behind for inspection.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_twin.assess import threshold_risks
from edge_twin.broker import PrivateBroker
from edge_twin.clock import AcceleratedClock, ManualClock, to_iso
from edge_twin.config import Config
from edge_twin.domain import Role, Signal
from edge_twin.errors import EdgeTwinError
from edge_twin.estimate import is_stale, patient_estimates
from edge_twin.gateway import Gateway
from edge_twin.ingest import RawMessage, ReplaySummary, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, alarms, devices, quarantine, readings, risks, upstream, users
from edge_twin.sync import SUMMARY_S, sync_status
from edge_twin_demo.fhir_server import FhirTestServer
from firmware_sim.home import Home
from firmware_sim.messages import Message
from firmware_sim.publisher import HomePublisher, paced_by

DRAIN_TIMEOUT_S = 60.0
DEMO_USER = "demo-care"
DAY_S = 86400.0
# The seed whose home, ending at a 12:00 UTC after 30 days of history and 12 live hours,
# holds the story (found by scanning seeds for a decompensation peaking in the last days
# and lows in the live hours; the scan is in docs/simulator.md).
STORY_SEED = 89
# Which alarm answers which labelled episode (and how far ahead it counts).
ANSWERS = {
    "hypoglycaemia": (("predicted_low", "low", "urgent_low"), 3600.0),
    "hf_decompensation": (("decompensation_risk",), 30 * DAY_S),
}


@dataclass
class DemoOptions:
    patients: int = 4
    hours: float = 12.0
    speed: float = 1440.0
    seed: int = STORY_SEED
    history_days: float = 30.0  # replayed at speed before the live hours
    db: Path = Path("var/demo.sqlite")
    api_port: int = 8080
    broker: tuple[str, int] | None = None  # None: start a private mosquitto
    fhir: bool = True  # start the FHIR test server and sync to it (unless sync.url is set)


SUMMARY_SIGNALS = (Signal.GLUCOSE, Signal.HEART_RATE, Signal.SYSTOLIC, Signal.WEIGHT)


@dataclass
class SignalSummary:
    twin: float
    sd: float
    truth: float
    stale: bool


@dataclass
class PatientSummary:
    patient_id: str
    conditions: list[str]
    readings: int
    signals: dict[str, SignalSummary]
    p_low_30min: float | None
    episodes: int
    decompensation_risk: float | None = None  # latest assessment, if any
    risk_confidence: str | None = None


@dataclass
class EpisodeOutcome:
    """A labelled episode of the simulated truth and what the gateway made of it."""

    patient_id: str
    kind: str  # hypoglycaemia | hf_decompensation
    onset: str  # ISO
    peak: str
    alarm: str | None  # the first alarm that answered it, raised before its peak
    lead_min: float | None  # how long before the peak


@dataclass
class DemoSummary:
    wall_s: float
    simulated_hours: float
    published: int
    ingested_messages: int
    readings_stored: int
    duplicates: int
    quarantined: dict[str, int]
    estimates: int
    api_url: str
    db: str
    patients: list[PatientSummary] = field(default_factory=list)
    alarms: dict[str, int] = field(default_factory=dict)  # "type (state)" -> count
    # What reached the FHIR server, by resource type (empty: no sync).
    sync: dict[str, int] = field(default_factory=dict)
    sync_url: str = ""
    sync_pending: dict[str, int] = field(default_factory=dict)  # left when the demo ended
    # The demo's care-team login (for the pages of the store it leaves, edge-twin serve).
    login: dict[str, str] = field(default_factory=dict)
    history_days: float = 0.0
    history_readings: int = 0
    episodes: list[EpisodeOutcome] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_demo(
    options: DemoOptions,
    config: Config,
    on_start: Callable[[str, int], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_history: Callable[[float], None] | None = None,
) -> DemoSummary:
    """Run the demo; ``on_history(fraction)`` while the history is replayed, then
    ``on_start(api_url, n_messages)`` and ``on_progress(fraction)`` for the live hours."""
    wall0 = time.monotonic()
    # The last 12:00 UTC: the same seed gives the same story whatever the hour it runs.
    end = math.floor((time.time() - DAY_S / 2) / DAY_S) * DAY_S + DAY_S / 2
    start = end - options.hours * 3600.0
    first = start - options.history_days * DAY_S
    clock = AcceleratedClock(start, options.speed, until=end)
    home = Home(
        options.patients,
        first,
        options.history_days * 24 + options.hours,
        options.seed,
        prefix=config.mqtt.topic_prefix,
    )
    everything = home.messages()
    history = [m for m in everything if m.t < start]
    messages = [m for m in everything if m.t >= start]

    if options.db.resolve() == config.store.path.resolve():
        raise EdgeTwinError(
            f"the demo recreates {options.db}, which is this gateway's store: pass another --db"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{options.db}{suffix}").unlink(missing_ok=True)

    broker = PrivateBroker() if options.broker is None else None
    fhir = FhirTestServer() if options.fhir and not config.sync.url else None
    try:
        if fhir is not None:
            fhir.start()
            # Hours of wrist data go up as soon as they are over: the demo compresses
            # time, so the grace a home needs for late readings would hide them all.
            # And a sync that is a second behind is an hour behind in the demo's time: the
            # alarm for a care team not receiving data waits a wall-clock minute instead.
            after = max(config.sync.alarm_after_s, 60.0 * options.speed)
            sync = replace(config.sync, url=fhir.url, summary_grace_s=0.0, alarm_after_s=after)
            config = replace(config, sync=sync)
        if options.broker is not None:
            host, port = options.broker
        else:
            assert broker is not None
            broker.start()
            host, port = broker.host, broker.port
        cfg = replace(
            config,
            mqtt=replace(config.mqtt, host=host, port=port, client_id="edge-twin-demo-gateway"),
            store=replace(config.store, path=options.db),
            api=replace(config.api, host="127.0.0.1", port=options.api_port),
        )
        with Store(cfg.store.path, cfg.store.synchronous) as store:
            for d in home.devices:
                devices.provision(store, d.device_id, d.patient_id, d.device_type, first)
        # One commit per message, as edge-twin replay: without an fsync each (the history
        # can be made again; the live hours are acknowledged with the store's setting).
        with Store(cfg.store.path, "NORMAL") as store:
            history_readings = _replay_history(store, cfg, history, first, on_history)
        with Store(cfg.store.path, cfg.store.synchronous) as store:
            if cfg.sync.url:
                # Consent from the live hours on: the history stays on the gateway (a FHIR
                # server would take minutes to receive weeks of it).
                for pid in devices.patient_ids(store):
                    upstream.set_consent(store, pid, True, start, "demo")
            # The pages need a login: a care team that sees every simulated patient, and
            # a one-time link that logs the newcomer's browser in.
            password = secrets.token_urlsafe(12)
            users.add(store, DEMO_USER, Role.CARE_TEAM, password, time.time(), all_patients=True)
            code = users.issue(store, DEMO_USER, users.Kind.CODE, 3600.0, time.time())
        gateway = _start_gateway(cfg, clock)
        try:
            assert gateway.api is not None
            assert gateway.ingest is not None
            if on_start is not None:
                on_start(f"{gateway.api.url}/login/link?code={code}", len(messages))
            clock.restart()  # simulated time starts now that everything is up
            sent = 0
            with HomePublisher(host, port, home.devices, prefix=cfg.mqtt.topic_prefix) as pub:

                def progress(_: object) -> None:
                    nonlocal sent
                    sent += 1
                    if on_progress is not None and sent % 25 == 0:
                        on_progress(sent / len(messages))

                pub.publish(messages, pace=paced_by(clock), progress=progress)
            if on_progress is not None:
                on_progress(1.0)
            _wait_until_settled(gateway, len(messages))
            if cfg.sync.url:
                _wait_until_synced(cfg)
            summary = _summarise(
                gateway, cfg, home, clock.now(), len(messages), time.monotonic() - wall0
            )
            summary.login = {"username": DEMO_USER, "password": password}
            summary.history_days = options.history_days
            summary.history_readings = history_readings
            summary.episodes = _episodes(cfg, home, start)
            if cfg.sync.url:
                summary.sync_url = cfg.sync.url
                summary.sync_pending = _sync_pending(cfg)
            if fhir is not None:
                summary.sync = {k: n for k, n in fhir.counts().items() if n}
            return summary
        finally:
            gateway.stop()
    finally:
        if fhir is not None:
            fhir.stop()
        if broker is not None:
            broker.cleanup()


def _sync_pending(cfg: Config) -> dict[str, int]:
    with Store(cfg.store.path, migrate=False) as store:
        status = sync_status(store, time.time())
    pending = {name: log["backlog"] for name, log in status["logs"].items() if log["backlog"]}
    if status["pending_summaries"]:
        # An hour goes up once it is over (and sync.summary_grace_s after).
        pending["wrist hours not over"] = status["pending_summaries"]
    return pending


def _wait_until_synced(cfg: Config) -> None:
    """Until the sync has sent every log to its end (the hours of wrist data still in
    progress wait for their end, as in the field)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        pending = _sync_pending(cfg)
        pending.pop("wrist hours not over", None)
        with Store(cfg.store.path, migrate=False) as store:
            ended = time.time() - cfg.sync.summary_grace_s
            due = upstream.due_windows(store.conn, ended, SUMMARY_S, 1)
        if not pending and not due:
            return
        time.sleep(0.1)


def _replay_history(
    store: Store,
    cfg: Config,
    history: list[Message],
    first: float,
    on_history: Callable[[float], None] | None,
) -> int:
    """The history through the gateway's pipeline, one message at a time with the clock
    at each one's arrival (as ``edge-twin replay``); returns the readings stored."""
    if not history:
        return 0
    clock = ManualClock(first)

    def progress(done: ReplaySummary) -> None:  # called every 1,000 messages
        if on_history is not None:
            on_history(done.messages / len(history))

    capture = [RawMessage(m.topic, m.payload, m.t) for m in sorted(history, key=lambda m: m.t)]
    summary = replay(Pipeline(store, cfg, clock), capture, clock, progress)
    if on_history is not None:
        on_history(1.0)
    return summary.readings_new


def _episodes(cfg: Config, home: Home, live_from: float) -> list[EpisodeOutcome]:
    """Each lows in the live hours and each decompensation of the whole period, with the
    first alarm that answered it before its peak."""
    out = []
    with Store(cfg.store.path, migrate=False) as store:
        raised = alarms.listing(store.conn, open_only=False, limit=100_000)
    for patient in home.patients:
        for e in patient.episodes:
            if e.kind not in ANSWERS or (e.kind == "hypoglycaemia" and e.onset < live_from):
                continue
            kinds, ahead = ANSWERS[e.kind]
            answers = [
                a
                for a in raised
                if a.patient_id == patient.patient_id
                and a.alarm_type in kinds
                and e.peak - ahead <= a.raised_at <= e.peak
            ]
            first = min(answers, key=lambda a: a.raised_at, default=None)
            out.append(
                EpisodeOutcome(
                    patient.patient_id,
                    e.kind,
                    to_iso(e.onset),
                    to_iso(e.peak),
                    None if first is None else first.alarm_type,
                    None if first is None else round((e.peak - first.raised_at) / 60.0, 1),
                )
            )
    return out


def _start_gateway(cfg: Config, clock: AcceleratedClock) -> Gateway:
    gateway = Gateway(cfg, clock)
    try:
        gateway.start()
    except EdgeTwinError:
        if cfg.api.port == 0:
            raise
        # The demo's default port is taken: any free port will do, the URL is printed.
        gateway = Gateway(replace(cfg, api=replace(cfg.api, port=0)), clock)
        gateway.start()
    return gateway


def _wait_until_settled(gateway: Gateway, expected: int) -> None:
    assert gateway.pipeline is not None
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not gateway.pipeline.settled(expected):
        if time.monotonic() > deadline:
            raise EdgeTwinError(
                f"the gateway settled {gateway.pipeline.messages_settled} of {expected} messages"
                f" within {DRAIN_TIMEOUT_S:g} s"
            )
        time.sleep(0.02)


def _summarise(
    gateway: Gateway, cfg: Config, home: Home, now: float, published: int, wall_s: float
) -> DemoSummary:
    assert gateway.ingest is not None
    assert gateway.api is not None
    stats = gateway.ingest.stats
    with Store(cfg.store.path, migrate=False) as store:
        summary = DemoSummary(
            wall_s=round(wall_s, 1),
            simulated_hours=(home.end - home.start) / 3600.0,
            published=published,
            ingested_messages=stats.messages,
            readings_stored=readings.count(store),
            duplicates=stats.readings_duplicate,
            quarantined=quarantine.counts_by_reason(store),
            estimates=0,
            api_url=gateway.api.url,
            db=str(cfg.store.path),
        )
        for a in alarms.listing(store.conn, open_only=False, limit=100_000):
            key = f"{a.alarm_type} ({a.state.value})"
            summary.alarms[key] = summary.alarms.get(key, 0) + 1
        for patient in home.patients:
            estimates = {e.signal: e for e in patient_estimates(store, patient.patient_id, now)}
            latest_risk = risks.latest(store, patient.patient_id)
            summary.estimates += len(estimates)
            glucose = estimates.get(Signal.GLUCOSE)
            profile = patient.profile
            conditions = [
                name
                for name, present in (
                    ("heart failure", profile.heart_failure),
                    (f"diabetes {profile.diabetes}", profile.diabetes is not None),
                    ("hypertension", profile.hypertension),
                )
                if present
            ]
            summary.patients.append(
                PatientSummary(
                    patient_id=patient.patient_id,
                    conditions=conditions,
                    readings=len(readings.for_patient(store, patient.patient_id, limit=10**7)),
                    signals={
                        s.value: SignalSummary(
                            round(e.mean, 1),
                            round(e.sd, 2),
                            round(patient.truth.at(s.value, now), 1),
                            is_stale(e, now, cfg.estimate.stale_after_s),
                        )
                        for s in SUMMARY_SIGNALS
                        if (e := estimates.get(s)) is not None
                    },
                    p_low_30min=None
                    if glucose is None
                    else round(threshold_risks(glucose)[0].probability, 3),
                    episodes=len(patient.episodes),
                    decompensation_risk=round(latest_risk[0].probability, 3)
                    if latest_risk
                    else None,
                    risk_confidence=latest_risk[0].confidence if latest_risk else None,
                )
            )
    return summary
