"""``edge-twin backup`` / ``restore``: the gateway's state in one archive, and back.

An archive (``.tar.gz``, created 0600: it holds every patient's data) has

    manifest.json   format, edge-twin version, gateway id, when, the store's schema, and
                    each member's size and SHA-256
    store.sqlite    a consistent copy made by SQLite's online backup while the gateway
                    runs (readers and writers go on), checked by ``integrity_check``
    models/         the installed risk models (``assess.model_dir``), when there are any

Restore refuses a damaged archive (a member missing or not matching its checksum), a
store from a newer version of edge-twin (an unknown migration), and a running gateway;
an existing store is kept aside (``<store>.before-restore-<time>``), never overwritten.
The restored store is migrated to this version's schema.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from edge_twin import __version__
from edge_twin.clock import to_iso
from edge_twin.config import Config
from edge_twin.errors import StoreError
from edge_twin.store import PipelineLock, Store

FORMAT = 1
MANIFEST = "manifest.json"
STORE_MEMBER = "store.sqlite"
MODELS_MEMBER = "models"
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    format: int
    edge_twin_version: str
    gateway_id: str
    created_at: str
    schema: list[str]
    members: list[Member]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            members = [
                Member(str(m["name"]), int(m["size"]), str(m["sha256"])) for m in data["members"]
            ]
            return cls(
                int(data["format"]),
                str(data["edge_twin_version"]),
                str(data["gateway_id"]),
                str(data["created_at"]),
                [str(n) for n in data["schema"]],
                members,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"the archive's manifest is not readable: {exc}") from exc


def _stamp(now: float) -> str:
    """20261201T104500.123Z: sorts as time, safe in a file name."""
    return to_iso(now).replace(":", "").replace("-", "")[:19] + "Z"


def default_archive(cfg: Config, now: float) -> Path:
    return cfg.store.path.parent / "backups" / f"edge-twin-{cfg.gateway.id}-{_stamp(now)}.tar.gz"


def prune(cfg: Config, keep: int) -> list[Path]:
    """Delete this gateway's oldest archives in the default directory beyond ``keep``."""
    folder = default_archive(cfg, 0.0).parent
    # This gateway's own (gateway "home" must not prune "home-2"'s in a shared folder).
    own = re.compile(rf"edge-twin-{re.escape(cfg.gateway.id)}-\d{{8}}T\d{{6}}\.\d{{3}}Z\.tar\.gz")
    archives = sorted(p for p in folder.glob("edge-twin-*.tar.gz") if own.fullmatch(p.name))
    gone = archives[: max(0, len(archives) - keep)]
    for path in gone:
        path.unlink()
    return gone


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_store(source: Path, target: Path) -> list[str]:
    """SQLite's online backup of ``source`` into ``target``; its applied migrations."""
    if not source.is_file():
        raise StoreError(f"store {source} does not exist: nothing to back up")
    with Store(source, migrate=False, read_only=True) as store:
        schema = store.schema_version()
        copy = sqlite3.connect(target)
        try:
            store.conn.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            problems = [r[0] for r in copy.execute("PRAGMA integrity_check").fetchall()]
        except sqlite3.Error as exc:
            raise StoreError(f"backing up {source} failed: {exc}") from exc
        finally:
            copy.close()
    target.chmod(0o600)
    if problems != ["ok"]:
        raise StoreError(f"the copy of {source} fails integrity_check: {'; '.join(problems[:3])}")
    return schema


@contextlib.contextmanager
def _private_dir(near: Path) -> Iterator[Path]:
    """A 0700 scratch directory on the same file system as ``near`` (so a rename is
    atomic and patient data never passes through a shared /tmp)."""
    near.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".edge-twin-", dir=near))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def backup(cfg: Config, archive: Path, now: float) -> Manifest:
    """Write the archive (0600, atomically: a half-written archive never has its name)."""
    archive = archive.absolute()
    with _private_dir(archive.parent) as scratch:
        store_copy = scratch / STORE_MEMBER
        schema = _copy_store(cfg.store.path, store_copy)
        files: list[tuple[str, Path]] = [(STORE_MEMBER, store_copy)]
        models = cfg.assess.model_dir
        if models.is_dir():
            files += [
                (str(PurePosixPath(MODELS_MEMBER, *p.relative_to(models).parts)), p)
                for p in sorted(models.rglob("*"))
                if p.is_file()
            ]
        manifest = Manifest(
            FORMAT,
            __version__,
            cfg.gateway.id,
            to_iso(now),
            schema,
            [Member(name, path.stat().st_size, _sha256(path)) for name, path in files],
        )
        partial = scratch / "archive.tar.gz"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            raw_manifest = manifest.to_json()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(raw_manifest), 0o600, int(now)
            tar.addfile(info, io.BytesIO(raw_manifest))
            for name, path in files:
                tar.add(path, arcname=name, recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, archive)
    return manifest


def read_manifest(archive: Path) -> Manifest:
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise StoreError(f"{archive} has no {MANIFEST}: not an edge-twin backup")
            return Manifest.from_json(member.read())
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise StoreError(f"{archive} is not a readable edge-twin backup: {exc}") from exc


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise StoreError(f"the archive names {name!r}: not a file of a backup")
    return path


def _extract(archive: Path, manifest: Manifest, into: Path) -> None:
    """Only the manifest's members, regular files under ``into``, each checked against
    its size and checksum. (Written one by one: Debian 12's Python 3.11.2 has no
    extraction filters.)"""
    wanted = {m.name: m for m in manifest.members}
    if STORE_MEMBER not in wanted:
        raise StoreError(f"{archive} holds no store")
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.name not in wanted or not member.isfile():
                    continue
                target = into.joinpath(*_safe_name(member.name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except (OSError, tarfile.TarError) as exc:
        raise StoreError(f"{archive} cannot be read: {exc}") from exc
    for m in manifest.members:
        path = into.joinpath(*_safe_name(m.name).parts)
        if not path.is_file() or path.stat().st_size != m.size or _sha256(path) != m.sha256:
            raise StoreError(f"{archive} is damaged: {m.name} is missing or does not match")


def restore(cfg: Config, archive: Path, now: float) -> tuple[Manifest, Path | None]:
    """Put the archive's store (and models) in place of the configured ones; returns the
    manifest and where the store that was there was kept (None if there was none)."""
    manifest = read_manifest(archive)
    if manifest.format != FORMAT:
        raise StoreError(f"{archive} is backup format {manifest.format}; this reads {FORMAT}")
    target = cfg.store.path.absolute()
    with PipelineLock(target), _private_dir(target.parent) as scratch:
        _extract(archive, manifest, scratch)
        restored = scratch / STORE_MEMBER
        with Store(restored, migrate=False) as store:
            newer = store.unknown_migrations()
        if newer:
            raise StoreError(
                f"{archive} comes from a newer edge-twin ({manifest.edge_twin_version}; schema"
                f" {', '.join(newer)}): install that version, then restore"
            )
        aside = f".before-restore-{_stamp(now)}"
        kept = _keep_aside(target, aside)
        # The old file's journal goes with it: it must never meet the restored file.
        for suffix in ("-wal", "-shm"):
            _keep_aside(Path(f"{target}{suffix}"), aside)
        restored.chmod(0o600)
        os.replace(restored, target)
        models = scratch / MODELS_MEMBER
        if models.is_dir():
            model_dir = cfg.assess.model_dir.absolute()
            _keep_aside(model_dir, aside)
            model_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(models, model_dir)
    with Store(target, cfg.store.synchronous):  # migrated to this version's schema
        pass
    return manifest, kept


def _keep_aside(path: Path, suffix: str) -> Path | None:
    if not path.exists():
        return None
    kept = path.with_name(path.name + suffix)
    os.replace(path, kept)
    return kept
