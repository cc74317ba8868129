import json
from pathlib import Path

import pytest
import sqlite_utils

from edge_twin.domain import Reading, ReadingFlag, Signal
from edge_twin.errors import ProvisioningError, StoreError
from edge_twin.store import PipelineLock, Store, devices, readings
from edge_twin.store.migrations import MIGRATIONS
from tests.conftest import T0
from tests.test_cli import cli

ALL_MIGRATIONS = [
    "0001_initial",
    "0002_device_clock_offset",
    "0003_twin_state_gating",
    "0004_day_starts_and_risk",
    "0005_alarms",
    "0006_sensor_expiry",
    "0007_forecast_log",
    "0008_log_consumers",
    "0009_device_bindings_version",
    "0010_alarm_settings_version",
    "0011_upstream_sync",
    "0012_alarm_audit",
    "0013_users",
    "0014_user_display",
    "0015_displays",
    "0016_broker_credentials",
    "0017_uploaders_treatments",
    "0018_delivery_dead_letters",
    "0019_quarantine_messages",
]


def test_open_applies_migrations_with_wal_and_full_sync(db_path: Path) -> None:
    with Store(db_path) as store:
        assert store.schema_version() == ALL_MIGRATIONS
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with Store(db_path) as again:  # reopening applies nothing twice
        assert again.schema_version() == ALL_MIGRATIONS


def test_an_old_file_is_upgraded_in_place_keeping_its_data(db_path: Path) -> None:
    old = sqlite_utils.Database(db_path)
    MIGRATIONS.apply(old, stop_before="0002_device_clock_offset")
    old.execute(
        "INSERT INTO device_status (device_id, online, battery_pct, firmware, updated_at)"
        " VALUES ('cgm-1', 1, 50.0, '1.0', 0)"
    )
    old.conn.commit()
    old.close()
    with Store(db_path) as store:
        assert store.schema_version() == ALL_MIGRATIONS
        status = devices.statuses(store)["cgm-1"]
    assert (status.battery_pct, status.firmware, status.clock_offset_s) == (50.0, "1.0", None)


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StoreError, match="cannot open store"):
        Store(tmp_path / "dir.sqlite")


def _reading(t: float, value: float = 100.0) -> Reading:
    return Reading("pt-1", "cgm-1", Signal.GLUCOSE, t, value, received_at=t, seq=1)


def test_readings_are_idempotent_on_device_signal_time(db_path: Path) -> None:
    with Store(db_path) as store:
        devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
        with store.transaction() as conn:
            assert readings.insert(conn, [_reading(T0), _reading(T0 + 300)]) == 2
        with store.transaction() as conn:
            # A resend (same device, signal and device time) is not a new reading.
            assert readings.insert(conn, [_reading(T0), _reading(T0 + 600)]) == 1
        assert readings.count(store) == 3
        assert [r.t for r in readings.after(store, 0, 10)] == [T0, T0 + 300, T0 + 600]
        assert readings.latest_time(store, "cgm-1", Signal.GLUCOSE) == T0 + 600


def test_transaction_rolls_back_on_error(db_path: Path) -> None:
    with Store(db_path) as store:
        devices.provision(store, "cgm-1", "pt-1", "cgm", T0)

        def insert_then_fail() -> None:
            with store.transaction() as conn:
                readings.insert(conn, [_reading(T0)])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            insert_then_fail()
        assert readings.count(store) == 0


def test_provisioning_rules(db_path: Path) -> None:
    with Store(db_path) as store:
        d = devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
        assert devices.provision(store, "cgm-1", "pt-1", "cgm", T0) == d  # idempotent
        with pytest.raises(ProvisioningError, match="already bound to patient pt-1"):
            devices.provision(store, "cgm-1", "pt-2", "cgm", T0)
        with pytest.raises(ProvisioningError, match="unknown device type 'thermometer'"):
            devices.provision(store, "t-1", "pt-1", "thermometer", T0)
        with pytest.raises(ProvisioningError, match="device id 'bad/id' is invalid"):
            devices.provision(store, "bad/id", "pt-1", "cgm", T0)
        devices.unprovision(store, "cgm-1")
        assert devices.get(store, "cgm-1") is None
        with pytest.raises(ProvisioningError, match="not provisioned"):
            devices.unprovision(store, "cgm-1")


def test_flags_round_trip(db_path: Path) -> None:
    with Store(db_path) as store:
        devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
        late = Reading(
            "pt-1",
            "cgm-1",
            Signal.GLUCOSE,
            T0,
            90.0,
            T0 + 3600,
            7,
            ReadingFlag.LATE | ReadingFlag.BACKFILLED,
        )
        with store.transaction() as conn:
            readings.insert(conn, [late])
        (back,) = readings.after(store, 0, 1)
        assert back.flags == ReadingFlag.LATE | ReadingFlag.BACKFILLED
        assert back.seq == 7
        assert back.id == 1


def test_derived_commits_skip_fsync_and_restore_full_sync(db_path: Path) -> None:
    def synchronous(store: Store) -> int:
        return int(store.conn.execute("PRAGMA synchronous").fetchone()[0])

    with Store(db_path) as store:
        with store.transaction(derived=True):
            assert synchronous(store) == 1  # NORMAL: no fsync at this commit
        assert synchronous(store) == 2  # FULL again for readings
        devices.provision(store, "cgm-1", "pt-1", "cgm", T0)

        def fail_derived() -> None:
            with store.transaction(derived=True) as conn:
                readings.insert(conn, [_reading(T0)])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            fail_derived()
        assert synchronous(store) == 2
        assert readings.count(store) == 0


def test_one_process_at_a_time_runs_the_pipeline_on_a_store(db_path: Path) -> None:
    with PipelineLock(db_path):
        with pytest.raises(StoreError, match="in use by another edge-twin process"):
            PipelineLock(db_path).acquire()
        # A replay into the store a gateway is running on is refused, nothing written.
        capture = db_path.parent / "capture.jsonl"
        capture.write_text(
            json.dumps({"t": T0, "topic": "et/v1/dev/cgm-1/senml", "payload": "[]"}) + "\n"
        )
        env = {"EDGE_TWIN_STORE_PATH": str(db_path)}
        refused = cli("edge-twin", "replay", str(capture), env=env, check=False)
        assert refused.returncode == 1
        assert "in use by another edge-twin process" in refused.stderr
        assert not db_path.exists()
    with PipelineLock(db_path):  # free again once released
        pass
