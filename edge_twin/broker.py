"""A private mosquitto broker on a free loopback port, with its own generated config.

The demo and the test suite start one; a gateway in the field uses the system broker
configured by ``deploy/`` (same settings, plus authentication). Never a shared or public
broker: this is health data.

Settings that decide whether data is lost (docs/performance.md):
- ``persistence true``: queued QoS 1 messages survive a broker restart;
- ``max_queued_messages 0`` (bounded by ``max_queued_bytes`` instead): a gateway that is
  down for days does not lose messages past mosquitto's default of 1,000;
- ``max_inflight_messages``: how many unacknowledged QoS 1 messages the broker sends the
  gateway at once, which bounds the gateway's commit batch.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_twin.errors import BrokerError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in MOSQUITTO_PATHS if Path(p).exists()), None
    )
    if found is None:
        raise BrokerError(
            "mosquitto is not installed: run scripts/setup.sh (it installs the Debian"
            " package) or apt-get install mosquitto"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def acl_rules(
    prefix: str, gateway_user: str, displays: Mapping[str, Iterable[str]] | None = None
) -> str:
    """Each device may write only below its own topics (its user name is its device id);
    the gateway may read every device's topics and owns its alarm topics; each bedside
    display (``displays``: its user name -> its patients) reads only its patients' alarms,
    and sends commands on a topic of its own name (so the gateway knows who acts, from
    the broker's authentication, not from the message)."""
    lines = [
        f"user {gateway_user}",
        f"topic read {prefix}/dev/#",
        f"topic readwrite {prefix}/gw/#",
        "",
    ]
    for name, patients in sorted((displays or {}).items()):
        lines.append(f"user {name}")
        for pid in sorted(patients):
            lines += [
                f"topic read {prefix}/gw/+/alarms/{pid}",
                f"topic read {prefix}/gw/+/alarms/{pid}/current",
            ]
        lines.append("")
    return "\n".join(
        [
            *lines,
            f"pattern write {prefix}/dev/%u/#",
            f"pattern write {prefix}/gw/+/alarm-cmd/%u",
            f"pattern read {prefix}/gw/+/alarm-cmd/%u/result",
            "",
        ]
    )


# mosquitto 2's "$7$" password hash: PBKDF2-HMAC-SHA512 with the iteration count in the
# line, so a count far above mosquitto_passwd's 101 needs no newer broker.
HASH_SALT_BYTES = 12


def hash_password(password: str, iterations: int) -> str:
    salt = secrets.token_bytes(HASH_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a "$7$" hash (False for any other form)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)


def new_secret() -> str:
    """A device's broker password: 192 random bits, typable (URL-safe base64)."""
    return secrets.token_urlsafe(24)


def password_lines(hashes: Mapping[str, str]) -> str:
    """A mosquitto password file from user name -> hash."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(hashes.items()))


def write_private(path: Path, data: str | bytes, mode: int = 0o640) -> None:
    """Replace ``path`` whole (a reload never reads half a file), with ``mode``; the
    group is the directory's (install.sh makes the broker's directories group mosquitto,
    so the broker reads). Written to a new, randomly named file first (O_EXCL: never
    through a link someone left in the directory), then renamed over ``path``."""
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """The files of a broker whose credentials and ACL the gateway manages."""

    dir: Path

    # The password file and ACL are the service user's to write (provisioning), in a
    # directory of their own: root writes only beside it (the CA and TLS files).
    @property
    def auth(self) -> Path:
        return self.dir / "auth"

    @property
    def passwd(self) -> Path:
        return self.auth / "passwd"

    @property
    def acl(self) -> Path:
        return self.auth / "acl"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"


def field_config(
    files: BrokerFiles,
    tls_port: int,
    plain_port: int = 1883,
    max_packet_bytes: int = 131_072,
    tls_bind: str = "",
) -> str:
    """The drop-in of a gateway's mosquitto (/etc/mosquitto/conf.d/edge-twin.conf):
    plain MQTT on loopback only (the gateway itself, a local bridge); devices over TLS
    with their own password; nobody anonymous; each credential bound to its topics."""
    return "\n".join(
        [
            "# Written by edge-twin (edge-twin broker setup): edits are overwritten.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {files.passwd}",
            f"acl_file {files.acl}",
            f"max_packet_size {max_packet_bytes}",
            "# Settings that decide whether data is lost (docs/architecture.md).",
            "persistence true",
            "max_queued_messages 0",
            f"max_queued_bytes {256 * 1024 * 1024}",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            "# Plain MQTT never leaves the box.",
            f"listener {plain_port} 127.0.0.1",
            "# Devices in the home: TLS to the gateway's own CA (edge-twin provision shows it).",
            f"listener {tls_port}{' ' + tls_bind if tls_bind else ''}",
            f"cafile {files.ca_cert}",
            f"certfile {files.server_cert}",
            f"keyfile {files.server_key}",
            "tls_version tlsv1.2",
            "",
        ]
    )


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """Hashed password file through Debian's mosquitto_passwd (never plain text)."""
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.write_text("", encoding="utf-8")
    for user, password in users.items():
        proc = subprocess.run(
            [exe, "-b", str(path), user, password], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise BrokerError(f"mosquitto_passwd failed for {user!r}: {proc.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A second, TLS listener of a private broker, with the files of a managed one."""

    port: int
    files: BrokerFiles


def broker_config(
    port: int,
    data_dir: Path,
    max_inflight: int = 1000,
    authenticated: bool = False,
    tls: TlsListener | None = None,
) -> str:
    passwd, acl = (
        (tls.files.passwd, tls.files.acl)
        if tls is not None
        else (data_dir / "passwd", data_dir / "acl")
    )
    auth = (
        [
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
        ]
        if authenticated
        else ["allow_anonymous true"]
    )
    secure = (
        [
            f"listener {tls.port} 127.0.0.1",
            f"cafile {tls.files.ca_cert}",
            f"certfile {tls.files.server_cert}",
            f"keyfile {tls.files.server_key}",
            "tls_version tlsv1.2",
        ]
        if tls is not None
        else []
    )
    return "\n".join(
        [
            # Started as root, mosquitto would switch to user "mosquitto", which cannot write
            # the private data dir: stay the user who started it.
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            f"pid_file {data_dir}/mosquitto.pid",
            f"listener {port} 127.0.0.1",
            *secure,
            *auth,
            "persistence true",
            f"persistence_location {data_dir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            f"max_queued_bytes {256 * 1024 * 1024}",
            f"max_inflight_messages {max_inflight}",
            "set_tcp_nodelay true",
            f"log_dest file {data_dir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ]
    )


class PrivateBroker:
    """``with PrivateBroker() as broker: broker.host, broker.port``. Stops on exit.

    ``restart()`` stops and starts it on the same port and data dir (persistence test).
    With ``users`` (name -> password) anonymous clients are refused and the ACL of
    ``acl_rules`` binds each device's credential to its own topics. With ``tls``, it
    also listens with TLS, and authenticates from that listener's managed files (written
    by ``edge-twin provision``; ``reload()`` re-reads them, as mosquitto's SIGHUP does).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        users: dict[str, str] | None = None,
        gateway_user: str = "gateway",
        prefix: str = "et/v1",
        displays: Mapping[str, Iterable[str]] | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.users = users
        self.tls = tls
        self._displays = displays
        self._gateway_user = gateway_user
        self._prefix = prefix
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="edge-twin-mosquitto-")) if data_dir is None else data_dir
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        exe = find_mosquitto()
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port(self.host)
            conf = self.data_dir / "mosquitto.conf"
            if self.users is not None:
                write_password_file(self.data_dir / "passwd", self.users)
                (self.data_dir / "acl").write_text(
                    acl_rules(self._prefix, self._gateway_user, self._displays),
                    encoding="utf-8",
                )
            conf.write_text(
                broker_config(
                    port,
                    self.data_dir,
                    authenticated=self.users is not None or self.tls is not None,
                    tls=self.tls,
                ),
                encoding="utf-8",
            )
            self._proc = subprocess.Popen(
                [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_ready(port, timeout):
                self.port = port
                return
            self.stop()
        log_tail = self.log_tail()
        raise BrokerError(f"mosquitto did not start on {self.host}:{self.port or port}: {log_tail}")

    def _wait_ready(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password file and ACL."""
        if self._proc is None:
            raise BrokerError("the broker is not running")
        self._proc.send_signal(signal.SIGHUP)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "mosquitto.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
