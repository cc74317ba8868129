"""The installed console scripts, run as a field engineer would."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from edge_twin import cli as edge_twin_cli
from edge_twin.broker import PrivateBroker
from edge_twin.store import Store
from firmware_sim import cli as firmware_sim_cli
from tests.conftest import PASSWORD, api_user

BIN = Path(sys.executable).parent


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=full_env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def commands(typer_app: typer.Typer) -> list[str]:
    """The commands the app really has, so a new one cannot go undocumented."""
    top = getattr(typer.main.get_command(typer_app), "commands", {})
    assert top, "the app has no subcommands?"
    names = []
    for name, command in sorted(top.items()):
        group = getattr(command, "commands", None)  # a command group: its subcommands
        names += [f"{name} {sub}" for sub in sorted(group)] if group else [name]
    return names


EDGE_TWIN_COMMANDS = commands(edge_twin_cli.app)
SIM_COMMANDS = commands(firmware_sim_cli.app)


def test_help_describes_every_command() -> None:
    # The installed console scripts answer --help ...
    out = cli("edge-twin", "--help").stdout
    sim = cli("firmware-sim", "--help").stdout
    runner = CliRunner()
    for app, top, names in (
        (edge_twin_cli.app, out, EDGE_TWIN_COMMANDS),
        (firmware_sim_cli.app, sim, SIM_COMMANDS),
    ):
        for command in names:
            assert command.split()[0] in top
            # ... and so does every subcommand, with a description and its options.
            result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
            assert result.exit_code == 0, result.output
            assert "Usage" in result.output
            assert len(result.output.splitlines()) > 3


def test_provision_devices_and_a_clear_error(tmp_path: Path) -> None:
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "gw.sqlite")}
    cli("edge-twin", "provision", "cgm-9", "pt-9", "--type", "cgm", env=env)
    listed = cli("edge-twin", "devices", env=env).stdout
    assert "cgm-9" in listed
    assert "pt-9" in listed
    again = cli("edge-twin", "provision", "cgm-9", "pt-8", "--type", "cgm", env=env, check=False)
    assert again.returncode == 1
    assert "already bound to patient pt-9" in again.stderr
    assert "Traceback" not in again.stderr
    state = json.loads(cli("edge-twin", "state", "pt-9", env=env).stdout)
    assert (state["patient_id"], state["signals"], state["risk"]) == ("pt-9", {}, None)


def test_bad_config_exits_with_the_fix(tmp_path: Path) -> None:
    proc = cli("edge-twin", "migrate", env={"EDGE_TWIN_MQTT_PORT": "0"}, check=False)
    assert proc.returncode == 1
    assert "mqtt.port: '0' is out of range" in proc.stderr


@pytest.mark.broker
def test_check_passes_against_a_live_broker_and_fails_without(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    env = {
        "EDGE_TWIN_STORE_PATH": str(tmp_path / "gw.sqlite"),
        "EDGE_TWIN_MQTT_PORT": str(broker.port),
    }
    # A check creates nothing: a store that is not there fails it (a typo in its path).
    missing = cli("edge-twin", "check", env=env, check=False)
    assert missing.returncode == 1
    assert "FAIL store" in missing.stdout
    assert "does not exist" in missing.stdout
    assert not (tmp_path / "gw.sqlite").exists()
    cli("edge-twin", "migrate", env=env)
    ok = cli("edge-twin", "check", env=env)
    assert "ok   store" in ok.stdout
    assert "ok   broker" in ok.stdout
    broker.stop()
    down = cli("edge-twin", "check", env=env, check=False)
    assert down.returncode == 1
    assert "FAIL broker" in down.stdout


@pytest.mark.broker
def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    proc = cli(
        "edge-twin-demo",
        "--patients",
        "2",
        "--hours",
        "2",
        "--history-days",
        "1",
        "--speed",
        "7200",
        "--db",
        str(db),
        "--api-port",
        "0",
        "--json",
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["published"] == summary["ingested_messages"] > 0
    assert summary["history_readings"] > 0  # a day replayed before the live hours
    # Every reading the devices sent was stored once, and belongs to a patient.
    assert summary["readings_stored"] == sum(p["readings"] for p in summary["patients"]) > 0
    assert summary["duplicates"] == 0
    assert sum(summary["quarantined"].values()) == 0
    assert summary["estimates"] >= len(summary["patients"]) == 2
    for patient in summary["patients"]:
        for s in patient["signals"].values():
            assert s["sd"] > 0  # every estimate carries its uncertainty
    # The care team's side: a real FHIR server the demo started holds what was sent,
    # and nothing is left to send but the hour of wrist data not over yet.
    assert summary["sync_url"].startswith("http://127.0.0.1:")
    assert summary["sync"]["Observation"] > 0
    assert 1 <= summary["sync"]["Patient"] <= 2
    assert set(summary["sync_pending"]) <= {"wrist hours not over"}
    assert db.exists()


def test_quarantine_shows_untrusted_payloads_literally(tmp_path: Path) -> None:
    capture = tmp_path / "capture.jsonl"
    hostile = "[bold red]pwned[/] :id: \x1b[31m"
    capture.write_text(
        json.dumps({"t": 1.8e9, "topic": "et/v1/dev/x/senml", "payload": hostile}) + "\n"
    )
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "q.sqlite")}
    cli("edge-twin", "replay", str(capture), env=env)
    shown = cli("edge-twin", "quarantine", env=env).stdout
    assert "[bold red]pwned[/]" in shown
    assert ":id:" in shown
    assert "\x1b[31m" not in shown  # no terminal escape from a device reaches the screen


def test_demo_refuses_to_recreate_the_gateways_own_store(tmp_path: Path) -> None:
    store = tmp_path / "gateway.sqlite"
    store.write_bytes(b"precious")
    proc = cli(
        "edge-twin-demo",
        "--db",
        str(store),
        env={"EDGE_TWIN_STORE_PATH": str(store)},
        check=False,
    )
    assert proc.returncode == 1
    assert "this gateway's store" in proc.stderr
    assert store.read_bytes() == b"precious"


def test_an_error_shows_its_section_names_and_piped_tables_are_not_cut(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[mqtt]\nprot = 1\n[mqt]\nport = 1\n")
    proc = cli("edge-twin", "migrate", "--config", str(config), check=False)
    assert proc.returncode == 1
    assert "unknown section [mqt]" in proc.stderr  # not swallowed as markup
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "gw.sqlite"), "COLUMNS": ""}
    long_patient = "patient-with-a-rather-long-identifier-0001"
    cli("edge-twin", "provision", "cgm-with-a-long-name-01", long_patient, "--type", "cgm", env=env)
    listed = subprocess.run(
        [str(BIN / "edge-twin"), "devices"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"} | env,
        timeout=60,
    ).stdout
    assert long_patient in listed  # piped: as wide as the content, never "patie…"
    rows = [
        json.loads(line)
        for line in cli("edge-twin", "devices", "--json", env=env).stdout.splitlines()
    ]
    assert [(r["device_id"], r["patient_id"]) for r in rows] == [
        ("cgm-with-a-long-name-01", long_patient)
    ]


def test_serve_shows_any_store_read_only(tmp_path: Path) -> None:
    db = tmp_path / "left-by-a-demo.sqlite"
    cli(
        "edge-twin",
        "provision",
        "cgm-7",
        "pt-7",
        "--type",
        "cgm",
        env={"EDGE_TWIN_STORE_PATH": str(db)},
    )
    engineer = api_user(db, "engineer", "eng-bo")
    care = api_user(db, "care_team", "dr-cy")
    with Store(db) as store:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    proc = subprocess.Popen(
        [str(BIN / "edge-twin"), "serve", "--store", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "EDGE_TWIN_STORE_PATH": str(tmp_path / "other")},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" at ", 1)[1].strip()
        listed = httpx.get(f"{url}/devices", headers=engineer).json()
        assert [(d["device_id"], d["patient_id"]) for d in listed] == [("cgm-7", "pt-7")]
        refused = httpx.post(
            f"{url}/patients/pt-7/alarms/low/pause", json={"minutes": 30}, headers=care
        )
        assert refused.status_code == 405
        # The pages: logging in works (the session lives in the process, not the store).
        with httpx.Client(base_url=url) as browser:
            form = {"username": "dr-cy", "password": PASSWORD}
            assert browser.post("/login", data=form).status_code == 303
            assert 'data-patient="pt-7"' in browser.get("/").text
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "access dr-cy GET / pt-7 allowed" in stderr  # the access log, in the process's
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # nothing was written
    assert not (tmp_path / "other").exists()  # and the configured store was not touched


def test_displays_and_the_broker_acl_made_from_them(tmp_path: Path) -> None:
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "gw.sqlite")}
    cli("edge-twin", "provision", "cgm-001", "pt-001", "--type", "cgm", env=env)
    unknown = cli(
        "edge-twin", "displays", "add", "bed-1", "--patient", "pt-009", env=env, check=False
    )
    assert unknown.returncode == 1
    assert "unknown patients: pt-009" in unknown.stderr
    cli("edge-twin", "displays", "add", "bed-1", "--patient", "pt-001", env=env)
    acl = cli("edge-twin", "displays", "acl", env=env).stdout
    assert "user bed-1\ntopic read et/v1/gw/+/alarms/pt-001\n" in acl
    assert "pattern write et/v1/gw/+/alarm-cmd/%u" in acl
    cli("edge-twin", "displays", "disable", "bed-1", env=env)
    assert "user bed-1" not in cli("edge-twin", "displays", "acl", env=env).stdout
    (row,) = [
        json.loads(x)
        for x in cli("edge-twin", "displays", "list", "--json", env=env).stdout.splitlines()
    ]
    assert row == {"name": "bed-1", "patients": ["pt-001"], "disabled": True}
