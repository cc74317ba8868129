"""``edge-twin``: the gateway's command line. Each command is a thin wrapper over one
library call, so everything here is scriptable and tested without the CLI."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from edge_twin import __version__
from edge_twin.alert import AlarmEngine, alarm_json, redeliver_dead_letters
from edge_twin.api import (
    audit_json,
    device_json,
    drift_json,
    patient_state,
    quarantine_json,
    risk_json,
)
from edge_twin.assess import active_model, drift_report, install_model, rollback_model
from edge_twin.broker import acl_rules
from edge_twin.clock import ManualClock, SystemClock, parse_time, to_iso
from edge_twin.config import Config, load_config
from edge_twin.domain import Role
from edge_twin.errors import EdgeTwinError
from edge_twin.export import KINDS, export
from edge_twin.store import (
    PipelineLock,
    Store,
    alarms,
    consumers,
    credentials,
    devices,
    displays,
    quarantine,
    readings,
    risks,
    uploaders,
    upstream,
    users,
)
from edge_twin.sync import FhirClient, FhirSync, sync_status

app = typer.Typer(
    help="edge-twin home gateway: ingest sensor readings over MQTT, keep each patient's"
    " digital twin, serve the local API and dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped or captured, a table is as wide as its content: never cut to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 10_000)
err = Console(stderr=True)
# edge-twin run ends with this when a worker thread died (EX_SOFTWARE): systemd restarts it.
EXIT_WORKER_DIED = 70
EXIT_TRY_AGAIN = 75  # EX_TEMPFAIL: nothing broken here, the peer failed; try again later

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="EDGE_TWIN_CONFIG",
        help="TOML config file (settings: docs/configuration.md); EDGE_TWIN_<SECTION>_<KEY>"
        " environment variables override it.",
        exists=False,
    ),
]


JsonLines = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def _config(path: Path | None) -> Config:
    return load_config(path)


def _version(value: bool) -> None:
    if value:
        console.print(f"edge-twin {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Run the gateway: MQTT ingest, the twin and the local API, until SIGINT/SIGTERM.
    Exits with status 70 when one of its workers dies (systemd restarts it)."""
    from edge_twin.gateway import Gateway

    cfg = _config(config)
    stop = threading.Event()
    deaths: list[str] = []

    def died(worker: str, why: str) -> None:
        deaths.append(f"{worker}: {why}")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    before = threading.excepthook
    gateway = Gateway(cfg, SystemClock(), degrade=True, on_death=died)
    # A library's thread (paho's network loop, say) that dies is a death too, from the
    # start on.
    threading.excepthook = lambda hook: gateway.workers.died_elsewhere(
        hook.thread.name if hook.thread else "?", hook.exc_type.__name__
    )
    try:
        with gateway:
            assert gateway.api is not None
            console.print(
                f"gateway {cfg.gateway.id}: MQTT {cfg.mqtt.host}:{cfg.mqtt.port},"
                f" API and dashboard {gateway.api.url}, store {cfg.store.path}"
            )
            if gateway.ingest is not None and not gateway.ingest.connected:
                err.print(
                    Text.assemble(
                        ("warning: ", "yellow"),
                        _literal(
                            f"not connected to the broker ({gateway.ingest.stats.last_error});"
                        ),
                        " ingest retries in the background; the API serves the store meanwhile",
                    )
                )
            stop.wait()
    finally:
        threading.excepthook = before
    if deaths:
        err.print(_literal(f"stopped: a worker died ({'; '.join(deaths)})"))
        raise typer.Exit(EXIT_WORKER_DIED)
    console.print("stopped")


@app.command()
def serve(
    store: Annotated[
        Path | None,
        typer.Option(help="The SQLite store to serve (default: store.path), e.g. a demo's."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: api.port; 0: any).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve a store's API and dashboard read-only, without MQTT or the pipeline (a
    store copied from a gateway, the one a demo left), until SIGINT/SIGTERM."""
    from edge_twin.api import ApiServer, create_app, tls_of

    cfg = _config(config)
    path = store or cfg.store.path
    with Store(path, read_only=True) as opened:
        pending = opened.pending_migrations()
    if pending:
        raise EdgeTwinError(
            f"{path} is an older store ({len(pending)} migrations behind): serve a migrated"
            " copy (edge-twin migrate with store.path set to the copy)"
        )
    api = replace(cfg.api, host=host or cfg.api.host, port=cfg.api.port if port is None else port)
    cfg = replace(cfg, store=replace(cfg.store, path=path), api=api)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    app = create_app(cfg, SystemClock(), read_only=True)
    server = ApiServer(app, api.host, api.port, tls_of(cfg.api))
    server.start()
    try:
        console.print(f"serving {path} read-only at {server.url}")
        stop.wait()
    finally:
        server.stop()


@app.command()
def replay(
    capture: Annotated[
        Path,
        typer.Argument(help="A JSON-lines capture (.jsonl or .jsonl.gz), or a cohort directory."),
    ],
    config: ConfigOpt = None,
    devices_file: Annotated[
        Path | None,
        typer.Option(
            "--devices",
            help="Provision these devices first (JSON lines; a cohort's devices.jsonl by default).",
        ),
    ] = None,
) -> None:
    """Feed recorded messages through the live path as the gateway lived them: one message
    per commit, the clock at each arrival; decode, store, twin, risk, alarms."""
    from edge_twin.ingest import count_messages, first_arrival, provision_from, read_capture
    from edge_twin.ingest import replay as run_replay
    from edge_twin.pipeline import Pipeline

    cfg = _config(config)
    lines = count_messages(capture)
    if devices_file is None and capture.is_dir() and (capture / "devices.jsonl").exists():
        devices_file = capture / "devices.jsonl"
    start = first_arrival(capture)
    # Commits not fsynced: a replay is rerun from its capture (idempotently), not
    # acknowledged to anyone, and one fsync per message would make it crawl.
    with (
        PipelineLock(cfg.store.path),
        Store(cfg.store.path, "NORMAL") as store,
        Progress(
            TextColumn("[bold]replaying"), BarColumn(), TaskProgressColumn(), console=err
        ) as bar,
    ):
        if devices_file is not None:
            provision_from(devices_file, store, start)
        clock = ManualClock(start)
        quiet_until = readings.newest_arrival(store)  # a capture replayed again: no-op
        pipeline = Pipeline(store, cfg, clock)
        task = bar.add_task("replay", total=lines)
        summary = run_replay(
            pipeline,
            read_capture(capture),
            clock,
            lambda done: bar.update(task, completed=done.messages),
            quiet_until=quiet_until,
        )
    console.print(
        f"messages {summary.messages}: readings new {summary.readings_new}, duplicate"
        f" {summary.readings_duplicate}; quarantined {summary.rejected}"
        + (f" ({summary.rejected_by_reason})" if summary.rejected else "")
    )


ByOpt = Annotated[
    str | None,
    typer.Option("--by", help="Who does it, for the log (default: the user behind sudo)."),
]


def _show_access(access: Any, as_json: bool) -> None:
    """A device's or display's broker settings: printed once, with a QR code to scan."""
    from edge_twin.provisioning import qr

    if as_json:
        print(json.dumps({**asdict(access), "uri": access.uri}))
        return
    console.print(
        _literal(
            f"broker  {access.host}:{access.port} (TLS)\nuser    {access.username}\n"
            f"password {access.password}\nCA      {access.ca_cert}\n"
            f"CA SHA-256 {access.ca_sha256}",
            lines=True,
        )
    )
    console.print(Text(qr(access.uri)))
    err.print("the password is shown once; edge-twin credentials rotate gives a new one")


def _thresholds(items: list[str] | None) -> dict[str, object]:
    parsed: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            parsed[key] = float(value)
        except ValueError:
            raise EdgeTwinError(f"{item!r}: use KEY=NUMBER") from None
        if not sep:
            raise EdgeTwinError(f"{item!r}: use KEY=NUMBER")
    return parsed


@app.command()
def provision(
    device_id: Annotated[str, typer.Argument(help="The device's identity (its MQTT topic id).")],
    patient_id: Annotated[str, typer.Argument(help="The patient the device belongs to.")],
    device_type: Annotated[str, typer.Option("--type", "-t", help="cgm, wrist, bp_cuff or scale.")],
    config: ConfigOpt = None,
    consent_upstream: Annotated[
        bool | None,
        typer.Option(
            "--upstream/--no-upstream",
            help="Record the patient's consent to FHIR upstream sharing (or its refusal).",
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option("--set", help="An alarm threshold KEY=VALUE for the patient (repeat)."),
    ] = None,
    by: ByOpt = None,
    as_json: JsonLines = False,
) -> None:
    """Bind a device to a patient (readings from unbound devices are quarantined), with
    the patient's consent and thresholds if given, and, where the gateway manages its
    broker (broker.dir), the device's own broker credential: shown once, with a QR code."""
    from edge_twin.provisioning import actor, provision_device

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        done = provision_device(
            store,
            cfg,
            device_id,
            patient_id,
            device_type,
            SystemClock().now(),
            by or actor(),
            consent_upstream,
            _thresholds(threshold),
        )
    d, access = done.device, done.access
    kept = "its broker credential is kept (edge-twin credentials rotate gives a new one)"
    if as_json:
        if access is None:
            row = {"device_id": d.device_id, "patient_id": d.patient_id}
            print(json.dumps({**row, "credential_kept": done.credential_kept}))
        else:
            _show_access(access, True)
        return
    console.print(f"{d.device_id} ({d.device_type}) -> patient {d.patient_id}")
    if access is not None:
        _show_access(access, False)
    elif done.credential_kept:
        console.print(kept)


@app.command()
def unprovision(
    device_id: Annotated[str, typer.Argument(help="The device to unbind.")],
    config: ConfigOpt = None,
    by: ByOpt = None,
) -> None:
    """Unbind a device and revoke its broker credential; its later readings are refused
    by the broker (or quarantined as unknown_device)."""
    from edge_twin.provisioning import actor, unprovision_device

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        unprovision_device(store, cfg, device_id, SystemClock().now(), by or actor())
    console.print(f"{device_id} unprovisioned")


@app.command("devices")
def list_devices(
    config: ConfigOpt = None,
    as_json: JsonLines = False,
) -> None:
    """List provisioned devices with their last reported status."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        statuses = devices.statuses(store)
        listed = [device_json(d, statuses.get(d.device_id)) for d in devices.all_devices(store)]
    if as_json:
        for d in listed:
            print(json.dumps(d))
        return
    table = Table(
        "device", "type", "patient", "online", "battery", "firmware", "clock offset", "sensor ends"
    )
    for d in listed:

        def shown(key: str, fmt: str = "{}", d: dict[str, Any] = d) -> str:
            return "-" if d[key] is None else fmt.format(d[key])

        online = "-" if d["online"] is None else ("yes" if d["online"] else "no")
        table.add_row(
            d["device_id"],
            d["device_type"],
            d["patient_id"],
            online,
            shown("battery_pct", "{:g}%"),
            _literal(shown("firmware")),
            shown("clock_offset_s", "{:+.0f} s"),
            shown("sensor_expires_at"),
        )
    console.print(table)


@app.command("quarantine")
def show_quarantine(
    config: ConfigOpt = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonLines = False,
) -> None:
    """Show rejected messages with their reason (newest first) and counts per reason."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        items = quarantine.recent(store, limit, reason)
        counts = quarantine.counts_by_reason(store)
    if as_json:
        for q in items:
            print(json.dumps(quarantine_json(q)))
        return
    console.print("counts: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    table = Table("id", "reason", "topic", "detail", "payload")
    for q in items:
        payload = q.payload[:60].decode("utf-8", errors="replace")
        table.add_row(str(q.id), q.reason, _literal(q.topic), _literal(q.detail), _literal(payload))
    console.print(table)


@app.command()
def reprocess(
    reason: Annotated[str, typer.Option(help="Quarantine reason whose messages to decode again.")],
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows, oldest first.")] = (
        100_000
    ),
    as_json: JsonLines = False,
) -> None:
    """Decode quarantined messages again once their cause is fixed (a device provisioned,
    the clock synchronised): what decodes is stored, what does not stays quarantined with
    its new reason. Safe beside a running gateway, which applies what is stored."""
    from edge_twin.clock import ClockTrust
    from edge_twin.domain import RejectReason
    from edge_twin.ingest import IngestWriter

    try:
        why = RejectReason(reason)
    except ValueError:
        known = ", ".join(r.value for r in RejectReason)
        err.print(_literal(f"error: unknown reason {reason!r} (one of: {known})"))
        raise typer.Exit(2) from None
    cfg = _config(config)
    trust = ClockTrust() if cfg.ingest.hold_until_clock_synced else ClockTrust.always()
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        result = IngestWriter(store, cfg, trust).reprocess(why, SystemClock().now(), limit)
    if as_json:
        print(json.dumps(asdict(result)))
        return
    console.print(
        f"{why.value}: {result.rows} rows ({result.messages} messages) decoded again;"
        f" readings stored {result.readings_new}; still quarantined "
        + (", ".join(f"{k} {v}" for k, v in result.still_rejected.items()) or "none")
    )


@app.command()
def state(
    patient_id: Annotated[str, typer.Argument(help="The patient.")],
    config: ConfigOpt = None,
) -> None:
    """Print a patient's twin state now, as JSON (the same as GET /patients/{id}/state)."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        if not devices.patient_exists(store, patient_id):
            raise EdgeTwinError(f"unknown patient {patient_id!r}")
        state = patient_state(store, patient_id, SystemClock().now(), cfg)
    print(json.dumps(state, indent=2))


@app.command()
def risk(
    patient_id: Annotated[str, typer.Argument(help="The patient.")],
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="How many assessments, newest first.")] = 1,
) -> None:
    """Print a patient's decompensation risk assessments as JSON (GET /patients/{id}/risk)."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        if not devices.patient_exists(store, patient_id):
            raise EdgeTwinError(f"unknown patient {patient_id!r}")
        found = risks.latest(store, patient_id, limit)
    print(json.dumps([risk_json(r) for r in found], indent=2))


model_app = typer.Typer(
    help="The decompensation risk model: show, verify and install, roll back, drift.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")


@model_app.command("show")
def model_show(config: ConfigOpt = None) -> None:
    """The active model: name, version, sha256, threshold, validation figures."""
    cfg = _config(config)
    m = active_model(cfg.assess.model_dir)
    card = m.card
    console.print(f"{card.name} {card.version} from {m.directory}")
    console.print(f"sha256 {card.sha256}")
    console.print(
        f"risk of decompensation within {card.horizon_days:g} days;"
        f" alert threshold {card.threshold:.3f}"
    )
    console.print("validation: " + json.dumps(card.validation))


@model_app.command("install")
def model_install(
    directory: Annotated[
        Path, typer.Argument(help="Directory with decompensation.onnx and its card.")
    ],
    config: ConfigOpt = None,
) -> None:
    """Verify a model (checksum, features, shapes, a trial run) and make it active; the
    current one becomes the rollback target. A model that fails is refused, nothing
    changes. A running gateway picks the new model up at its next start."""
    cfg = _config(config)
    m = install_model(cfg.assess.model_dir, directory)
    console.print(f"installed and active: {m.card.name} {m.card.version} ({m.card.sha256[:12]})")


@model_app.command("rollback")
def model_rollback(config: ConfigOpt = None) -> None:
    """Make the previous model active again."""
    cfg = _config(config)
    m = rollback_model(cfg.assess.model_dir)
    console.print(f"active: {m.card.name} {m.card.version} ({m.card.sha256[:12]})")


@model_app.command("drift")
def model_drift(
    config: ConfigOpt = None,
    last: Annotated[int, typer.Option(min=1, help="Assessments to compare.")] = 500,
    as_json: JsonLines = False,
) -> None:
    """Compare the last assessments' features with the model's training distribution
    (population stability index per feature; > 0.25 is drift)."""
    cfg = _config(config)
    m = active_model(cfg.assess.model_dir)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        rows = risks.recent_features(store, last)
    if as_json:
        for row in drift_json(drift_report(m.card, rows)):
            print(json.dumps(row))
        return
    table = Table("feature", "PSI", "unknown live", "unknown in training", "status")
    for d in drift_report(m.card, rows):
        table.add_row(
            d.feature,
            "-" if math.isnan(d.psi) else f"{d.psi:.3f}",
            "-" if math.isnan(d.live_missing) else f"{d.live_missing:.0%}",
            f"{d.train_missing:.0%}",
            d.status,
        )
    console.print(f"{len(rows)} assessments against {m.card.name} {m.card.version}")
    console.print(table)


alarms_app = typer.Typer(
    help="Alarms: list them, acknowledge, pause, per-patient thresholds, the webhook's"
    " dead letters.",
    no_args_is_help=True,
)
app.add_typer(alarms_app, name="alarms")


def _engine(store: Store) -> AlarmEngine:
    return AlarmEngine(store, SystemClock().now)


@alarms_app.command("list")
def alarms_list(
    config: ConfigOpt = None,
    patient: Annotated[str | None, typer.Option(help="Only this patient.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """Alarms, newest first (open ones unless --all), as JSON lines."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        for a in alarms.listing(store.conn, patient, not all_, limit):
            print(json.dumps(alarm_json(a)))


@alarms_app.command("ack")
def alarms_ack(
    alarm_id: Annotated[int, typer.Argument(help="The alarm.")],
    by: Annotated[str, typer.Option(help="Who acknowledges (kept in the audit log).")],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOpt = None,
) -> None:
    """Acknowledge an alarm (a latched one whose condition cleared resolves)."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        a = _engine(store).acknowledge(alarm_id, by, reason, SystemClock().now())
    console.print(f"alarm {a.id} {a.alarm_type}: {a.state.value}")


@alarms_app.command("pause")
def alarms_pause(
    patient_id: Annotated[str, typer.Argument(help="The patient.")],
    alarm_type: Annotated[str, typer.Argument(help="The alarm type (docs/alerts.md).")],
    by: Annotated[str, typer.Option(help="Who pauses it (kept in the audit log).")],
    minutes: Annotated[float, typer.Option(min=1, max=1440, help="For how long.")] = 30,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOpt = None,
) -> None:
    """Pause one alarm type of one patient; it re-alerts after if the condition persists."""
    cfg = _config(config)
    now = SystemClock().now()
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        _engine(store).pause(patient_id, alarm_type, now + minutes * 60, by, reason, now)
    console.print(f"{alarm_type} paused for {patient_id} for {minutes:g} min")


@alarms_app.command("audit")
def alarms_audit(
    patient_id: Annotated[str, typer.Argument(help="The patient.")],
    limit: Annotated[int, typer.Option(min=1)] = 100,
    config: ConfigOpt = None,
) -> None:
    """Every pause and settings change of a patient's alarms, done or refused (who, when,
    old and new values), newest first, as JSON lines."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        for e in alarms.audit_log(store.conn, patient_id, limit):
            print(json.dumps(audit_json(e)))


@alarms_app.command("dead-letters")
def alarms_dead_letters(
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Alarm events the webhook's receiver refused for good (set aside so the rest flow
    on), with its answer, newest first, as JSON lines."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        for d in consumers.dead_letters(store.conn, limit=limit):
            e = alarms.event(store.conn, d.entry_id)
            a = None if e is None else alarms.get(store.conn, e.alarm_id)
            print(
                json.dumps(
                    {
                        "consumer": d.consumer,
                        "event_id": d.entry_id,
                        "event": None if e is None else e.event,
                        "alarm_id": None if e is None else e.alarm_id,
                        "type": None if a is None else a.alarm_type,
                        "patient_id": None if a is None else a.patient_id,
                        "set_aside_at": to_iso(d.at),
                        "reason": d.reason,
                    }
                )
            )


@alarms_app.command("redeliver")
def alarms_redeliver(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Send the webhook's dead letters again, oldest first, once its receiver is fixed
    (signed and identified as before, so the receiver dedupes; marked "redelivered": they
    come late and out of order). Those refused for good again stay set aside with the new
    answer; the first other failure stops it (exit 75), the rest kept. Safe beside a
    running gateway."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        result = redeliver_dead_letters(store, cfg.alert, cfg.gateway.id)
    if as_json:
        print(json.dumps(asdict(result)))
    else:
        console.print(
            f"{result.delivered} delivered, {result.refused} refused again,"
            f" {result.gone} no longer stored"
        )
    if result.waiting:
        err.print(_literal(f"stopped: {result.why}; {result.waiting} kept for the next try"))
        raise typer.Exit(EXIT_TRY_AGAIN)


@alarms_app.command("settings")
def alarms_settings(
    patient_id: Annotated[str, typer.Argument(help="The patient.")],
    changes: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE thresholds to change (docs/alerts.md).")
    ] = None,
    by: Annotated[str, typer.Option(help="Who changes them.")] = "cli",
    config: ConfigOpt = None,
) -> None:
    """Show (and with KEY=VALUE, change) a patient's alarm thresholds, validated."""
    cfg = _config(config)
    parsed: dict[str, object] = {}
    for item in changes or []:
        key, sep, value = item.partition("=")
        try:
            parsed[key] = float(value)
        except ValueError:
            raise EdgeTwinError(f"{item!r}: use KEY=NUMBER") from None
        if not sep:
            raise EdgeTwinError(f"{item!r}: use KEY=NUMBER")
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        engine = _engine(store)
        now = SystemClock().now()
        settings = (
            engine.set_settings(patient_id, parsed, by, now)
            if parsed
            else engine.settings(patient_id)
        )
    print(json.dumps(asdict(settings), indent=2))


@app.command()
def consent(
    patient_id: Annotated[str, typer.Argument(help="The patient.")],
    upstream_: Annotated[
        bool,
        typer.Option(
            "--upstream/--no-upstream",
            help="Whether the patient agreed to their data going to the care team's FHIR"
            " server. Without it nothing of theirs leaves the gateway.",
        ),
    ],
    by: Annotated[str, typer.Option(help="Who records it (kept with the consent).")] = "cli",
    config: ConfigOpt = None,
) -> None:
    """Record a patient's consent to upstream (FHIR) sharing, or its withdrawal."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        upstream.set_consent(store, patient_id, upstream_, SystemClock().now(), by)
    console.print(f"{patient_id}: upstream sharing {'on' if upstream_ else 'off'}")


sync_app = typer.Typer(
    help="FHIR upstream sync: where it stands, refused resources, retrying them.",
    no_args_is_help=True,
)
app.add_typer(sync_app, name="sync")


@sync_app.command("status")
def sync_status_cmd(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Backlog, failures and, per patient, consent, oldest unsent data, parked resources."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        status = {"enabled": bool(cfg.sync.url), **sync_status(store, SystemClock().now())}
    if as_json:
        print(json.dumps(status))
        return
    console.print(
        f"upstream {cfg.sync.url or '(off: sync.url is empty)'}: backlog {status['backlog']}"
        f" readings, {status['pending_summaries']} summaries pending,"
        f" {status['parked']} parked, {status['failures']} failures in a row"
        + (f" (last: {status['last_error']})" if status["last_error"] else "")
    )
    table = Table("patient", "consent", "oldest unsent", "waiting", "parked")
    for p in status["patients"]:
        waiting = p["waiting_s"]
        table.add_row(
            p["patient_id"],
            "yes" if p["consent"] else "no",
            p["oldest_unsent_at"] or "-",
            "-" if waiting is None else f"{waiting / 60:.0f} min",
            str(p["parked"]),
        )
    console.print(table)


@sync_app.command("parked")
def sync_parked(
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Resources the FHIR server refused, with its OperationOutcome, as JSON lines."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        for p in upstream.parked(store.conn, limit):
            print(
                json.dumps(
                    {
                        "id": p.id,
                        "patient_id": p.patient_id,
                        "resource_type": p.resource_type,
                        "identifier": p.identifier,
                        "status": p.status,
                        "outcome": p.outcome,
                        "parked_at": to_iso(p.parked_at),
                    }
                )
            )


@sync_app.command("retry-parked")
def sync_retry_parked(config: ConfigOpt = None) -> None:
    """Send every parked resource again (after a fix on the server's side); those still
    refused stay parked with the new reason."""
    cfg = _config(config)
    if not cfg.sync.url:
        raise EdgeTwinError("sync.url is empty: there is no upstream to retry")
    client = FhirClient(cfg.sync)
    try:
        with (
            Store(cfg.store.path, cfg.store.synchronous) as store,
            FhirSync(store, client, cfg.gateway.id, cfg.sync) as sync,
        ):
            accepted, refused = sync.retry_parked()
    finally:
        client.close()
    console.print(f"{accepted} accepted, {refused} still refused")


displays_app = typer.Typer(
    help="Bedside displays and buzzers on the broker: the patients whose alarms each shows.",
    no_args_is_help=True,
)
app.add_typer(displays_app, name="displays")


@displays_app.command("add")
def displays_add(
    name: Annotated[str, typer.Argument(help="The display's broker user name.")],
    patient: Annotated[list[str], typer.Option(help="A patient whose alarms it shows (repeat).")],
    config: ConfigOpt = None,
    by: ByOpt = None,
    as_json: JsonLines = False,
) -> None:
    """Bind a display to its patients; where the gateway manages its broker (broker.dir),
    give it its own credential (shown once) and rewrite the ACL. Otherwise give it a
    broker password by hand and install the ACL that `edge-twin displays acl` prints."""
    from edge_twin.provisioning import actor, add_display

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        d, access = add_display(store, cfg, name, patient, SystemClock().now(), by or actor())
    if not as_json:
        console.print(f"display {d.name}: {', '.join(sorted(d.patients))}")
    if access is not None:
        _show_access(access, as_json)


@displays_app.command("list")
def displays_list(config: ConfigOpt = None, as_json: JsonLines = False) -> None:
    """The displays and their patients."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        listed = displays.listing(store)
    if as_json:
        for d in listed:
            row = {"name": d.name, "patients": sorted(d.patients), "disabled": d.disabled}
            print(json.dumps(row))
        return
    table = Table("display", "patients", "disabled")
    for d in listed:
        table.add_row(d.name, ", ".join(sorted(d.patients)), "yes" if d.disabled else "")
    console.print(table)


@displays_app.command("disable")
def displays_disable(
    name: Annotated[str, typer.Argument(help="The display.")],
    config: ConfigOpt = None,
    by: ByOpt = None,
) -> None:
    """Refuse the display's commands from now on and revoke its broker credential."""
    from edge_twin.provisioning import actor, disable_display

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        disable_display(store, cfg, name, SystemClock().now(), by or actor())
    console.print(f"display {name}: disabled")


@displays_app.command("acl")
def displays_acl(config: ConfigOpt = None) -> None:
    """Print the broker's ACL for this gateway: devices write only their own topics, the
    gateway user reads them, each enabled display reads only its patients' alarms."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        bound = {d.name: d.patients for d in displays.listing(store) if not d.disabled}
    print(acl_rules(cfg.mqtt.topic_prefix, cfg.mqtt.username or "gateway", bound), end="")


credentials_app = typer.Typer(
    help="Broker credentials of devices and displays: list, rotate, revoke, the log.",
    no_args_is_help=True,
)
app.add_typer(credentials_app, name="credentials")


@credentials_app.command("list")
def credentials_list(config: ConfigOpt = None, as_json: JsonLines = False) -> None:
    """The broker's users (devices, displays, the gateway): when issued, whether revoked."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        listed = credentials.listing(store)
    rows = [
        {
            "username": c.username,
            "kind": c.kind.value,
            "issued_at": to_iso(c.issued_at),
            "revoked_at": None if c.revoked_at is None else to_iso(c.revoked_at),
        }
        for c in listed
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table("user", "kind", "issued", "revoked")
    for row in rows:
        table.add_row(row["username"], row["kind"], row["issued_at"], row["revoked_at"] or "")
    console.print(table)


@credentials_app.command("rotate")
def credentials_rotate(
    username: Annotated[str, typer.Argument(help="The device or display.")],
    config: ConfigOpt = None,
    by: ByOpt = None,
    as_json: JsonLines = False,
) -> None:
    """A new password for a device or display (shown once); the old one stops working
    when the broker re-reads its files."""
    from edge_twin.provisioning import actor, rotate

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        access = rotate(store, cfg, username, SystemClock().now(), by or actor())
    _show_access(access, as_json)


@credentials_app.command("revoke")
def credentials_revoke(
    username: Annotated[str, typer.Argument(help="The device or display.")],
    config: ConfigOpt = None,
    by: ByOpt = None,
) -> None:
    """Remove a credential from the broker (a lost or stolen device); the binding stays."""
    from edge_twin.provisioning import actor, revoke

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        revoke(store, cfg, username, SystemClock().now(), by or actor())
    console.print(f"{username}: credential revoked")


@credentials_app.command("log")
def credentials_log(
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonLines = False,
) -> None:
    """Who provisioned, unprovisioned, issued, rotated or revoked what, newest first."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        entries = credentials.history(store, limit)
    if as_json:
        for e in entries:
            print(json.dumps({**asdict(e), "at": to_iso(e.at)}))
        return
    table = Table("at", "who", "action", "subject", "detail")
    for e in entries:
        table.add_row(to_iso(e.at), _literal(e.actor), e.action, e.subject, _literal(e.detail))
    console.print(table)


uploader_app = typer.Typer(
    help="Phones that upload like a Nightscout client (xDrip+, Juggluco, Loop): their secrets.",
    no_args_is_help=True,
)
app.add_typer(uploader_app, name="uploader")


@uploader_app.command("issue")
def uploader_issue(
    device_id: Annotated[str, typer.Argument(help="The phone, provisioned first as a cgm.")],
    config: ConfigOpt = None,
    by: ByOpt = None,
    as_json: JsonLines = False,
) -> None:
    """A new upload secret for a provisioned phone (shown once, with the URL to enter in
    its app); an earlier secret stops at once."""
    from edge_twin.provisioning import actor, issue_uploader, qr

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        access = issue_uploader(store, cfg, device_id, SystemClock().now(), by or actor())
    if as_json:
        print(json.dumps({**asdict(access), "xdrip_url": access.xdrip_url}))
        return
    console.print(
        _literal(
            f"Nightscout URL  {access.base_url}\nAPI secret      {access.secret}\n"
            f"xDrip+ Base URL {access.xdrip_url}",
            lines=True,
        )
    )
    console.print(Text(qr(access.xdrip_url)))
    err.print("the secret is shown once; edge-twin uploader issue gives a new one")


@uploader_app.command("revoke")
def uploader_revoke(
    device_id: Annotated[str, typer.Argument(help="The phone.")],
    config: ConfigOpt = None,
    by: ByOpt = None,
) -> None:
    """Stop a phone's upload secret at once (a lost phone); its binding stays."""
    from edge_twin.provisioning import actor, revoke_uploader

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        revoke_uploader(store, device_id, SystemClock().now(), by or actor())
    console.print(f"{device_id}: upload secret revoked")


@uploader_app.command("list")
def uploader_list(config: ConfigOpt = None, as_json: JsonLines = False) -> None:
    """Phones with an upload secret: their patient, when issued, whether revoked."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        listed = uploaders.listing(store)
    rows = [
        {
            "device_id": u.device_id,
            "patient_id": u.patient_id,
            "issued_at": to_iso(u.issued_at),
            "revoked_at": None if u.revoked_at is None else to_iso(u.revoked_at),
        }
        for u in listed
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table("device", "patient", "issued", "revoked")
    for row in rows:
        table.add_row(
            row["device_id"], row["patient_id"], row["issued_at"], row["revoked_at"] or ""
        )
    console.print(table)


broker_app = typer.Typer(
    help="The gateway's own mosquitto: its CA, TLS certificate, drop-in and files.",
    no_args_is_help=True,
)
app.add_typer(broker_app, name="broker")


@broker_app.command("setup")
def broker_setup(
    config: ConfigOpt = None,
    dropin: Annotated[Path, typer.Option(help="Where mosquitto reads the drop-in.")] = Path(
        "/etc/mosquitto/conf.d/edge-twin.conf"
    ),
) -> None:
    """As root, at install and upgrade: the gateway's CA (once), the broker's TLS server
    certificate (renewed within 30 days of expiry) and mosquitto's drop-in. Idempotent."""
    import datetime as dt

    from edge_twin.provisioning import setup_broker

    cfg = _config(config)
    done = setup_broker(cfg, dropin, dt.datetime.now(dt.UTC))
    for line in done or ["nothing to do"]:
        console.print(_literal(line))


@broker_app.command("sync")
def broker_sync(config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Write the broker's password file and ACL from the store, the gateway's own
    credential (mqtt.password) included; the broker re-reads them on SIGHUP."""
    from edge_twin.provisioning import actor, sync_gateway_credential

    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        changed = sync_gateway_credential(store, cfg, SystemClock().now(), by or actor())
    console.print(
        f"broker files written to {cfg.broker.dir}"
        + ("; the gateway's credential changed" if changed else "")
    )


users_app = typer.Typer(
    help="Users of the API and pages: roles, passwords, tokens, one-time login links.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="The user's name.")],
    role: Annotated[str, typer.Option(help="patient, care_team or engineer.")],
    patient: Annotated[
        list[str] | None,
        typer.Option(help="A patient they may see (repeat; a patient user: their own)."),
    ] = None,
    all_patients: Annotated[
        bool, typer.Option("--all-patients", help="A care team that sees every patient.")
    ] = False,
    password_stdin: PasswordStdin = False,
    config: ConfigOpt = None,
) -> None:
    """Add a user with a role; the password is asked for (or read from stdin)."""
    try:
        kind = Role(role)
    except ValueError:
        raise EdgeTwinError(f"role {role!r}: use patient, care_team or engineer") from None
    cfg = _config(config)
    secret = _password(password_stdin)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        for pid in patient or []:
            if not devices.patient_exists(store, pid):
                raise EdgeTwinError(f"unknown patient {pid!r} (provision a device for it first)")
        u = users.add(
            store,
            username,
            kind,
            secret,
            SystemClock().now(),
            frozenset(patient or []),
            all_patients,
        )
    console.print(f"user {u.username}: {u.role.value}")


@users_app.command("list")
def users_list(
    config: ConfigOpt = None,
    as_json: JsonLines = False,
) -> None:
    """The users, their roles and the patients each may see."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        listed = users.listing(store)
    if as_json:
        for u in listed:
            seen: str | list[str] = "all" if u.all_patients else sorted(u.patients)
            print(
                json.dumps(
                    {
                        "username": u.username,
                        "role": u.role.value,
                        "patients": seen,
                        "disabled": u.disabled,
                    }
                )
            )
        return
    table = Table("user", "role", "patients", "disabled")
    for u in listed:
        shown = "all" if u.all_patients else ", ".join(sorted(u.patients)) or "-"
        table.add_row(u.username, u.role.value, shown, "yes" if u.disabled else "")
    console.print(table)


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument(help="The user.")],
    days: Annotated[float, typer.Option(min=0.01, max=3650, help="Valid this long.")] = 365,
    label: Annotated[str, typer.Option(help="What it is for (a display, a script).")] = "",
    config: ConfigOpt = None,
) -> None:
    """Issue an API token (Authorization: Bearer), printed once: the store keeps its hash."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        if users.get(store, username) is None:
            raise EdgeTwinError(f"no user {username!r}")
        token = users.issue(
            store, username, users.Kind.TOKEN, days * 86400, SystemClock().now(), label
        )
    print(token)


@users_app.command("link")
def users_link(
    username: Annotated[str, typer.Argument(help="The user.")],
    minutes: Annotated[float, typer.Option(min=1, max=60, help="Valid this long.")] = 10,
    config: ConfigOpt = None,
) -> None:
    """A one-time login link (e.g. for the tablet by a patient's bed), printed once."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        if users.get(store, username) is None:
            raise EdgeTwinError(f"no user {username!r}")
        code = users.issue(store, username, users.Kind.CODE, minutes * 60, SystemClock().now())
    scheme = "https" if cfg.api.tls_cert else "http"
    print(f"{scheme}://{cfg.api.host}:{cfg.api.port}/login/link?code={code}")


@users_app.command("passwd")
def users_passwd(
    username: Annotated[str, typer.Argument(help="The user.")],
    password_stdin: PasswordStdin = False,
    config: ConfigOpt = None,
) -> None:
    """Set a new password (ends the user's sessions)."""
    cfg = _config(config)
    secret = _password(password_stdin)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        users.set_password(store, username, secret)
    console.print(f"password of {username} changed")


@users_app.command("disable")
def users_disable(
    username: Annotated[str, typer.Argument(help="The user.")],
    config: ConfigOpt = None,
) -> None:
    """Disable a user: their sessions and tokens end at once."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        users.disable(store, username)
    console.print(f"{username} disabled")


@app.command("export")
def export_cmd(
    since: Annotated[str, typer.Option(help="From this event time (ISO 8601 with offset).")],
    until: Annotated[str | None, typer.Option(help="Up to this event time (default: now).")] = None,
    patient: Annotated[str | None, typer.Option(help="Only this patient.")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(help=f"Only these kinds ({', '.join(KINDS)}); repeat the option."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write to this file (default: standard output).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Export the forecasts the twin issued (with the readings that came), alarm audit
    events and risk assessments as JSON lines, to score the gateway with your own tools."""
    cfg = _config(config)
    try:
        start = parse_time(since)
        end = SystemClock().now() if until is None else parse_time(until)
    except ValueError as exc:
        raise EdgeTwinError(str(exc)) from None
    kinds = tuple(kind) if kind else KINDS
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise EdgeTwinError(f"unknown kind {', '.join(unknown)} (known: {', '.join(KINDS)})")
    if not cfg.store.path.exists():
        raise EdgeTwinError(f"no store at {cfg.store.path}: nothing to export (store.path?)")
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        if out is None:
            written = export(store, sys.stdout, start, end, patient, kinds)
        else:
            with out.open("w", encoding="utf-8") as handle:
                written = export(store, handle, start, end, patient, kinds)
    summary = ", ".join(f"{written[k]} {k}" for k in kinds)
    err.print(f"exported {summary} ({to_iso(start)} .. {to_iso(end)})")


@app.command("backup")
def backup_cmd(
    config: ConfigOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(help="The archive to write (default: backups/ beside the store)."),
    ] = None,
    keep: Annotated[
        int, typer.Option(min=1, help="Archives kept in the default directory (oldest go).")
    ] = 7,
    as_json: JsonLines = False,
) -> None:
    """Back up the store (a consistent copy while the gateway runs) and the installed
    risk models into one archive, created 0600, with a manifest of checksums."""
    from edge_twin import backup

    cfg = _config(config)
    now = SystemClock().now()
    target = out or backup.default_archive(cfg, now)
    manifest = backup.backup(cfg, target, now)
    pruned = [] if out is not None else backup.prune(cfg, keep)
    size = sum(m.size for m in manifest.members)
    if as_json:
        print(
            json.dumps(
                {"archive": str(target), "pruned": [str(p) for p in pruned], **asdict(manifest)}
            )
        )
        return
    console.print(
        _literal(
            f"{target}: {len(manifest.members)} files, {size / 2**20:.1f} MiB before"
            f" compression, schema {manifest.schema[-1] if manifest.schema else 'empty'}"
        )
    )
    for path in pruned:
        console.print(_literal(f"removed the older {path.name}"))


@app.command("restore")
def restore_cmd(
    archive: Annotated[Path, typer.Argument(help="An archive written by edge-twin backup.")],
    config: ConfigOpt = None,
) -> None:
    """Restore a backup in place of the store and models (stop the gateway first): the
    archive is verified against its checksums, a store from a newer edge-twin is refused,
    the current store is kept aside, and the restored one is migrated. Where the gateway
    manages its broker, its password file and ACL are rewritten from the restored store
    (with this gateway's own credential)."""
    from edge_twin import backup
    from edge_twin.provisioning import actor, sync_gateway_credential

    cfg = _config(config)
    manifest, kept = backup.restore(cfg, archive, SystemClock().now())
    console.print(
        _literal(
            f"restored {cfg.store.path} from {archive} (gateway {manifest.gateway_id},"
            f" made {manifest.created_at} by edge-twin {manifest.edge_twin_version})"
        )
    )
    if kept is not None:
        console.print(_literal(f"the store that was there is kept as {kept}"))
    if cfg.broker.dir:
        # The restored store's broker users, with this gateway's own credential: the
        # broker's password file and ACL follow the store (it re-reads them on SIGHUP).
        try:
            with Store(cfg.store.path, cfg.store.synchronous) as store:
                sync_gateway_credential(store, cfg, SystemClock().now(), actor())
            console.print(
                _literal(
                    f"the broker's password file and ACL in {cfg.broker.dir}"
                    " are the restored store's"
                )
            )
        except EdgeTwinError as exc:
            err.print(_literal(f"warning: {exc}; then run edge-twin broker sync"))


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Create or upgrade the SQLite store to the current schema."""
    cfg = _config(config)
    with Store(cfg.store.path, cfg.store.synchronous) as store:
        console.print(f"{cfg.store.path}: schema {', '.join(store.schema_version())}")


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Self-check for field engineers: config, store, risk model, broker (edge-twin doctor
    checks everything). Exit 1 if any fails."""
    from edge_twin import doctor as checks

    failures = 0

    def line(ok: bool, what: str, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        mark = ("ok   ", "green") if ok else ("FAIL ", "red")
        console.print(Text.assemble(mark, f"{what}: ", _literal(detail)))

    try:
        cfg = _config(config)
        line(True, "config", str(config or "defaults + environment"))
    except EdgeTwinError as exc:
        line(False, "config", str(exc))
        raise typer.Exit(1) from None
    path = cfg.store.path
    if not path.exists():
        # A check creates nothing: a typo in store.path must not pass as a fresh store.
        line(False, "store", f"{path} does not exist (edge-twin migrate creates it)")
    else:
        try:
            with Store(path, cfg.store.synchronous, migrate=False) as store:
                pending = store.pending_migrations()
                applied = store.schema_version()
            line(
                not pending,
                "store",
                f"{path} schema {applied[-1] if applied else 'empty'}"
                + (f"; {len(pending)} migrations pending (edge-twin migrate)" if pending else ""),
            )
        except EdgeTwinError as exc:
            line(False, "store", str(exc))
    for found in (checks.model_check(cfg), checks.broker_check(cfg)):
        line(found.status is not checks.Status.FAIL, found.name, found.detail)
    if failures:
        raise typer.Exit(1)


@app.command()
def doctor(config: ConfigOpt = None, as_json: JsonLines = False) -> None:
    """Is this gateway fit to watch patients? One line a check (config and store file
    modes, store schema and integrity, disk, clock sync, risk model, broker, TLS
    certificate, upstream FHIR server, service hardening), each failure with its fix.
    Exit 1 if any fails."""
    from edge_twin import doctor as checks

    cfg = _config(config)
    findings = checks.run_all(cfg, config or checks.config_path_from_env())
    for f in findings:
        if as_json:
            print(
                json.dumps(
                    {"check": f.name, "status": f.status.value, "detail": f.detail, "fix": f.fix}
                )
            )
            continue
        mark = {"ok": ("ok   ", "green"), "fail": ("FAIL ", "red"), "skip": ("skip ", "dim")}
        console.print(Text.assemble(mark[f.status.value], f"{f.name}: ", _literal(f.detail)))
        if f.fix:
            console.print(Text.assemble("     fix: ", _literal(f.fix)))
    if any(f.status is checks.Status.FAIL for f in findings):
        raise typer.Exit(1)


def _literal(untrusted: str, lines: bool = False) -> Text:
    """Device-supplied text, shown as is: no Rich markup or emoji codes, and control
    characters (terminal escapes) written out as \\xNN instead of reaching the terminal
    (``lines``: line breaks kept)."""
    return Text(
        "".join(c if c.isprintable() or (lines and c == "\n") else repr(c)[1:-1] for c in untrusted)
    )


def run_console(typer_app: typer.Typer) -> None:
    """A console entry point: errors of ours become one clear line and exit status 1."""
    try:
        typer_app()
    except EdgeTwinError as exc:
        # The message as it is: "[mqtt]" in a hint is a config section, not markup.
        err.print(Text.assemble(("error: ", "red"), _literal(str(exc), lines=True)))
        raise SystemExit(1) from None


def main() -> None:
    run_console(app)
