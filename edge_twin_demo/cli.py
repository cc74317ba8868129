"""``edge-twin-demo``: a simulated home through the whole gateway pipeline.

The one entry that sees both the gateway (``edge_twin``) and the simulator
(``firmware_sim``): the gateway itself never imports the simulator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge_twin.cli import ConfigOpt, run_console
from edge_twin.config import load_config
from edge_twin_demo.run import STORY_SEED, DemoOptions, DemoSummary, run_demo

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)


@app.command()
def demo(
    config: ConfigOpt = None,
    patients: Annotated[int, typer.Option(min=1, max=500, help="Patients in the home.")] = 4,
    hours: Annotated[float, typer.Option(min=0.5, max=24 * 90, help="Simulated hours.")] = 12.0,
    speed: Annotated[
        float, typer.Option(min=1.0, help="Simulated seconds per wall-clock second.")
    ] = 1440.0,
    seed: Annotated[
        int, typer.Option(help="Simulator seed: same seed, same home (the default tells a story).")
    ] = STORY_SEED,
    history_days: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=120.0,
            help="Days of the home's history replayed at speed before the live hours.",
        ),
    ] = 30.0,
    db: Annotated[Path, typer.Option(help="SQLite file to (re)create and leave behind.")] = Path(
        "var/demo.sqlite"
    ),
    api_port: Annotated[
        int, typer.Option(help="Dashboard/API port (a free one if taken; 0: any).")
    ] = 8080,
    broker: Annotated[
        str | None,
        typer.Option(help="Use this broker HOST:PORT instead of starting a private mosquitto."),
    ] = None,
    fhir: Annotated[
        bool,
        typer.Option(
            "--fhir/--no-fhir",
            help="Start a FHIR test server and sync the home to it (unless sync.url is set:"
            " then sync goes there).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulate a home of patients through the whole pipeline at accelerated time.

    Starts a private mosquitto, the gateway and its API, and a FHIR test server the
    gateway syncs to; publishes the simulated devices' readings, and prints what flowed and
    what reached the FHIR server. The SQLite file is left for inspection."""
    broker_addr = None
    if broker is not None:
        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit():
            raise typer.BadParameter("use HOST:PORT", param_hint="--broker")
        broker_addr = (host, int(port))
    options = DemoOptions(
        patients=patients,
        hours=hours,
        speed=speed,
        seed=seed,
        history_days=history_days,
        db=db,
        api_port=api_port,
        broker=broker_addr,
        fhir=fhir,
    )
    cfg = load_config(config)
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
    ) as progress:
        task = progress.add_task("home", total=1.0)
        if history_days:
            progress.console.print(
                f"replaying {history_days:g} days of history through the gateway's pipeline"
            )

        def started(link: str, n: int) -> None:
            progress.console.print(
                f"dashboard (a one-time login link): {link}\n({n} messages, {patients}"
                f" patients, {hours:g} h at {speed:g}x)"
            )

        summary = run_demo(
            options,
            cfg,
            on_start=started,
            on_progress=lambda f: progress.update(task, completed=f),
            on_history=lambda f: progress.update(task, completed=f),
        )
    if as_json:
        print(json.dumps(summary.as_json()))
        return
    table = Table(
        title=f"Twin (95% interval) vs truth at the end of {summary.simulated_hours:g} simulated"
        " hours"
    )
    for column in ("patient", "conditions", "readings", "glucose", "heart rate", "systolic"):
        table.add_column(column)
    table.add_column("weight")
    table.add_column("P(glucose<70 in 30 min)")
    table.add_column("HF risk (confidence)")
    for p in summary.patients:

        def cell(signal: str, digits: int = 0, p: Any = p) -> str:
            s = p.signals.get(signal)
            if s is None:
                return "-"
            stale = " stale" if s.stale else ""
            return f"{s.twin:.{digits}f}±{1.96 * s.sd:.{digits}f} ({s.truth:.{digits}f}){stale}"

        table.add_row(
            p.patient_id,
            ", ".join(p.conditions) or "-",
            str(p.readings),
            cell("glucose"),
            cell("heart_rate"),
            cell("systolic"),
            cell("weight", 1),
            "-" if p.p_low_30min is None else f"{100 * p.p_low_30min:.1f}%",
            "-"
            if p.decompensation_risk is None
            else f"{100 * p.decompensation_risk:.0f}% ({p.risk_confidence})",
        )
    console.print(table)
    quarantined = sum(summary.quarantined.values())
    console.print(
        f"messages published {summary.published}, ingested {summary.ingested_messages};"
        f" readings stored {summary.readings_stored} (duplicates {summary.duplicates});"
        f" quarantined {quarantined}; twin estimates {summary.estimates}\n"
        "alarms: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary.alarms.items())) or "none")
        + "\n"
        + _story(summary)
        + _sync_line(summary)
        + f"\nwall time {summary.wall_s:g} s; SQLite left at {summary.db}"
        + f"\nlog in again as {summary.login.get('username')}, password"
        f" {summary.login.get('password')} (edge-twin serve --store {summary.db} shows it later)"
    )


def _story(summary: DemoSummary) -> str:
    """The labelled episodes of the simulated truth and whether the gateway saw them
    coming: what a newcomer should look at on the pages."""
    lines = []
    for e in summary.episodes:
        what = "lows" if e.kind == "hypoglycaemia" else "decompensation"
        lead = e.lead_min
        if e.alarm is None or lead is None:
            seen = "no alarm before its peak"
        elif lead >= 2 * 24 * 60:
            seen = f"{e.alarm.replace('_', ' ')} alarm {lead / 1440:.1f} days before its peak"
        elif e.kind == "hypoglycaemia":
            seen = f"{e.alarm.replace('_', ' ')} alarm {lead:.0f} min before its lowest"
        else:
            seen = f"{e.alarm.replace('_', ' ')} alarm {lead / 60:.1f} h before its peak"
        lines.append(
            f"  {e.patient_id} {what} (truth: {e.onset[:16]} to {e.peak[:16]} UTC): {seen};"
            f" page /patients/{e.patient_id}/view?days=30"
        )
    if not lines:
        return ""
    return "what the simulated truth held, and the gateway's alarms:\n" + "\n".join(lines) + "\n"


def _sync_line(summary: DemoSummary) -> str:
    if not summary.sync_url:
        return "FHIR sync: off"
    held = ", ".join(f"{k} {n}" for k, n in summary.sync.items())
    pending = ", ".join(f"{k} {n}" for k, n in summary.sync_pending.items())
    return (
        f"FHIR sync to {summary.sync_url}: "
        + (f"the server holds {held}" if held else "sent (server counts not shown)")
        + (f"; still to send: {pending}" if pending else "")
    )


def main() -> None:
    run_console(app)
