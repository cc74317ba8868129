"""The log-consumer API: durable positions, never backwards, carried over from the old
cursor and sent columns by migration 0008."""

from pathlib import Path

import pytest
import sqlite_utils

from edge_twin.alert import WEBHOOK_CONSUMER, AlarmEngine, register_channel
from edge_twin.domain import Observation
from edge_twin.errors import StoreError
from edge_twin.store import Store, alarms, consumers, devices, readings
from edge_twin.store.migrations import MIGRATIONS
from tests.conftest import T0
from tests.test_store import ALL_MIGRATIONS, _reading

READER = consumers.Consumer("reader", consumers.Log.READINGS)


def _store_with_readings(db_path: Path, n: int) -> Store:
    store = Store(db_path)
    devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
    with store.transaction() as conn:
        readings.insert(conn, [_reading(T0 + 60 * i) for i in range(n)])
    return store


def _status(store: Store) -> consumers.ConsumerStatus:
    return next(c for c in consumers.statuses(store.conn) if c.name == READER.name)


def test_a_position_is_durable_and_only_moves_forward(db_path: Path) -> None:
    with _store_with_readings(db_path, 5) as store:
        assert consumers.position(store.conn, READER) == 0
        with store.transaction() as conn:
            consumers.advance(conn, READER, 3, T0)
        assert consumers.backlog(store.conn, READER) == 2
        with (
            pytest.raises(StoreError, match="cannot move back from 3 to 2"),
            store.transaction() as conn,
        ):
            consumers.advance(conn, READER, 2, T0)
    with Store(db_path) as again:
        assert consumers.position(again.conn, READER) == 3


def test_a_position_moves_with_the_consumers_writes_or_not_at_all(db_path: Path) -> None:
    with _store_with_readings(db_path, 2) as store:

        def fails_after_advancing() -> None:
            with store.transaction() as conn:
                consumers.advance(conn, READER, 2, T0)
                raise RuntimeError("the consumer's own write failed")

        with pytest.raises(RuntimeError):
            fails_after_advancing()
        assert consumers.position(store.conn, READER) == 0


def test_failures_count_until_the_position_moves(db_path: Path) -> None:
    with _store_with_readings(db_path, 2) as store:
        with store.transaction() as conn:
            assert consumers.record_failure(conn, READER, "upstream 503", T0) == 1
            assert consumers.record_failure(conn, READER, "upstream 503", T0 + 1) == 2
        status = _status(store)
        assert (status.failures, status.last_error, status.backlog) == (2, "upstream 503", 2)
        assert status.oldest_pending_at == T0  # the first reading's arrival
        with store.transaction() as conn:
            consumers.advance(conn, READER, 2, T0 + 2)
        status = _status(store)
        assert (status.failures, status.last_error, status.backlog) == (0, None, 0)
        assert status.oldest_pending_at is None


def test_a_name_belongs_to_one_log(db_path: Path) -> None:
    with Store(db_path) as store, store.transaction() as conn:
        consumers.register(conn, READER)
        with pytest.raises(StoreError, match="reads the readings log"):
            consumers.register(conn, consumers.Consumer("reader", consumers.Log.ALARM_EVENTS))


def _before_0008(db_path: Path, rows: str) -> None:
    """A store at migration 0007 with one open alarm of pt-1 (id 1), plus ``rows`` (SQL)."""
    old = sqlite_utils.Database(db_path)
    MIGRATIONS.apply(old, stop_before="0008_log_consumers")
    old.executescript(
        f"""
        INSERT INTO patients VALUES ('pt-1', {T0});
        INSERT INTO alarms (id, patient_id, alarm_type, priority, technical, state,
            condition_present, raised_at, updated_at, reason, "values", evidence)
            VALUES (1, 'pt-1', 'low', 'medium', 0, 'active', 1, {T0}, {T0}, 'r', '{{}}', '[]');
        """
        + rows
    )
    old.conn.commit()
    old.close()


def test_migration_carries_the_cursor_and_the_sent_columns_over(db_path: Path) -> None:
    _before_0008(
        db_path,
        f"""
        INSERT INTO cursors VALUES ('estimate', 7);
        INSERT INTO alarm_events (id, alarm_id, at, recorded_at, event, actor, reason, state,
            mqtt_sent_at, webhook_sent_at, webhook_attempts) VALUES
            (1, 1, {T0}, {T0}, 'raised', 'gw', '', 'active', {T0}, {T0}, 0),
            (2, 1, {T0}, {T0}, 'acknowledged', 'nurse', '', 'acknowledged', {T0}, NULL, 3),
            (3, 1, {T0}, {T0}, 'resolved', 'gw', '', 'resolved', NULL, NULL, 0);
        """,
    )
    with Store(db_path) as store:
        assert store.schema_version() == ALL_MIGRATIONS
        by_name = {c.name: c for c in consumers.statuses(store.conn)}
    assert by_name["twin"].position == 7
    assert (by_name["alarm-mqtt"].position, by_name["alarm-mqtt"].backlog) == (2, 1)
    webhook = by_name["alarm-webhook"]
    assert (webhook.position, webhook.backlog, webhook.failures) == (1, 2, 3)


def test_a_fresh_store_has_no_consumer_until_one_runs(db_path: Path) -> None:
    with Store(db_path) as store:
        assert consumers.statuses(store.conn) == []


def test_a_webhook_that_only_ever_failed_keeps_its_attempts_across_the_migration(
    db_path: Path,
) -> None:
    _before_0008(
        db_path,
        f"""
        INSERT INTO alarm_events (id, alarm_id, at, recorded_at, event, actor, reason, state,
            webhook_attempts) VALUES (1, 1, {T0}, {T0}, 'raised', 'gw', '', 'active', 4);
        """,
    )
    with Store(db_path) as store:
        by_name = {c.name: c for c in consumers.statuses(store.conn)}
    assert set(by_name) == {"alarm-webhook"}  # MQTT never sent anything: not carried
    assert (by_name["alarm-webhook"].position, by_name["alarm-webhook"].failures) == (0, 4)


def test_a_channel_switched_on_late_starts_with_the_open_alarms_history(db_path: Path) -> None:
    with Store(db_path) as store:
        engine = AlarmEngine(store, lambda: T0)
        # A low that came and went, then a low battery that is still on.
        for t, kind, present in ((T0, "low", True), (T0 + 600, "low", False)):
            engine.observe([Observation("pt-1", kind, t, present, "r", {}, ())])
        engine.observe([Observation("pt-1", "battery_low", T0 + 900, True, "r", {}, ())])
        (still_open,) = alarms.listing(store.conn, "pt-1")
        assert still_open.alarm_type == "battery_low"
        first_open_event = alarms.events(store.conn, still_open.id)[0].id
        assert first_open_event > 1  # the low's events came before it
        late = consumers.Consumer("switched-on-days-later", consumers.Log.ALARM_EVENTS)
        register_channel(store, late, T0 + 3 * 86400)  # nothing of the last day: the end
        newest = store.conn.execute("SELECT max(id) FROM alarm_events").fetchone()[0]
        assert consumers.position(store.conn, late) == newest
        register_channel(store, WEBHOOK_CONSUMER, T0 + 3600)
        assert consumers.position(store.conn, WEBHOOK_CONSUMER) == first_open_event - 1
