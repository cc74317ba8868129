"""Provisioning with the broker's credentials: devices get their own password from
``edge-twin provision`` and publish over TLS to the gateway's CA; another device's
credential, an anonymous client, a revoked or rotated-away password and plain text from
off the box are all refused, by a real mosquitto."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin import pki, provisioning
from edge_twin.broker import BrokerFiles, PrivateBroker, TlsListener, free_port
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.errors import ProvisioningError
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, credentials, readings, upstream
from firmware_sim import wire
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, cgm_home, wait_until
from tests.test_cli import cli

NOW = dt.datetime.now(dt.UTC)  # certificates are checked against the real clock
GATEWAY_PASSWORD = "gateway-secret-from-its-credential-file"


@pytest.fixture
def managed(
    tmp_path: Path, make_config: Callable[..., Config]
) -> Callable[[PrivateBroker | None], Config]:
    """A config whose broker files the gateway manages, set up as install.sh does."""
    tls_port = free_port()

    def make(broker: PrivateBroker | None = None) -> Config:
        cfg = make_config(broker)
        return replace(
            cfg,
            mqtt=replace(cfg.mqtt, username="gateway", password=GATEWAY_PASSWORD),
            broker=replace(
                cfg.broker,
                dir=str(tmp_path / "broker"),
                ca_key=str(tmp_path / "credentials" / "ca.key"),
                tls_port=tls_port,
                device_host="127.0.0.1",
                hash_iterations=10_000,  # the floor: tests connect often
            ),
        )

    cfg = make()
    provisioning.setup_broker(cfg, tmp_path / "conf.d" / "edge-twin.conf", NOW)
    with Store(cfg.store.path) as store:
        provisioning.sync_gateway_credential(store, cfg, T0, "installer")
    return make


@pytest.fixture
def tls_broker(tmp_path: Path, managed: Callable[..., Config]) -> Iterator[PrivateBroker]:
    cfg = managed()
    files = BrokerFiles(Path(cfg.broker.dir))
    with PrivateBroker(
        data_dir=tmp_path / "mosquitto", tls=TlsListener(cfg.broker.tls_port, files)
    ) as broker:
        yield broker


def attempt(
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    ca: Path | None,
    topic: str,
    payload: bytes,
) -> tuple[bool, int | None]:
    """(connected, PUBACK reason code) of one QoS 1 publish by this identity."""
    connected, acked = threading.Event(), threading.Event()
    result: dict[str, int] = {}

    def on_connect(c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
        result["connect"] = int(reason.value)  # type: ignore[attr-defined]
        connected.set()

    def on_publish(c: paho.Client, u: object, mid: int, reason: object, p: object) -> None:
        result["puback"] = int(reason.value)  # type: ignore[attr-defined]
        acked.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{user}",
        protocol=paho.MQTTv5,
    )
    if user is not None:
        client.username_pw_set(user, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    client.on_connect, client.on_publish = on_connect, on_publish
    try:
        client.connect(host, port)
    except (OSError, ssl.SSLError):
        return False, None
    client.loop_start()
    try:
        if not connected.wait(3) or result["connect"] != 0:
            return False, None
        client.publish(topic, payload, qos=1)
        assert acked.wait(5)
        return True, result["puback"]
    finally:
        client.disconnect()
        client.loop_stop()


def off_box_address() -> str | None:
    """This machine's address on a network (not loopback), if it has one."""
    try:
        names = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
    except OSError:
        return None
    return next((a for a in names.stdout.split() if "." in a and not a.startswith("127.")), None)


@pytest.mark.broker
def test_provisioned_devices_publish_over_tls_and_nothing_else_gets_in(
    tls_broker: PrivateBroker, managed: Callable[..., Config]
) -> None:
    cfg = managed(tls_broker)
    files = BrokerFiles(Path(cfg.broker.dir))
    home = cgm_home(patients=2, hours=1, seed=4)
    access = {}
    with Store(cfg.store.path) as store:
        for d in home.devices:
            issued = provisioning.provision_device(
                store, cfg, d.device_id, d.patient_id, "cgm", T0, "nurse-ann", consent=True
            ).access
            assert issued is not None
            access[d.device_id] = issued
        assert "pt-001" in upstream.consenting(store.conn)
    tls_broker.reload()
    first = access["cgm-001"]
    assert first.uri.startswith(
        f"mqtts://cgm-001:{first.password}@127.0.0.1:{cfg.broker.tls_port}/"
    )
    assert first.ca_sha256 == pki.fingerprint(files.ca_cert)
    passwd = files.passwd.read_text()
    assert first.password not in passwd
    assert re.search(r"^cgm-001:\$7\$10000\$", passwd, re.MULTILINE)

    tls = cfg.broker.tls_port
    forged = wire.senml_pack("cgm-002", [("glucose", "mg/dL", T0, 40.0, 1)])
    own = wire.readings_topic("cgm-001")
    with Gateway(cfg, ManualClock(home.end), serve_api=False) as gw:
        with HomePublisher(
            "127.0.0.1",
            tls,
            home.devices,
            passwords={k: a.password for k, a in access.items()},
            ca_cert=str(files.ca_cert),
        ) as pub:
            pub.publish([m for m in home.messages() if m.topic.endswith("/senml")])
        ca = files.ca_cert
        # Another device's topic (135: not authorized); anonymous; a wrong password.
        other = wire.readings_topic("cgm-002")
        assert attempt("127.0.0.1", tls, "cgm-001", first.password, ca, other, forged) == (
            True,
            135,
        )
        assert attempt("127.0.0.1", tls, None, None, ca, own, forged) == (False, None)
        assert attempt("127.0.0.1", tls, "cgm-001", "guess", ca, own, forged) == (False, None)
        # Plain text to the TLS listener; a client that trusts another CA.
        assert attempt("127.0.0.1", tls, "cgm-001", first.password, None, own, forged) == (
            False,
            None,
        )
        stranger = pki.create_ca(files.dir.parent / "x.crt", files.dir.parent / "x.key", "x", NOW)
        context = ssl.create_default_context(cafile=str(stranger.cert))
        with (
            socket.create_connection(("127.0.0.1", tls), timeout=3) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
        # Plain MQTT listens on loopback only: from the box's network address, nothing.
        address = off_box_address()
        if address is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, tls_broker.port), timeout=3).close()
        assert gw.ingest is not None
        expected = sum(len(p.cgm) for p in home.patients)
        wait_until(lambda: gw.ingest.stats.readings_new == expected, what="the devices' readings")

        # Revoked, the device is refused; rotated, the old password is refused.
        with Store(cfg.store.path) as store:
            provisioning.revoke(store, cfg, "cgm-002", T0 + 60, "nurse-ann")
            rotated = provisioning.rotate(store, cfg, "cgm-001", T0 + 60, "nurse-ann")
        tls_broker.reload()
        wait_until(
            lambda: (
                attempt("127.0.0.1", tls, "cgm-001", first.password, ca, own, b"[]")[0] is False
            ),
            what="the old password refused",
        )
        assert attempt("127.0.0.1", tls, "cgm-001", rotated.password, ca, own, b"[]")[0]
        assert attempt(
            "127.0.0.1", tls, "cgm-002", access["cgm-002"].password, ca, other, b"[]"
        ) == (False, None)
    assert (
        "listener 1883 127.0.0.1"
        in (Path(cfg.broker.dir).parent / "conf.d" / "edge-twin.conf").read_text()
    )
    with Store(cfg.store.path) as store:
        assert readings.count(store) == expected  # the forged 40 mg/dL never arrived
        log = [(e.action, e.subject) for e in credentials.history(store)]
    assert ("credential revoked", "cgm-002") in log
    assert ("credential rotated", "cgm-001") in log
    assert ("device provisioned", "cgm-001") in log
    assert ("credential issued", "gateway") in log


def test_broker_setup_is_idempotent_and_renews_only_the_server_certificate(
    managed: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = managed()
    files = BrokerFiles(Path(cfg.broker.dir))
    dropin = tmp_path / "conf.d" / "edge-twin.conf"
    ca = pki.fingerprint(files.ca_cert)
    server = pki.fingerprint(files.server_cert)
    assert provisioning.setup_broker(cfg, dropin, NOW) == []
    assert pki.fingerprint(files.server_cert) == server
    assert oct(Path(cfg.broker.ca_key).stat().st_mode & 0o777) == "0o600"
    later = NOW + dt.timedelta(days=pki.SERVER_DAYS - 10)
    done = provisioning.setup_broker(cfg, dropin, later)
    assert len(done) == 1
    assert "issued the broker's certificate" in done[0]
    assert pki.fingerprint(files.server_cert) != server
    assert pki.fingerprint(files.ca_cert) == ca  # devices keep trusting the gateway
    with pytest.raises(Exception, match="exists already"):
        pki.create_ca(files.ca_cert, Path(cfg.broker.ca_key), "gw", NOW)


def test_the_cli_provisions_rotates_revokes_and_logs(
    managed: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = managed()
    config_file = tmp_path / "gw.toml"
    config_file.write_text(
        f'[store]\npath = "{cfg.store.path}"\n'
        f'[mqtt]\nusername = "gateway"\n'
        f'[broker]\ndir = "{cfg.broker.dir}"\ntls_port = {cfg.broker.tls_port}\n'
        'device_host = "gw-kitchen.local"\nhash_iterations = 10000\n'
    )
    c = ("-c", str(config_file))
    shown = cli(
        "edge-twin",
        "provision",
        "scale-7",
        "pt-7",
        "--type",
        "scale",
        *c,
        "--set",
        "low_mgdl=75",
        "--by",
        "eng-bob",
    )
    assert "gw-kitchen.local" in shown.stdout
    assert "\u2588" in shown.stdout  # the QR code's blocks
    made = json.loads(
        cli("edge-twin", "provision", "cgm-7", "pt-7", "--type", "cgm", *c, "--json").stdout
    )
    assert made["username"] == "cgm-7"
    assert made["host"] == "gw-kitchen.local"
    assert made["password"] in made["uri"]
    # Provisioned again (consent added): the device keeps its password.
    kept = json.loads(
        cli(
            "edge-twin", "provision", "cgm-7", "pt-7", "-t", "cgm", "--upstream", *c, "--json"
        ).stdout
    )
    assert kept["credential_kept"] is True
    assert "password" not in kept
    again = json.loads(cli("edge-twin", "credentials", "rotate", "cgm-7", *c, "--json").stdout)
    assert again["password"] != made["password"]
    cli("edge-twin", "credentials", "revoke", "scale-7", *c)
    listed = [
        json.loads(line)
        for line in cli("edge-twin", "credentials", "list", *c, "--json").stdout.splitlines()
    ]
    assert {(r["username"], r["revoked_at"] is not None) for r in listed} == {
        ("gateway", False),
        ("cgm-7", False),
        ("scale-7", True),
    }
    log = cli("edge-twin", "credentials", "log", *c, "--json").stdout
    assert '"actor": "eng-bob"' in log
    assert made["password"] not in log
    missing = cli("edge-twin", "credentials", "rotate", "nobody", *c, check=False)
    assert missing.returncode == 1
    assert "no device or display credential" in missing.stderr
    passwd = (Path(cfg.broker.dir) / "auth" / "passwd").read_text()
    assert "scale-7" not in passwd
    with Store(cfg.store.path) as store:
        assert alarms.settings(store.conn, "pt-7")["low_mgdl"] == 75.0


def test_without_a_managed_broker_provisioning_binds_only(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config()
    with Store(cfg.store.path) as store:
        done = provisioning.provision_device(store, cfg, "cgm-1", "pt-1", "cgm", T0, "x")
        assert done.access is None
        assert not done.credential_kept
        with pytest.raises(ProvisioningError, match=r"broker\.dir is not set"):
            provisioning.write_broker_files(store, cfg)


def test_the_simulator_refuses_to_publish_without_a_credential_per_device(tmp_path: Path) -> None:
    creds = tmp_path / "creds.jsonl"
    creds.write_text(json.dumps({"username": "cgm-001", "password": "p"}) + "\n")
    done = cli(
        "firmware-sim",
        "run",
        "--patients",
        "1",
        "--hours",
        "1",
        "--credentials",
        str(creds),
        check=False,
    )
    assert done.returncode == 1
    assert "no credential for" in done.stderr
    assert "cgm-001" not in done.stderr.split("no credential for", 1)[1].split(" in ")[0]
