"""Opening the SQLite store: one file, WAL journal, migrations applied on open.

Each thread that touches the store opens its own ``Store`` (SQLite connections are not
shared between threads here). Writes go through ``Store.transaction()``.

Durability: with ``synchronous=FULL`` in WAL mode a committed transaction survives power
loss; ingest acknowledges MQTT messages only after that commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from edge_twin.errors import StoreError, StoreMisuse
from edge_twin.store.migrations import MIGRATIONS

BUSY_TIMEOUT_S = 10.0


class PipelineLock:
    """One process at a time runs the pipeline on a store (the gateway, or a replay):
    two would follow the same log consumers and apply the same readings twice. An
    advisory lock on ``<store>.lock``; the OS releases it when the process ends, kill -9
    and power loss included."""

    def __init__(self, store_path: Path | str) -> None:
        self.path = Path(f"{store_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.path.with_suffix('')} is in use by another edge-twin process (a running"
                " gateway or replay): stop it first"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> PipelineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create_private(path: Path) -> None:
    """A new store file is created 0600 whatever the umask: it holds every patient's
    data (SQLite gives its -wal and -shm files the same mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def translated(exc: sqlite3.Error, what: str) -> StoreError:
    """A SQLite error as ours: the store unavailable (I/O, full, busy, locked, damaged:
    StoreError, retried) or a statement refused for what it is (StoreMisuse: a bug)."""
    misuse = (
        sqlite3.IntegrityError,
        sqlite3.ProgrammingError,
        sqlite3.InterfaceError,
        sqlite3.DataError,
    )
    kind = StoreMisuse if isinstance(exc, misuse) else StoreError
    return kind(f"{what}: {exc}")


class Store:
    """A connection to the edge-twin SQLite file, migrated to the current schema."""

    def __init__(
        self,
        path: Path | str,
        synchronous: str = "FULL",
        migrate: bool = True,
        read_only: bool = False,
    ) -> None:
        """``read_only``: the file must exist; nothing is created, migrated or written
        (SQLite refuses every write on this connection)."""
        self.path = Path(path)
        self.synchronous = synchronous
        try:
            if read_only:
                if not self.path.is_file():
                    raise StoreError(f"store {path} does not exist")
                target, uri, migrate = f"{self.path.resolve().as_uri()}?mode=ro", True, False
            else:
                if str(path) != ":memory:":
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    _create_private(self.path)
                target, uri = str(path), False
            # isolation_level=None: no implicit transactions; we open them explicitly.
            conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
            self.db = sqlite_utils.Database(conn)
            if not read_only:  # (a read-only reader keeps whatever mode the file has)
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if migrate:
                MIGRATIONS.apply(self.db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def transaction(self, derived: bool = False) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception.

        ``derived=True`` is for data recomputable from what is already durable (the twin's
        state and its log cursor, saved together): its commit is not fsynced. A power cut
        may roll such a commit back, never one after it, and never half of it (WAL), so
        the twin resumes from an older cursor and re-applies the log: one fsync less per
        batch, which an SD card's wear also notices.
        """
        if derived and self.synchronous == "FULL":
            self.conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self.transaction() as conn:
                    yield conn
            finally:
                self.conn.execute("PRAGMA synchronous=FULL")
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot begin a transaction on {self.path}: {exc}") from exc
        try:
            yield self.conn
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):  # translated here, where SQLite is met
                raise translated(exc, f"write failed on {self.path}") from exc
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"commit failed on {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        """Roll back if a transaction is still open (SQLite may have ended it already,
        e.g. on a full disk; a failing rollback must not hide the first error)."""
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def version(self, name: str) -> int:
        """A counter that every change of the named table bumps, from any process
        (migrations 0009 devices, 0010 alarm_settings): one cheap read tells a cache
        whether it is still current."""
        row = self.conn.execute("SELECT version FROM store_versions WHERE name = ?", (name,))
        return int(row.fetchone()[0])

    def pending_migrations(self) -> list[str]:
        """Names of the migrations not applied yet."""
        return [m.name for m in MIGRATIONS.pending(self.db)]

    def schema_version(self) -> list[str]:
        """Names of the applied migrations, oldest first."""
        return [m.name for m in MIGRATIONS.applied(self.db)]

    def unknown_migrations(self) -> list[str]:
        """Applied migrations this code does not know: the file comes from a newer
        version (restoring it here would run old code on a schema it cannot read)."""
        known = {m.name for m in MIGRATIONS.pending(sqlite_utils.Database(memory=True))}
        return [name for name in self.schema_version() if name not in known]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
