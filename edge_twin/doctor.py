"""``edge-twin doctor``: is this gateway fit to watch patients? One check a line, each
failure with what to do about it. The field engineer's first command after an install
and the first on a call.

Each check returns ``Finding(name, status, detail, fix)``; status is ok, fail or skip
(not applicable here: no TLS configured, no sync, no unit installed).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edge_twin.alert import read_webhook_secret, storage_low
from edge_twin.assess import active_model
from edge_twin.clock import kernel_clock_synchronised
from edge_twin.config import Config, redacted, webhook_url_problem
from edge_twin.errors import ConfigError, EdgeTwinError
from edge_twin.store import Store

UNIT_PATHS = (
    Path("/etc/systemd/system/edge-twin.service"),
    Path("/lib/systemd/system/edge-twin.service"),
)
HARDENING_GOAL = 2.5  # systemd-analyze's "OK"
CERT_WARN_DAYS = 14


class Status(StrEnum):
    OK = "ok"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    status: Status
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> Finding:
    return Finding(name, Status.OK, detail)


def _fail(name: str, detail: str, fix: str) -> Finding:
    return Finding(name, Status.FAIL, detail, fix)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def store_checks(cfg: Config) -> Iterator[Finding]:
    path = cfg.store.path
    if not path.exists():
        yield _fail("store", f"{path} does not exist", "edge-twin migrate creates it")
        return
    try:
        with Store(path, cfg.store.synchronous, migrate=False, read_only=True) as store:
            pending = store.pending_migrations()
            applied = store.schema_version()
            problems = [r[0] for r in store.conn.execute("PRAGMA integrity_check").fetchall()]
    except (EdgeTwinError, sqlite3.Error) as exc:
        yield _fail("store", str(exc), "restore the last backup (the file cannot be read)")
        return
    if pending:
        yield _fail("store schema", f"{len(pending)} migrations pending", "edge-twin migrate")
    else:
        yield _ok("store schema", applied[-1] if applied else "empty")
    if problems == ["ok"]:
        yield _ok("store integrity", "PRAGMA integrity_check: ok")
    else:
        yield _fail(
            "store integrity",
            "; ".join(problems[:3]),
            "stop the service, copy the file aside, restore the last backup",
        )
    mode = _mode(path)
    if mode & 0o077:
        yield _fail(
            "store file mode",
            f"{path} is {mode:04o}: others may read every patient's data",
            f"chmod 600 {path} (the service's UMask=0077 creates it so)",
        )
    else:
        yield _ok("store file mode", f"{mode:04o}")


def disk_check(cfg: Config) -> Finding:
    where = cfg.store.path.parent if cfg.store.path.parent.exists() else Path(".")
    usage = shutil.disk_usage(where)
    share = usage.free / usage.total if usage.total else 0.0
    detail = f"{usage.free / 2**30:.1f} GiB free ({share:.0%}) at {where}"
    if storage_low(usage.free, usage.total):
        return _fail("disk", detail, "free space: edge-twin backup, then lower store retention")
    return _ok("disk", detail)


# eMMC's own wear estimate (JEDEC life_time, in 10% steps: 0x01 0-10% used ... 0x0A
# 90-100%, 0x0B past its end of life); SD cards say nothing of theirs.
EMMC_WORN = 0x0A


def block_device(path: Path, sys_root: Path = Path("/sys")) -> Path | None:
    """The /sys/block entry of the disk holding ``path`` (the disk, not its partition)."""
    st = os.stat(path)
    link = sys_root / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if not link.exists():
        return None
    device = link.resolve()
    return device.parent if (device / "partition").exists() else device


def storage_wear_check(cfg: Config, sys_root: Path = Path("/sys")) -> Finding:
    """SD cards and eMMC wear out under writes: what this one says of itself, and how
    much was written since boot."""
    where = cfg.store.path.parent if cfg.store.path.parent.exists() else Path(".")
    disk = block_device(where, sys_root)
    if disk is None or not disk.name.startswith("mmcblk"):
        return Finding("storage wear", Status.SKIP, "the store is not on an SD card or eMMC")
    life = disk / "device" / "life_time"
    try:
        written = int((disk / "stat").read_text().split()[6]) * 512 / 2**30
        worst = max(int(v, 16) for v in life.read_text().split()) if life.exists() else None
    except (OSError, ValueError, IndexError) as exc:
        return Finding("storage wear", Status.SKIP, f"{disk.name} does not say: {exc}")
    since = f"{written:.1f} GiB written to {disk.name} since boot"
    if worst is None:
        return _ok(
            "storage wear",
            f"SD card (it reports no wear); {since}; keep backups off the box",
        )
    if worst >= EMMC_WORN:
        return _fail(
            "storage wear",
            f"eMMC life_time {worst:#04x} (>= 90% of its rated writes used); {since}",
            "replace the gateway's storage soon: edge-twin backup, restore on a new one",
        )
    used = f"{(worst - 1) * 10}-{worst * 10}%"
    return _ok("storage wear", f"eMMC life_time {worst:#04x} ({used} used); {since}")


def clock_check(synchronised: Callable[[], bool | None] = kernel_clock_synchronised) -> Finding:
    found = synchronised()
    if found is None:
        return Finding("clock", Status.SKIP, "this system does not say whether it is synchronised")
    if not found:
        return _fail(
            "clock",
            "not synchronised: device times are judged against it (a Pi has no RTC)",
            "enable time sync (systemctl enable --now systemd-timesyncd) and check the network",
        )
    return _ok("clock", "synchronised (kernel NTP state)")


def model_check(cfg: Config) -> Finding:
    try:
        m = active_model(cfg.assess.model_dir)
    except EdgeTwinError as exc:
        return _fail("risk model", str(exc), "edge-twin model install (or rollback)")
    return _ok("risk model", f"{m.card.name} {m.card.version}, sha256 verified")


def broker_check(cfg: Config) -> Finding:
    from edge_twin.ingest import probe_broker

    try:
        probe_broker(cfg.mqtt)
    except EdgeTwinError as exc:
        return _fail(
            "broker",
            str(exc),
            "systemctl status mosquitto; check mqtt.host/port and the gateway's credential",
        )
    who = f" as {cfg.mqtt.username}" if cfg.mqtt.username else " (anonymous)"
    return _ok("broker", f"{cfg.mqtt.host}:{cfg.mqtt.port} accepts the gateway{who}")


def _certificate(name: str, path: Path, renew: str, now: float | None) -> Finding:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return _fail(name, f"{path}: {exc}", "install a PEM certificate there")
    now = time.time() if now is None else now
    days = (cert.not_valid_after_utc.timestamp() - now) / 86400
    detail = f"{path} expires {cert.not_valid_after_utc:%Y-%m-%d} ({days:.0f} days)"
    if days < CERT_WARN_DAYS:
        return _fail(name, detail, renew)
    return _ok(name, detail)


def certificate_check(cfg: Config, now: float | None = None) -> Finding:
    if not cfg.api.tls_cert:
        return Finding("tls certificate", Status.SKIP, "the API serves plain HTTP (api.tls_cert)")
    return _certificate(
        "tls certificate",
        Path(cfg.api.tls_cert),
        "renew it (a browser refuses an expired one)",
        now,
    )


def broker_certificate_check(cfg: Config, now: float | None = None) -> Finding:
    """The broker's TLS certificate, which every device checks (broker.dir)."""
    if not cfg.broker.dir:
        return Finding("broker certificate", Status.SKIP, "the broker is managed by hand")
    return _certificate(
        "broker certificate",
        Path(cfg.broker.dir) / "server.crt",
        "edge-twin broker setup (as root) renews it; then systemctl restart mosquitto",
        now,
    )


def broker_files_check(cfg: Config) -> Finding:
    """The password file and ACL exist and nobody but the broker's group reads them."""
    if not cfg.broker.dir:
        return Finding("broker files", Status.SKIP, "the broker is managed by hand")
    from edge_twin.broker import BrokerFiles

    files = BrokerFiles(Path(cfg.broker.dir))
    for path in (files.passwd, files.acl, files.server_key):
        if not path.exists():
            return _fail("broker files", f"{path} is missing", "edge-twin broker sync (setup)")
        if _mode(path) & 0o007:
            return _fail(
                "broker files",
                f"{path} is {_mode(path):04o}: anyone on the box may read it",
                f"chmod 640 {path}",
            )
    return _ok("broker files", f"passwd, acl and server.key in {files.dir}, not world-readable")


def upstream_check(cfg: Config) -> Finding:
    if not cfg.sync.url:
        return Finding("upstream", Status.SKIP, "FHIR sync is off (sync.url)")
    from edge_twin.sync import FhirClient

    try:
        client = FhirClient(cfg.sync)
        try:
            client.search("Patient", {"_count": "1", "_summary": "count"})
        finally:
            client.close()
    except EdgeTwinError as exc:
        return _fail(
            "upstream",
            f"{cfg.sync.url}: {exc}",
            "check the network, sync.url and the gateway's credential at the FHIR server",
        )
    return _ok("upstream", f"{cfg.sync.url} answers and accepts the gateway's credential")


def unit_check(paths: tuple[Path, ...] = UNIT_PATHS) -> Finding:
    unit = next((p for p in paths if p.exists()), None)
    analyze = shutil.which("systemd-analyze")
    if unit is None or analyze is None:
        return Finding("service hardening", Status.SKIP, "edge-twin.service is not installed")
    out = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
    if found is None:
        return _fail("service hardening", f"systemd-analyze said nothing of {unit}", "")
    score = float(found.group(1))
    detail = f"{unit}: exposure {score:g}"
    if score > HARDENING_GOAL:
        return _fail(
            "service hardening",
            detail,
            "install the project's deploy/systemd/edge-twin.service (scored 1.1)",
        )
    return _ok("service hardening", detail)


def config_mode_check(path: Path | None) -> Finding:
    if path is None:
        return Finding("config file mode", Status.SKIP, "no config file (defaults)")
    mode = _mode(path)
    if mode & 0o007:
        return _fail(
            "config file mode",
            f"{path} is {mode:04o}: anyone on the box may read its secrets",
            f"chown root:edge-twin {path}; chmod 640 {path}",
        )
    return _ok("config file mode", f"{path} {mode:04o}")


def webhook_check(cfg: Config) -> Finding:
    """The alarm webhook's settings: the gateway would run without it otherwise."""
    if not cfg.alert.webhook_url:
        return Finding("alarm webhook", Status.SKIP, "no care-team webhook (alert.webhook_url)")
    problem = webhook_url_problem(cfg.alert.webhook_url)
    try:
        if problem is None:
            read_webhook_secret(cfg.alert)
    except ConfigError as exc:
        problem = str(exc)
    if problem is not None:
        return _fail("alarm webhook", problem, "fix alert.webhook_url / webhook_secret_file")
    return _ok("alarm webhook", f"{redacted(cfg.alert.webhook_url)} with a signing secret")


def run_all(cfg: Config, config_path: Path | None) -> list[Finding]:
    return [
        config_mode_check(config_path),
        *store_checks(cfg),
        disk_check(cfg),
        storage_wear_check(cfg),
        clock_check(),
        model_check(cfg),
        broker_check(cfg),
        certificate_check(cfg),
        broker_certificate_check(cfg),
        broker_files_check(cfg),
        upstream_check(cfg),
        webhook_check(cfg),
        unit_check(),
    ]


def config_path_from_env() -> Path | None:
    value = os.environ.get("EDGE_TWIN_CONFIG")
    return Path(value) if value else None
