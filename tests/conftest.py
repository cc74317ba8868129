"""Shared fixtures: real services only.

- ``broker``: a private mosquitto (the Debian package) on a free loopback port with its own
  generated config, stopped after the test. A missing mosquitto fails the test loudly.
- ``make_config``: a validated Config pointing at the test's broker and a SQLite file in
  tmp_path.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edge_twin.api import ApiServer, create_app
from edge_twin.broker import PrivateBroker, find_mosquitto
from edge_twin.clock import Clock, ManualClock
from edge_twin.config import Config, load_config
from edge_twin.domain import Role
from edge_twin.errors import BrokerError
from edge_twin.gateway import Gateway
from edge_twin.store import Store, devices, users
from firmware_sim.home import Home
from firmware_sim.messages import Message
from firmware_sim.physiology.profile import CohortMix
from firmware_sim.publisher import HomePublisher

if TYPE_CHECKING:
    from tests.gateway_process import GatewayProcess

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z: a fixed event time for deterministic tests
EVERYONE_DIABETIC = CohortMix(heart_failure=0.0, diabetes=1.0)


@contextmanager
def fed_gateway(
    broker: PrivateBroker,
    cfg: Config,
    home: Home,
    clock: Clock,
    messages: list[Message] | None = None,
    serve_api: bool = True,
) -> Iterator[Gateway]:
    """A gateway that has ingested ``messages`` (default: all of the home's), published
    by the home's devices through ``broker``. The gateway stops on exit."""
    messages = home.messages() if messages is None else messages
    with (
        Gateway(cfg, clock, serve_api=serve_api) as gw,
        HomePublisher(broker.host, broker.port, home.devices) as pub,
    ):
        pub.publish(messages)
        ingest = gw.ingest
        assert ingest is not None
        wait_until(lambda: ingest.stats.messages >= len(messages), what="ingest")
        yield gw


PASSWORD = "correct horse battery staple"


def api_user(
    db: Path,
    role: str = "care_team",
    name: str = "nurse-ann",
    patients: tuple[str, ...] = (),
    all_patients: bool | None = None,
) -> dict[str, str]:
    """A user of the gateway's API (by default a care team that sees every patient) and
    the headers that authenticate as them."""
    everyone = role == "care_team" and not patients if all_patients is None else all_patients
    with Store(db) as store:
        users.add(store, name, Role(role), PASSWORD, T0, frozenset(patients), everyone)
        token = users.issue(store, name, users.Kind.TOKEN, 86400.0, time.time())
    return {"Authorization": f"Bearer {token}"}


def login_link(db: Path, role: str = "care_team", name: str = "dr-link") -> str:
    """A one-time login path for a browser (``/login/link?code=...``) as ``name`` (created
    with ``role`` the first time)."""
    everyone = role == "care_team"
    with Store(db) as store:
        if users.get(store, name) is None:
            users.add(store, name, Role(role), PASSWORD, T0, frozenset(), everyone)
        code = users.issue(store, name, users.Kind.CODE, 600.0, time.time())
    return f"/login/link?code={code}"


@contextmanager
def serving_api(cfg: Config) -> Iterator[str]:
    """The gateway's API alone (no broker, no pipeline) on a migrated store, on a free
    loopback port; yields its URL."""
    Store(cfg.store.path).close()
    server = ApiServer(create_app(cfg, ManualClock(T0)), "127.0.0.1", 0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def provision_home(db: Path, home: Home) -> None:
    """Bind every device of a simulated home to its patient on the gateway's store."""
    with Store(db) as store:
        for d in home.devices:
            devices.provision(store, d.device_id, d.patient_id, d.device_type, home.start)


def cgm_home(patients: int, hours: float, seed: int, **options: Any) -> Home:
    """A home where every patient wears a CGM and nothing else: device cgm-NNN for pt-NNN."""
    options.setdefault("start", T0)
    return Home(patients, hours=hours, seed=seed, mix=EVERYONE_DIABETIC, kinds=("cgm",), **options)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.fail(str(exc))
    b = PrivateBroker(data_dir=tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "edge-twin.sqlite"


@pytest.fixture
def gateway_process(broker: PrivateBroker, db_path: Path) -> Iterator[GatewayProcess]:
    """``edge-twin run`` as a process of its own on the test's broker and store (not
    started: the test starts, kills and restarts it); stopped after the test."""
    from tests.gateway_process import GatewayProcess  # (it imports this module)

    gw = GatewayProcess(broker, db_path)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def make_config(db_path: Path, request: pytest.FixtureRequest) -> Callable[..., Config]:
    def make(broker: PrivateBroker | None = None, **sections: dict[str, Any]) -> Config:
        cfg = load_config(env={})
        cfg = replace(
            cfg,
            store=replace(cfg.store, path=db_path),
            api=replace(cfg.api, port=0),
            assess=replace(cfg.assess, model_dir=db_path.parent / "models"),
        )
        if broker is not None:
            cfg = replace(
                cfg,
                mqtt=replace(
                    cfg.mqtt,
                    host=broker.host,
                    port=broker.port,
                    client_id=f"gw-{request.node.name}"[:60],
                ),
            )
        for name, values in sections.items():
            cfg = replace(cfg, **{name: replace(getattr(cfg, name), **values)})
        return cfg

    return make


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(0.01)


def self_signed(tmp_path: Path, days: int, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate and its key made by openssl, valid ``days`` (for TLS on loopback)."""
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            str(days),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=IP:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
