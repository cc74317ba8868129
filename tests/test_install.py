"""deploy/install.sh end to end, on this machine, into a throwaway root: installed twice
(the same tree), a real mosquitto with the installed drop-in, the gateway started through
the installed wrapper as the service user, devices provisioned by the installed CLI
publishing over TLS, ``edge-twin doctor``, refusals at the installed broker, an upgrade
that fails its check (nothing changes), one that passes (the previous kept), a rollback,
and a purge that leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_twin.broker import free_port
from firmware_sim import wire
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, cgm_home, wait_until
from tests.test_provisioning import attempt, off_box_address

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
USER = "et-install-test"

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a service user: needs root"),
]


def install(root: Path, *args: str, source: Path = REPO, check: bool = True) -> str:
    done = subprocess.run(
        [
            "bash",
            str(source / "deploy" / "install.sh"),
            "--root",
            str(root),
            "--user",
            USER,
            "--gateway-id",
            "gw-test",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"install.sh {args} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def tree(root: Path) -> dict[str, tuple[str, str, str]]:
    """Every path under root but the releases and the data: mode, owner, content."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith(("opt/edge-twin/releases/", "var/lib/edge-twin/")):
            continue
        st = path.lstat()
        owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{st.st_gid}"
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = ""
        out[rel] = (stat.filemode(st.st_mode), owner, content)
    return out


@pytest.fixture
def root() -> Iterator[Path]:
    # Not under pytest's tmp (0700 root): the service user must reach its files.
    where = Path(tempfile.mkdtemp(prefix="edge-twin-install-", dir="/var/tmp"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        install(where, "--uninstall", "--purge", check=False)
        shutil.rmtree(where, ignore_errors=True)


def broken_source(tmp: Path, change: str) -> Path:
    """A copy of this checkout (not a git repository) with one change."""
    source = tmp / change
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if not (REPO / name).is_file():
            continue  # deleted in the work tree
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    cli = source / "edge_twin" / "cli.py"
    marker = "def check(config: ConfigOpt = None) -> None:\n"
    assert marker in cli.read_text()
    if change == "broken":
        failing = '    raise EdgeTwinError("a deliberately broken release")\n'
        cli.write_text(cli.read_text().replace(marker, marker + failing))
    elif change == "late":
        # Passes on the copy of the store, fails once live, after migrating the store.
        failing = (
            '    store = __import__("os").environ.get("EDGE_TWIN_STORE_PATH", "")\n'
            '    if "upgrade-trial" not in store:\n'
            '        raise EdgeTwinError("a release that fails once it is live")\n'
        )
        cli.write_text(cli.read_text().replace(marker, marker + failing))
        with (source / "edge_twin" / "store" / "migrations.py").open("a") as f:
            f.write(
                '\n\n@MIGRATIONS(name="0099_late_failure")\n'
                "def _late(db: Database) -> None:\n"
                '    db.execute("CREATE TABLE late_failure (x INTEGER)")\n'
            )
    else:
        (source / "docs" / "release-note.md").write_text("A release that changes nothing.\n")
    return source


def test_install_run_provision_upgrade_and_purge(root: Path, tmp_path: Path) -> None:
    mqtt_port, tls_port = free_port(), free_port()
    ports = ("--mqtt-port", str(mqtt_port), "--tls-port", str(tls_port))
    install(root, *ports, "--tls-bind", "127.0.0.1", "--api-port", "0")
    first = tree(root)
    again = install(root, *ports, "--tls-bind", "127.0.0.1", "--api-port", "0")
    assert "building release" not in again
    assert tree(root) == first  # run twice: the same result

    etc = root / "etc" / "edge-twin"
    state = root / "var" / "lib" / "edge-twin"
    modes = {p: stat.S_IMODE((root / p).stat().st_mode) for p in first}
    assert modes["etc/edge-twin/credentials"] == 0o700
    assert modes["etc/edge-twin/credentials/mqtt-password"] == 0o600
    assert modes["etc/edge-twin/credentials/ca.key"] == 0o600
    assert modes["etc/edge-twin/edge-twin.toml"] == 0o640
    assert modes["etc/edge-twin/broker/auth/passwd"] == 0o640
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "edge-twin.sqlite").stat().st_mode) == 0o600
    password = (etc / "credentials" / "mqtt-password").read_text().strip()
    assert password not in (etc / "edge-twin.toml").read_text()
    unit = (root / "etc" / "systemd" / "system" / "edge-twin.service").read_text()
    assert f"User={USER}" in unit
    assert f"LoadCredential=mqtt-password:{etc}/credentials/mqtt-password" in unit

    # systemd accepts the installed units as they are (their binaries exist here), and
    # rates the service's exposure.
    installed = sorted((root / "etc" / "systemd" / "system").glob("edge-twin*"))
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, installed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
    for name in ("edge-twin.service", "edge-twin-backup.service"):
        rated = (
            subprocess.run(
                [
                    "systemd-analyze",
                    "security",
                    "--offline=true",
                    str(root / "etc/systemd/system" / name),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        print(rated)
        score = re.search(r"exposure level for .*: ([\d.]+)", rated)
        assert score is not None
        assert float(score.group(1)) <= 2.5

    # The installed broker: the distribution's main config with our drop-in.
    (root / "var" / "lib" / "mosquitto").mkdir(parents=True)
    shutil.chown(root / "var" / "lib" / "mosquitto", "mosquitto", "mosquitto")
    main = root / "etc" / "mosquitto" / "mosquitto.conf"
    main.write_text(
        f"pid_file {root}/var/lib/mosquitto/mosquitto.pid\n"
        f"persistence_location {root}/var/lib/mosquitto/\n"
        f"log_dest stderr\ninclude_dir {root}/etc/mosquitto/conf.d\n"
    )
    wrapper = str(root / "usr" / "local" / "bin" / "edge-twin")
    broker_log = (tmp_path / "mosquitto.log").open("w")
    gateway_log = (tmp_path / "gateway.log").open("w")
    mosquitto = subprocess.Popen(
        ["mosquitto", "-c", str(main)], stdout=subprocess.DEVNULL, stderr=broker_log
    )
    gateway = None
    try:
        wait_until(lambda: _listening(mqtt_port) and _listening(tls_port), what="mosquitto")
        home = cgm_home(patients=2, hours=1, seed=8)
        access = {}
        for d in home.devices:
            made = subprocess.run(
                [wrapper, "provision", d.device_id, d.patient_id, "--type", "cgm", "--json"],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            access[d.device_id] = json.loads(made.stdout)
        # Run as root, the installed CLI still leaves no file of root's in the state.
        assert {p.owner() for p in state.rglob("*")} == {USER}
        os.kill(mosquitto.pid, signal.SIGHUP)  # what edge-twin-broker-reload.path does
        gateway = subprocess.Popen(
            [wrapper, "run"],
            stdout=subprocess.DEVNULL,
            stderr=gateway_log,
            start_new_session=True,
        )
        # The gateway's persistent session is made at its first connection: from then on
        # the broker queues what the devices send, whether the gateway is up or not.
        wait_until(
            lambda: "as edge-twin-gateway (" in (tmp_path / "mosquitto.log").read_text(),
            timeout=60,
            what="the gateway's connection",
        )
        time.sleep(2.0)  # its subscription, just after
        ca = etc / "broker" / "ca.crt"
        with HomePublisher(
            "127.0.0.1",
            tls_port,
            home.devices,
            passwords={k: a["password"] for k, a in access.items()},
            ca_cert=str(ca),
        ) as pub:
            pub.publish([m for m in home.messages() if m.topic.endswith("/senml")])
        expected = sum(len(p.cgm) for p in home.patients)
        try:
            wait_until(lambda: _stored(state) == expected, timeout=60, what="readings stored")
        except AssertionError as exc:
            raise AssertionError((tmp_path / "gateway.log").read_text()[-3000:]) from exc

        doctor = subprocess.run(
            [wrapper, "doctor", "--json"], capture_output=True, text=True, timeout=120
        )
        found = {row["check"]: row for row in map(json.loads, doctor.stdout.splitlines())}
        print("\n".join(f"{n}: {r['status']} {r['detail']}" for n, r in found.items()))
        failed = {n for n, r in found.items() if r["status"] == "fail"}
        # This machine's kernel clock is not NTP-disciplined (a container): doctor says so.
        assert failed <= {"clock"}, found
        for name in (
            "store integrity",
            "store file mode",
            "config file mode",
            "broker",
            "broker certificate",
            "broker files",
            "risk model",
        ):
            assert found[name]["status"] == "ok", found[name]

        reading = wire.senml_pack("cgm-002", [("glucose", "mg/dL", T0, 40.0, 1)])
        own = wire.readings_topic("cgm-001")
        assert attempt("127.0.0.1", tls_port, None, None, ca, own, reading) == (False, None)
        assert attempt(
            "127.0.0.1",
            tls_port,
            "cgm-001",
            access["cgm-001"]["password"],
            ca,
            wire.readings_topic("cgm-002"),
            reading,
        ) == (True, 135)
        address = off_box_address()
        if address is not None:
            assert attempt(address, mqtt_port, "gateway", password, None, own, reading) == (
                False,
                None,
            )

        # An upgrade that fails its check on a copy of the store changes nothing ...
        current = (root / "opt" / "edge-twin" / "current").resolve()
        failed_upgrade = subprocess.run(
            [
                "bash",
                str(broken_source(tmp_path, "broken") / "deploy" / "install.sh"),
                "--root",
                str(root),
                "--user",
                USER,
                "--upgrade",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert failed_upgrade.returncode == 1, failed_upgrade.stderr[-2000:]
        assert "failed its check on a copy of the store" in failed_upgrade.stderr
        assert (root / "opt" / "edge-twin" / "current").resolve() == current
        assert len(list((root / "opt" / "edge-twin" / "releases").iterdir())) == 1
        assert gateway.poll() is None  # the gateway ran through it
        os.killpg(gateway.pid, signal.SIGTERM)  # (under systemd the installer stops it)
        gateway.wait(timeout=30)
        gateway = None

        # ... one that passes on the copy but fails once live, after migrating the store:
        # the previous release comes back with the store from before the upgrade, the
        # migrated one kept beside it.
        late = install(root, "--upgrade", source=broken_source(tmp_path, "late"), check=False)
        assert "rolled back" in late, late[-3000:]
        assert (root / "opt" / "edge-twin" / "current").resolve() == current
        store = state / "edge-twin.sqlite"
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
        assert "0099_late_failure" not in names
        assert _stored(state) == expected  # nothing acknowledged was lost
        assert list(state.glob("edge-twin.sqlite.failed-upgrade-*"))
        # ... one that passes becomes current, the previous kept for a rollback.
        good = broken_source(tmp_path, "good")
        install(root, "--upgrade", source=good)
        upgraded = (root / "opt" / "edge-twin" / "current").resolve()
        assert upgraded != current
        assert (root / "opt" / "edge-twin" / "previous").resolve() == current
        assert list((state / "backups").glob("pre-upgrade-*.tar.gz"))
        install(root, "--rollback")
        assert (root / "opt" / "edge-twin" / "current").resolve() == current
    finally:
        if gateway is not None:
            os.killpg(gateway.pid, signal.SIGTERM)
            gateway.wait(timeout=30)
        mosquitto.terminate()
        mosquitto.wait(timeout=10)
        broker_log.close()
        gateway_log.close()

    install(root, "--uninstall", "--purge")
    left = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    assert set(left) <= {"etc/mosquitto/mosquitto.conf"} | {
        str(p.relative_to(root)) for p in (root / "var" / "lib" / "mosquitto").rglob("*")
    }
    with pytest.raises(KeyError):
        pwd.getpwnam(USER)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _stored(state: Path) -> int:
    db = state / "edge-twin.sqlite"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return -1
