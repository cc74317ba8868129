"""The quarantine is bounded: a message is kept once however many of its records are
refused, an oversized one only by its first bytes (with its hash and length), a device
beyond its rate is counted (and raises device_flooding), a device's share is capped, old
rows go; what is held for the clock is never dropped; listings read only a prefix."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import httpx
import sqlite_utils

from edge_twin.alert import AlarmEngine, AlertStage
from edge_twin.config import Config, load_config
from edge_twin.domain import Rejection, RejectReason
from edge_twin.ingest import IngestWriter, RawMessage
from edge_twin.store import Store, alarms, devices, quarantine
from edge_twin.store.migrations import MIGRATIONS
from tests.conftest import T0, api_user, serving_api

TOPIC = "et/v1/dev/cgm-1/senml"


def writer(db: Path, **ingest: object) -> IngestWriter:
    store = Store(db)
    devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
    cfg = load_config(env={f"EDGE_TWIN_INGEST_{k.upper()}": str(v) for k, v in ingest.items()})
    return IngestWriter(store, cfg)


def bad_pack(records: int) -> bytes:
    """A SenML pack of ``records`` readings, each out of range."""
    base = {"bn": "urn:dev:id:cgm-1:", "bt": T0, "n": "glucose", "u": "mg/dL"}
    rest = [{"n": "glucose", "u": "mg/dL", "v": 9999.0, "t": -i * 60.0} for i in range(1, records)]
    rows = [{**base, "v": 9999.0}, *rest]
    return json.dumps(rows, separators=(",", ":")).encode()


def file_bytes(db: Path) -> int:
    return sum(os.path.getsize(p) for p in (db, Path(f"{db}-wal")) if p.exists())


def test_a_pack_of_1150_bad_records_is_kept_once_in_bounded_rows(db_path: Path) -> None:
    w = writer(db_path)
    payload = bad_pack(1150)
    assert len(payload) > 59_000  # about the probe's 61 KB pack
    before = file_bytes(db_path)
    result = w.commit([RawMessage(TOPIC, payload, T0)])
    assert result.rejected == 1150  # every refusal counted
    messages, kept = quarantine.size(w._store)
    assert (messages, kept) == (1, len(payload))  # the message once
    rows = quarantine.recent(w._store, 10_000)
    assert len(rows) == w.quarantine_limits.rows_per_message
    assert "and 1101 more records refused" in rows[0].detail  # the newest row: the summary
    assert rows[0].record_index is None
    # About the pack's size on disk, not 3000 copies of it (187 MB before the fix).
    assert file_bytes(db_path) - before < 4 * len(payload) + 200_000


def test_an_oversized_message_keeps_its_first_bytes_its_hash_and_length(db_path: Path) -> None:
    w = writer(db_path)
    payload = b"x" * (w.decoder._limits.max_payload_bytes + 10_000)
    w.commit([RawMessage(TOPIC, payload, T0)])
    (row,) = quarantine.recent(w._store)
    assert row.reason == RejectReason.OVERSIZED.value
    assert (row.length, row.truncated) == (len(payload), True)
    assert len(row.payload) == 4096  # ingest.quarantine_keep_bytes
    assert row.sha256 == hashlib.sha256(payload).hexdigest()
    # It cannot be decoded again from its first bytes: it stays, as it is.
    again = w.reprocess(RejectReason.OVERSIZED, T0 + 60)
    assert again.still_rejected == {"oversized": 1}
    assert quarantine.count(w._store, "oversized") == 1


def test_a_flooding_device_is_counted_not_kept_and_raises_device_flooding(
    db_path: Path,
) -> None:
    w = writer(db_path, quarantine_per_device_per_min=10)
    garbage = [RawMessage(TOPIC, b"not json %d" % i, T0 + i * 0.1) for i in range(100)]
    result = w.commit(garbage)
    assert result.quarantine_dropped == 90
    assert quarantine.size(w._store)[0] == 10
    (dropped,) = quarantine.dropped_since(w._store.conn, T0)
    assert (dropped.device_key, dropped.dropped) == ("cgm-1", 90)
    stage = AlertStage(w._store, AlarmEngine(w._store, lambda: T0 + 30), 900.0)
    stage.tick(T0 + 30)
    (flood,) = alarms.listing(w._store.conn, "pt-1")
    assert flood.alarm_type == "device_flooding"
    assert "cgm-1: 90 bad messages not kept" in flood.reason
    # The next minute it may quarantine again; ten minutes of quiet clear the alarm.
    w.commit([RawMessage(TOPIC, b"junk", T0 + 120)])
    assert quarantine.size(w._store)[0] == 11
    stage.tick(T0 + 30 + 700)
    assert not alarms.listing(w._store.conn, "pt-1")


def good_pack(first_t: float, count: int, every_s: float) -> bytes:
    rows = [{"bn": "urn:dev:id:cgm-1:", "bt": first_t, "n": "glucose", "u": "mg/dL", "v": 120.0}]
    rows += [{"n": "glucose", "u": "mg/dL", "v": 120.0, "t": i * every_s} for i in range(1, count)]
    return json.dumps(rows).encode()


def test_valid_readings_far_faster_than_a_cgm_samples_are_stored_and_raise_device_flooding(
    db_path: Path,
) -> None:
    w = writer(db_path)
    stage = AlertStage(w._store, AlarmEngine(w._store, lambda: T0), 900.0)
    stage.tick(T0)  # the first check marks where the log ends
    # A day of a CGM's backlog at once (every 5 min of its own time) is not a flood.
    w.commit([RawMessage(TOPIC, good_pack(T0 - 86_400.0, 288, 300.0), T0 + 1)])
    stage.tick(T0 + 60)
    assert not alarms.listing(w._store.conn, "pt-1")
    # The same CGM at 100x its rate: a reading every 3 s of its own time.
    w.commit([RawMessage(TOPIC, good_pack(T0 + 100, 40, 3.0), T0 + 120)])
    stage.tick(T0 + 120)
    (flood,) = alarms.listing(w._store.conn, "pt-1")
    assert flood.alarm_type == "device_flooding"
    assert "cgm-1: 20 glucose readings a minute of its own time (at most 2 expected)" in (
        flood.reason
    )
    assert quarantine.size(w._store)[0] == 0  # every reading stored, nothing refused
    # Back to its rate: the alarm holds for the flood window (no flapping), then clears.
    w.commit([RawMessage(TOPIC, good_pack(T0 + 500, 1, 300.0), T0 + 180)])
    stage.tick(T0 + 180)
    assert alarms.listing(w._store.conn, "pt-1")
    stage.tick(T0 + 120 + quarantine.FLOOD_WINDOW_S + 1)
    assert not alarms.listing(w._store.conn, "pt-1")


def test_a_flood_beside_an_old_reading_is_still_a_flood_and_a_restart_does_not_clear_it(
    db_path: Path,
) -> None:
    w = writer(db_path)
    stage = AlertStage(w._store, AlarmEngine(w._store, lambda: T0), 900.0)
    stage.tick(T0)
    old = RawMessage(TOPIC, good_pack(T0 - 7200.0, 1, 300.0), T0 + 1)  # two hours late
    w.commit([old, RawMessage(TOPIC, good_pack(T0 + 100, 40, 3.0), T0 + 2)])
    stage.tick(T0 + 60)
    (flood,) = alarms.listing(w._store.conn, "pt-1")
    assert "20 glucose readings a minute" in flood.reason
    # A restart: the new stage's first check cannot see the flood yet, and says nothing.
    restarted = AlertStage(w._store, AlarmEngine(w._store, lambda: T0 + 70), 900.0)
    restarted.tick(T0 + 70)
    assert alarms.listing(w._store.conn, "pt-1")


def test_readings_held_for_the_clock_are_never_dropped(db_path: Path) -> None:
    w = writer(db_path, quarantine_per_device_per_min=1, quarantine_device_max_bytes=65_536)
    held = Rejection(RejectReason.CLOCK_UNSYNCHRONISED, "ahead of an unsynchronised clock")
    items = [
        quarantine.Rejected(T0, TOPIC, b"[%d]" % i + b" " * 2000, "cgm-1", [held])
        for i in range(200)
    ]
    with w._store.transaction() as conn:
        stored = quarantine.insert(conn, items, w.quarantine_limits)
    assert (stored.messages, stored.dropped, stored.evicted) == (200, 0, 0)
    assert quarantine.count(w._store, "clock_unsynchronised") == 200


def test_a_devices_share_is_capped_oldest_first_and_old_rows_go(db_path: Path) -> None:
    w = writer(db_path, quarantine_device_max_bytes=65_536, quarantine_per_device_per_min=1000)
    payload = b"y" * 20_000
    w.commit([RawMessage(TOPIC, payload + b"%d" % i, T0 + i) for i in range(10)])
    messages, kept = quarantine.size(w._store)
    assert kept <= 65_536
    assert messages == 3
    kept_times = sorted(q.received_at for q in quarantine.recent(w._store, 10))
    assert kept_times == [T0 + 7, T0 + 8, T0 + 9]  # the newest kept
    assert w.purge_quarantine(T0 + 31 * 86400) == 3  # ingest.quarantine_retain_days 30
    assert w.purge_quarantine(T0 + 31 * 86400, batch=1) == 0
    assert quarantine.size(w._store) == (0, 0)


def test_old_quarantine_rows_become_one_message_each(db_path: Path) -> None:
    old = sqlite_utils.Database(db_path)
    MIGRATIONS.apply(old, stop_before="0019_quarantine_messages")
    rows = [
        (T0, TOPIC, b"[1,2]", "malformed", "record 0", 0, "cgm-1"),
        (T0, TOPIC, b"[1,2]", "malformed", "record 1", 1, "cgm-1"),
        (T0 + 1, TOPIC, b"[3]", "clock_unsynchronised", "held", None, "cgm-1"),
    ]
    old.conn.executemany(
        "INSERT INTO quarantine (received_at, topic, payload, reason, detail, record_index,"
        " device_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    old.conn.commit()
    old.close()
    with Store(db_path) as store:
        assert quarantine.size(store) == (2, len(b"[1,2]") + len(b"[3]"))
        found = sorted(quarantine.recent(store), key=lambda q: q.id)
        assert [(q.reason, q.record_index, q.payload) for q in found] == [
            ("malformed", 0, b"[1,2]"),
            ("malformed", 1, b"[1,2]"),
            ("clock_unsynchronised", None, b"[3]"),
        ]
        assert found[0].message_id == found[1].message_id != found[2].message_id


def test_the_api_lists_metadata_from_a_prefix_only(db_path: Path, make_config: object) -> None:
    w = writer(db_path)
    big = b"[" + b" " * 60_000 + b"]"
    w.commit([RawMessage(TOPIC, big, T0)])
    w._store.close()
    cfg: Config = make_config()  # type: ignore[operator]
    headers = api_user(db_path, "engineer", "eng-q")
    with serving_api(replace(cfg)) as url:
        (q,) = httpx.get(f"{url}/quarantine", headers=headers, timeout=10).json()
    assert q["payload_size"] == len(big)
    assert q["payload_truncated"] is False
    assert "payload_text" not in q  # an engineer sees no payload
    with Store(db_path) as store:
        (listed,) = quarantine.recent(store)
    assert len(listed.payload) == quarantine.PREVIEW_BYTES


def test_decoding_again_never_drops_what_it_puts_back(db_path: Path) -> None:
    w = writer(db_path, quarantine_per_device_per_min=10)
    # 100 readings held while the clock was not synchronised, from a device that really is
    # two hours ahead: once released they are future_time, and all of them stay.
    held = Rejection(RejectReason.CLOCK_UNSYNCHRONISED, "ahead of an unsynchronised clock")
    ahead = T0 + 7200
    items = [
        quarantine.Rejected(
            T0 + i,
            TOPIC,
            json.dumps(
                [
                    {
                        "bn": "urn:dev:id:cgm-1:",
                        "bt": ahead + i,
                        "n": "glucose",
                        "u": "mg/dL",
                        "v": 100,
                    }
                ]
            ).encode(),
            "cgm-1",
            [held],
        )
        for i in range(100)
    ]
    with w._store.transaction() as conn:
        quarantine.insert(conn, items, w.quarantine_limits)
    released = w.reprocess(RejectReason.CLOCK_UNSYNCHRONISED, T0 + 200)
    assert released.still_rejected == {"future_time": 100}
    assert quarantine.count(w._store, "future_time") == 100
    again = w.reprocess(RejectReason.FUTURE_TIME, T0 + 300)  # still ahead: put back, all
    assert again.still_rejected == {"future_time": 100}
    assert quarantine.count(w._store, "future_time") == 100
