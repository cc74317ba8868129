"""``firmware-sim``: simulated patients and their devices.

firmware-sim devices   the home's devices, to provision them on a gateway
firmware-sim run       publish the home over MQTT at 1x or accelerated time
firmware-sim cohort    write a cohort (messages, truth, episodes) to files
firmware-sim plot      a PNG of one patient: truth vs devices, labelled episodes
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from firmware_sim.cohort import DEFAULT_START, write_cohort
from firmware_sim.devices.cgm import CgmSpec
from firmware_sim.home import DeviceClock, Home
from firmware_sim.physiology.profile import CohortMix
from firmware_sim.publisher import HomePublisher, SimError, paced_by
from firmware_sim.transport import TransportFaults

app = typer.Typer(
    help="Simulated patients, their sensor firmware and home-network faults.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

Patients = Annotated[int, typer.Option(min=1, max=10_000, help="Patients in the home.")]
Hours = Annotated[float, typer.Option(min=0.1, help="Simulated hours.")]
Seed = Annotated[int, typer.Option(help="Same seed, same patients and readings.")]
Start = Annotated[
    float | None,
    typer.Option(help="Simulated start, epoch seconds (default: now minus --hours)."),
]


PDrop = Annotated[float, typer.Option(min=0.0, max=1.0, help="P(message lost in transport).")]
PDup = Annotated[float, typer.Option(min=0.0, max=1.0, help="P(message sent twice).")]
PReorder = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="P(message delivered after 1-5 later ones).")
]
Offline = Annotated[
    float, typer.Option(min=0.0, help="Offline periods per device-day (30-240 min, backfilled).")
]
PMalformed = Annotated[float, typer.Option(min=0.0, max=1.0, help="P(payload corrupted).")]
Storms = Annotated[
    float,
    typer.Option(
        min=0.0, help="Home Wi-Fi outages per day: all devices reconnect and backfill at once."
    ),
]
Skew = Annotated[float, typer.Option(help="Device clock offset, seconds (+ ahead, - behind).")]
Drift = Annotated[float, typer.Option(help="Device clock drift, parts per million.")]


def _network(
    p_drop: float,
    p_duplicate: float,
    p_reorder: float,
    offline: float,
    p_malformed: float,
    home_outages: float,
    clock_skew_s: float,
    clock_drift_ppm: float,
) -> dict[str, Any]:
    """The fault options shared by `run` and `cohort`, as Home's keyword arguments."""
    return {
        "faults": TransportFaults(
            p_drop=p_drop,
            p_duplicate=p_duplicate,
            p_reorder=p_reorder,
            offline_per_day=offline,
            p_malformed=p_malformed,
            home_outages_per_day=home_outages,
        ),
        "clock": DeviceClock(clock_skew_s, clock_drift_ppm),
    }


class _SimClock:
    """Accelerated simulated time: start + speed * wall seconds since construction."""

    def __init__(self, start: float, speed: float) -> None:
        self.start, self.speed, self._wall0 = start, speed, time.monotonic()

    def wall_seconds_until(self, t: float) -> float:
        return max(0.0, (t - self.start) / self.speed - (time.monotonic() - self._wall0))


def _start(start: float | None, hours: float) -> float:
    return start if start is not None else math.floor(time.time() / 60) * 60 - hours * 3600


@app.command()
def devices(
    patients: Patients = 4, hours: Hours = 12.0, seed: Seed = 1, start: Start = None
) -> None:
    """Print the home's devices as JSON lines: device_id, patient_id, device_type."""
    home = Home(patients, _start(start, hours), hours, seed)
    for d in home.devices:
        print(
            json.dumps(
                {"device_id": d.device_id, "patient_id": d.patient_id, "device_type": d.device_type}
            )
        )


@app.command()
def run(
    host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    patients: Patients = 4,
    hours: Hours = 12.0,
    seed: Seed = 1,
    start: Start = None,
    speed: Annotated[
        float,
        typer.Option(help="Simulated seconds per wall second; 0 publishes as fast as possible."),
    ] = 1.0,
    prefix: Annotated[str, typer.Option(help="Topic prefix (docs/wire-contract.md).")] = "et/v1",
    p_drop: PDrop = 0.0,
    p_duplicate: PDup = 0.0,
    p_reorder: PReorder = 0.0,
    offline_per_day: Offline = 0.0,
    p_malformed: PMalformed = 0.0,
    home_outages_per_day: Storms = 0.0,
    clock_skew_s: Skew = 0.0,
    clock_drift_ppm: Drift = 0.0,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="JSON lines as `edge-twin provision --json` prints them (username, password):"
            " each device logs in with its own."
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(help="Connect with TLS, trusting this CA (the gateway's ca.crt)."),
    ] = None,
) -> None:
    """Publish the home's messages over MQTT (QoS 1), one MQTT client per device, with
    the transport faults asked for."""
    t0 = _start(start, hours)
    network = _network(
        p_drop,
        p_duplicate,
        p_reorder,
        offline_per_day,
        p_malformed,
        home_outages_per_day,
        clock_skew_s,
        clock_drift_ppm,
    )
    home = Home(patients, t0, hours, seed, prefix=prefix, **network)
    messages = home.messages()
    pace = paced_by(_SimClock(t0, speed)) if speed > 0 else None
    passwords = None
    if credentials is not None:
        rows = [json.loads(line) for line in credentials.read_text().splitlines() if line.strip()]
        passwords = {str(r["username"]): str(r["password"]) for r in rows}
        missing = [d.device_id for d in home.devices if d.device_id not in passwords]
        if missing:
            err.print(f"[red]error:[/] no credential for {', '.join(missing)} in {credentials}")
            raise typer.Exit(1)
    ca = None if ca_file is None else str(ca_file)
    try:
        with (
            HomePublisher(
                host, port, home.devices, prefix=prefix, passwords=passwords, ca_cert=ca
            ) as publisher,
            Progress(console=err) as bar,
        ):
            task = bar.add_task("publishing", total=len(messages))
            publisher.publish(messages, pace=pace, progress=lambda _: bar.advance(task))
    except SimError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    err.print(f"published {len(messages)} messages from {len(home.devices)} devices")


@app.command()
def cohort(
    out: Annotated[Path, typer.Option(help="Directory to write the cohort into.")],
    patients: Patients = 4,
    hours: Hours = 24.0,
    seed: Seed = 1,
    start: Annotated[
        float,
        typer.Option(help="Simulated start, epoch seconds (fixed default: reproducible files)."),
    ] = DEFAULT_START,
    p_missing: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Probability that a CGM sample is lost.")
    ] = 0.0,
    p_drop: PDrop = 0.0,
    p_duplicate: PDup = 0.0,
    p_reorder: PReorder = 0.0,
    offline_per_day: Offline = 0.0,
    p_malformed: PMalformed = 0.0,
    home_outages_per_day: Storms = 0.0,
    clock_skew_s: Skew = 0.0,
    clock_drift_ppm: Drift = 0.0,
    jobs: Annotated[
        int, typer.Option(min=1, help="Worker processes (default: one per core).")
    ] = os.cpu_count() or 1,
) -> None:
    """Write a cohort to files: devices, messages (a capture `edge-twin replay` reads),
    true state per minute and labelled episodes. Same seed, same bytes."""
    network = _network(
        p_drop,
        p_duplicate,
        p_reorder,
        offline_per_day,
        p_malformed,
        home_outages_per_day,
        clock_skew_s,
        clock_drift_ppm,
    )
    home = Home(patients, start, hours, seed, cgm=CgmSpec(p_missing=p_missing), **network)
    t0 = time.monotonic()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("simulating", total=patients)
        counts = write_cohort(home, out, lambda _: bar.advance(task), jobs=jobs)
    err.print(
        f"wrote {out}: {counts['patients']} patients, {counts['messages']} messages,"
        f" {counts['records']} readings, {counts['episodes']} episodes"
        f" in {time.monotonic() - t0:.1f} s"
    )


@app.command()
def plot(
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("patient.png"),
    days: Annotated[float, typer.Option(min=1.0, help="Simulated days.")] = 30.0,
    seed: Seed = 7,
    patient: Annotated[int, typer.Option(min=1, help="Which patient of the home (1-based).")] = 1,
    heart_failure: Annotated[float, typer.Option(help="Fraction with heart failure.")] = 1.0,
    diabetes: Annotated[float, typer.Option(help="Fraction with diabetes.")] = 1.0,
    type1: Annotated[float, typer.Option(help="Fraction of diabetics with type 1.")] = 1.0,
) -> None:
    """Plot one patient's truth against what its devices sent, with labelled episodes."""
    from firmware_sim.plot import plot_patient

    mix = CohortMix(heart_failure=heart_failure, diabetes=diabetes, type1_given_diabetes=type1)
    home = Home(patient, DEFAULT_START, days * 24, seed, mix=mix)
    written = plot_patient(home.patient(patient - 1), out)
    err.print(f"wrote {written}")


def main() -> None:
    app()
