"""edge-twin doctor against real parts: a real broker and store, a certificate made by
openssl, the project's unit scored by systemd-analyze; failures each with their fix."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from edge_twin import doctor
from edge_twin.broker import PrivateBroker
from edge_twin.clock import kernel_clock_synchronised
from edge_twin.config import load_config
from edge_twin.store import Store
from tests.conftest import self_signed
from tests.test_cli import BIN

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "edge-twin.service"


def run_doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    proc = subprocess.run(
        [str(BIN / "edge-twin"), "doctor", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, {r["check"]: r for r in rows}


@pytest.mark.broker
def test_a_healthy_gateway_and_each_failure_with_its_fix(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    db = tmp_path / "gw.sqlite"
    Store(db).close()
    db.chmod(0o600)
    env = {
        "EDGE_TWIN_STORE_PATH": str(db),
        "EDGE_TWIN_MQTT_HOST": broker.host,
        "EDGE_TWIN_MQTT_PORT": str(broker.port),
    }
    code, found = run_doctor(env)
    for name in ("store schema", "store integrity", "store file mode", "disk", "broker"):
        assert found[name]["status"] == "ok", found[name]
    assert found["risk model"]["status"] == "ok"
    assert found["tls certificate"]["status"] == "skip"
    assert code == (1 if found["clock"]["status"] == "fail" else 0)

    db.chmod(0o644)  # readable by anyone on the box
    broker.stop()
    code, found = run_doctor(env)
    assert code == 1
    assert found["store file mode"]["status"] == "fail"
    assert "chmod 600" in found["store file mode"]["fix"]
    assert found["broker"]["status"] == "fail"
    assert "mosquitto" in found["broker"]["fix"]


def test_a_certificate_about_to_expire(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, days=3)
    cfg = load_config(env={"EDGE_TWIN_API_TLS_CERT": str(cert), "EDGE_TWIN_API_TLS_KEY": str(key)})
    soon = doctor.certificate_check(cfg)
    assert soon.status is doctor.Status.FAIL
    assert "3 days" in soon.detail
    assert doctor.certificate_check(cfg, now=0.0).status is doctor.Status.OK  # long before


def test_the_clock_the_store_and_the_unit(tmp_path: Path) -> None:
    assert doctor.clock_check(lambda: False).status is doctor.Status.FAIL
    assert doctor.clock_check(lambda: True).status is doctor.Status.OK
    assert doctor.clock_check(lambda: None).status is doctor.Status.SKIP
    assert kernel_clock_synchronised() in (True, False, None)  # asks the kernel
    # a damaged file: refused, with what to do
    db = tmp_path / "gw.sqlite"
    with Store(db) as store:
        store.conn.execute("CREATE TABLE filler (x BLOB)")
        store.conn.execute("INSERT INTO filler VALUES (randomblob(200000))")
    with db.open("r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xff" * 4096 * 4)
    cfg = load_config(env={"EDGE_TWIN_STORE_PATH": str(db)})
    found = {f.name: f for f in doctor.store_checks(cfg)}
    damaged = found.get("store integrity") or found["store"]
    assert damaged.status is doctor.Status.FAIL
    assert "backup" in damaged.fix
    # the project's unit, as installed
    assert doctor.unit_check((UNIT,)).status is doctor.Status.OK
    assert doctor.unit_check((tmp_path / "none.service",)).status is doctor.Status.SKIP


def test_storage_wear_of_an_sd_card_and_an_emmc(tmp_path: Path) -> None:
    """/sys as an SD card and an eMMC show it (this machine has neither: its /sys is
    rebuilt under tmp_path with the same layout)."""
    state = tmp_path / "state"
    state.mkdir()
    st = os.stat(state)
    sys_root = tmp_path / "sys"
    disk = sys_root / "devices" / "platform" / "mmc0" / "block" / "mmcblk0"
    part = disk / "mmcblk0p2"
    part.mkdir(parents=True)
    (part / "partition").write_text("2\n")
    (disk / "stat").write_text("100 0 800 10 2000 0 4194304 50 0 60 60\n")  # 2 GiB written
    (sys_root / "dev" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}").symlink_to(part)
    cfg = load_config(env={"EDGE_TWIN_STORE_PATH": str(state / "gw.sqlite")})

    sd = doctor.storage_wear_check(cfg, sys_root)
    assert sd.status is doctor.Status.OK
    assert "SD card" in sd.detail
    assert "2.0 GiB written to mmcblk0" in sd.detail
    (disk / "device").mkdir()
    (disk / "device" / "life_time").write_text("0x03 0x02\n")
    assert "20-30% used" in doctor.storage_wear_check(cfg, sys_root).detail
    (disk / "device" / "life_time").write_text("0x09 0x02\n")  # 80-90%: not yet
    assert doctor.storage_wear_check(cfg, sys_root).status is doctor.Status.OK
    (disk / "device" / "life_time").write_text("0x0a 0x02\n")
    worn = doctor.storage_wear_check(cfg, sys_root)
    assert worn.status is doctor.Status.FAIL
    assert "backup" in worn.fix
    (disk / "stat").write_text("garbled\n")
    assert doctor.storage_wear_check(cfg, sys_root).status is doctor.Status.SKIP
