"""The service as systemd runs it: the unit's hardening (systemd-analyze's own score, as a
field engineer would check it) and the service manager's channel (ready, watchdog fed by
the ingest loop, stopping) on a real unix socket."""

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_twin.broker import BrokerFiles, PrivateBroker, field_config
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.gateway import Gateway
from tests.conftest import T0

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "edge-twin.service"
GOAL = 2.5  # systemd-analyze: "OK"


def test_the_unit_is_hardened_to_ok() -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    out = subprocess.run(
        [exe, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"Overall exposure level for edge-twin.service: ([\d.]+)", out)
    assert found, out[-2000:]
    assert float(found.group(1)) <= GOAL, out
    text = UNIT.read_text()
    for needed in (
        "UMask=0077",
        "WatchdogSec=",
        "Type=notify",
        "StartLimitIntervalSec=0",
        "WorkingDirectory=/var/lib/edge-twin",
        "After=network-online.target time-sync.target",
    ):
        assert needed in text


@pytest.mark.broker
def test_ready_watchdog_from_the_ingest_loop_and_stopping(
    broker: PrivateBroker,
    make_config: Callable[..., Config],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "300000")  # a beat every 0.1 s
        gateway = Gateway(make_config(broker), ManualClock(T0), serve_api=False)
        with gateway:
            got = [manager.recv(64).decode()]
            deadline = time.monotonic() + 5
            while got.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
                got.append(manager.recv(64).decode())
            ingest = gateway.ingest
            assert ingest is not None
            ingest.stop()  # the loop ends (as if its thread had died): the beats stop
            while True:
                try:
                    manager.settimeout(0.5)
                    manager.recv(64)  # what was sent before it stopped
                except TimeoutError:
                    break
            manager.settimeout(5)
        after = manager.recv(64).decode()
    assert "READY=1" in got
    assert got.count("WATCHDOG=1") >= 3
    assert after == "STOPPING=1"  # no beat in between: systemd would have restarted it


def test_the_shipped_broker_drop_in_is_what_broker_setup_writes_by_default() -> None:
    shipped = (DEPLOY / "mosquitto" / "edge-twin.conf").read_text()
    assert shipped == field_config(BrokerFiles(Path("/etc/edge-twin/broker")), 8883)


def test_the_service_may_read_whether_the_clock_is_synchronised() -> None:
    """The ingest's clock safety reads the kernel's NTP state by adjtimex(2) (no mode set):
    ProtectClock= and a filter without adjtimex would turn the answer into "cannot tell"
    (trusted), and a Pi booted offline would reject every reading as future_time."""
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    assert not any(line.startswith("ProtectClock=") for line in lines)
    filters = [line.split("=", 1)[1] for line in lines if line.startswith("SystemCallFilter=")]
    # Later lines add to or remove from the allow list in order: adjtimex after the denials.
    last_mention = max(i for i, f in enumerate(filters) if "adjtimex" in f or "@clock" in f)
    assert filters[last_mention] == "adjtimex"
    assert "CapabilityBoundingSet=" in lines  # no CAP_SYS_TIME: reading, never setting
