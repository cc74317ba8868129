"""``edge-twin run`` as a real process on a test's broker and SQLite file (durability and
fault tests): started, probed through /health, killed with SIGKILL, or stopped."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from edge_twin.broker import PrivateBroker, free_port
from edge_twin.store import Store, readings
from firmware_sim.home import Home
from firmware_sim.messages import Message
from tests.conftest import api_user, wait_until

BIN = Path(sys.executable).parent


class GatewayProcess:
    """``edge-twin run`` in its own process; its log goes to ``<db>.log`` (a file, not a
    pipe: a gateway logging a fault must never block on a pipe nobody reads)."""

    def __init__(self, broker: PrivateBroker, db: Path, **env: str) -> None:
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "EDGE_TWIN_STORE_PATH": str(db),
            "EDGE_TWIN_MQTT_PORT": str(broker.port),
            "EDGE_TWIN_MQTT_CLIENT_ID": "gw-process",
            "EDGE_TWIN_API_PORT": str(self.api_port),
            # Device times are in the past (T0): they must not count as "future".
            "EDGE_TWIN_INGEST_FUTURE_TOLERANCE_S": "86400",
            **env,
        }
        self.log_path = db.with_name(db.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth = api_user(db, "engineer", "eng-process")

    def start(self) -> None:
        # A fresh API port each start: the one a killed gateway held may be taken since.
        self.api_port = free_port()
        self.env["EDGE_TWIN_API_PORT"] = str(self.api_port)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "edge-twin"), "run"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_until(
            lambda: self.health().get("ingest", {}).get("connected") is True, 20, "gateway up"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited ({self.proc.returncode}): {self.log()[-3000:]}")
        try:
            url = f"http://127.0.0.1:{self.api_port}/health"
            return httpx.get(url, headers=self.auth, timeout=5).json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            return {}

    def limit_file_size(self, limit: int | None) -> None:
        """Files the gateway writes cannot grow past ``limit`` bytes (None: no limit):
        its writes fail as on a full disk (RLIMIT_FSIZE; Python ignores SIGXFSZ, so the
        write returns EFBIG). The soft limit only: lifting it needs no privilege."""
        assert self.proc is not None
        _, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE)
        soft = hard if limit is None else limit
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def senml(home: Home) -> list[Message]:
    """The home's reading messages (not its status or online ones)."""
    return [m for m in home.messages() if m.topic.endswith("/senml")]


def stored(db: Path) -> int:
    """Readings in the store."""
    with Store(db) as store:
        return readings.count(store)
