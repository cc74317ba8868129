"""edge-twin backup / restore: a consistent copy while the store is written, verified on
the way back, never over a running gateway or from a newer version."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from edge_twin import backup
from edge_twin.config import Config
from edge_twin.domain import DeviceType, Reading, Signal
from edge_twin.errors import StoreError
from edge_twin.store import PipelineLock, Store, devices, readings
from tests.conftest import T0
from tests.test_cli import cli


def _fill(db: Path, start: int, n: int) -> None:
    with Store(db) as store:
        for i in range(start, start + n):
            r = Reading("pt-1", "cgm-1", Signal.GLUCOSE, T0 + 300.0 * i, 100.0, T0 + 300.0 * i)
            with store.transaction() as conn:
                readings.insert(conn, [r])


def _count(db: Path) -> int:
    with Store(db) as store:
        return readings.count(store)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cfg(make_config: Callable[..., Config]) -> Config:
    cfg = make_config()
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-1", "pt-1", DeviceType.CGM, T0)
    _fill(cfg.store.path, 0, 200)
    model = cfg.assess.model_dir / "v7"
    model.mkdir(parents=True)
    (model / "model.onnx").write_bytes(b"\x08\x01not really a model")
    (cfg.assess.model_dir / "ACTIVE").write_text("v7")
    return cfg


def test_a_backup_taken_while_the_store_is_written_restores_to_a_consistent_store(
    cfg: Config, tmp_path: Path
) -> None:
    writer = threading.Thread(target=_fill, args=(cfg.store.path, 200, 300))
    writer.start()
    archive = tmp_path / "out" / "gw.tar.gz"
    manifest = backup.backup(cfg, archive, T0)
    writer.join()
    assert _mode(archive) == 0o600
    assert manifest.schema[0] == "0001_initial"
    names = {m.name for m in manifest.members}
    assert names == {"store.sqlite", "models/ACTIVE", "models/v7/model.onnx"}
    assert not list(archive.parent.glob(".edge-twin-*"))  # no scratch left behind

    # Restored on another gateway's disk: a complete snapshot, between 200 and 500 rows.
    other = replace(
        cfg,
        store=replace(cfg.store, path=tmp_path / "new" / "gw.sqlite"),
        assess=replace(cfg.assess, model_dir=tmp_path / "new" / "models"),
    )
    restored, kept = backup.restore(other, archive, T0 + 60.0)
    assert kept is None
    assert restored == manifest
    n = _count(other.store.path)
    assert 200 <= n <= 500
    with Store(other.store.path) as store:
        ids = [r[0] for r in store.conn.execute("SELECT id FROM readings ORDER BY id")]
        assert ids == list(range(1, n + 1))  # whole transactions, nothing torn
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _mode(other.store.path) == 0o600
    assert (other.assess.model_dir / "ACTIVE").read_text() == "v7"

    # Restored over the live one: the one that was there is kept aside, not lost.
    restored, kept = backup.restore(cfg, archive, T0 + 120.0)
    assert kept is not None
    assert _count(kept) == 500
    assert _count(cfg.store.path) == n
    assert (cfg.assess.model_dir / "ACTIVE").read_text() == "v7"


def _rewrite(archive: Path, damaged: Path, change: Callable[[str, bytes], bytes]) -> None:
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            f = src.extractfile(member)
            assert f is not None
            data = change(member.name, f.read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def test_restore_refuses_damage_a_newer_schema_and_a_running_gateway(
    cfg: Config, tmp_path: Path
) -> None:
    archive = tmp_path / "gw.tar.gz"
    backup.backup(cfg, archive, T0)
    before = _count(cfg.store.path)

    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "store.sqlite" else data

    damaged = tmp_path / "damaged.tar.gz"
    _rewrite(archive, damaged, flip)
    with pytest.raises(StoreError, match=r"damaged: store\.sqlite"):
        backup.restore(cfg, damaged, T0)

    def escape(name: str, data: bytes) -> bytes:
        return data.replace(b'"models/ACTIVE"', b'"../ACTIVE"') if name == "manifest.json" else data

    escaping = tmp_path / "escaping.tar.gz"
    _rewrite(archive, escaping, escape)
    with pytest.raises(StoreError, match=r"names '\.\./ACTIVE'"):
        backup.restore(cfg, escaping, T0)
    assert not (cfg.store.path.parent / "ACTIVE").exists()

    with PipelineLock(cfg.store.path), pytest.raises(StoreError, match="in use"):
        backup.restore(cfg, archive, T0)

    with Store(cfg.store.path) as store:
        store.conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('edge_twin', '9999_from_the_future', '2027-01-01')"
        )
    newer = tmp_path / "newer.tar.gz"
    backup.backup(cfg, newer, T0)
    assert backup.read_manifest(newer).schema[-1] == "9999_from_the_future"
    with pytest.raises(StoreError, match="newer edge-twin"):
        backup.restore(cfg, newer, T0)
    assert _count(cfg.store.path) == before
    assert not list(cfg.store.path.parent.glob("*.before-restore-*"))


def test_the_cli_backs_up_keeps_the_newest_and_restores(cfg: Config, tmp_path: Path) -> None:
    config_file = tmp_path / "gw.toml"
    config_file.write_text(
        f'[store]\npath = "{cfg.store.path}"\n[assess]\nmodel_dir = "{cfg.assess.model_dir}"\n'
    )
    made = []
    for _ in range(3):
        out = cli("edge-twin", "backup", "-c", str(config_file), "--keep", "2", "--json")
        made.append(json.loads(out.stdout)["archive"])
    folder = cfg.store.path.parent / "backups"
    left = sorted(str(p) for p in folder.glob("*.tar.gz"))
    assert left == sorted(made[1:])
    _fill(cfg.store.path, 1000, 5)
    cli("edge-twin", "restore", made[-1], "-c", str(config_file))
    assert _count(cfg.store.path) == 200
    missing = cli(
        "edge-twin", "restore", str(tmp_path / "nope.tar.gz"), "-c", str(config_file), check=False
    )
    assert missing.returncode == 1
    assert "not a readable edge-twin backup" in missing.stderr
