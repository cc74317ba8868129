"""The decoder against every rejection reason, unit conversion and arrival flags, and a
property test: arbitrary bytes and JSON never escape as an exception, and every input is
either stored or quarantined."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_twin.config import DEFAULT_STALE_AFTER_S, load_config
from edge_twin.domain import SIGNALS, DeviceType, ReadingFlag, RejectReason, Signal
from edge_twin.estimate import DEFAULT_MODELS
from edge_twin.ingest import contract
from edge_twin.ingest.writer import IngestWriter, RawMessage
from edge_twin.store import Store, devices, quarantine, readings
from tests.conftest import T0

TOPIC = "et/v1/dev/cgm-1/senml"


@pytest.fixture
def writer(db_path: Path) -> IngestWriter:
    store = Store(db_path)
    devices.provision(store, "cgm-1", "pt-1", "cgm", T0)
    devices.provision(store, "bp-1", "pt-1", "bp_cuff", T0)
    return IngestWriter(store, load_config(env={}))


def pack(*records: dict[str, Any]) -> bytes:
    return json.dumps(list(records)).encode()


def reasons(writer: IngestWriter, topic: str, payload: bytes, at: float = T0) -> list[str]:
    decoded = writer.decoder.decode(topic, payload, at)
    return [r.reason.value for r in decoded.rejections]


GOOD = {"bn": "urn:dev:id:cgm-1:", "bt": T0, "n": "glucose", "u": "mg/dL", "v": 120, "seq": 1}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b"x" * 70_000, RejectReason.OVERSIZED),
        ("et/v1/dev/cgm-1/readings", pack(GOOD), RejectReason.WRONG_TOPIC),
        ("et/v1/dev/cgm-1", pack(GOOD), RejectReason.WRONG_TOPIC),
        ("et/v1/dev/ghost-9/senml", pack(GOOD), RejectReason.UNKNOWN_DEVICE),
        (TOPIC, b"{not json", RejectReason.MALFORMED),
        (TOPIC, b"\xff\xfe\x00", RejectReason.MALFORMED),
        (TOPIC, b'{"n": "glucose"}', RejectReason.NOT_SENML),
        (TOPIC, b"[]", RejectReason.NOT_SENML),
        (TOPIC, pack({**GOOD, "n": "glucoze"}), RejectReason.UNKNOWN_MEASUREMENT),
        (TOPIC, pack({**GOOD, "u": "mg/L"}), RejectReason.WRONG_UNIT),
        (TOPIC, pack({**GOOD, "v": "120"}), RejectReason.BAD_VALUE),
        (TOPIC, pack({**GOOD, "v": 10**400}), RejectReason.BAD_VALUE),
        (TOPIC, pack({**GOOD, "v": 900}), RejectReason.OUT_OF_RANGE),
        (TOPIC, pack({**GOOD, "bt": 12.0}), RejectReason.BAD_TIME),
        (TOPIC, pack({**GOOD, "bt": T0 + 3600}), RejectReason.FUTURE_TIME),
        (TOPIC, pack({**GOOD, "n": "weight", "u": "kg", "v": 80}), RejectReason.NOT_ALLOWED),
        (TOPIC, pack({**GOOD, "bn": "urn:dev:id:cgm-2:"}), RejectReason.NOT_ALLOWED),
        (TOPIC, pack({**GOOD, "crit_": 1}), RejectReason.NOT_SENML),
    ],
)
def test_each_rejection_has_its_reason(
    writer: IngestWriter, topic: str, payload: bytes, reason: RejectReason
) -> None:
    assert reasons(writer, topic, payload) == [reason.value]


def test_units_are_converted_to_canonical(writer: IngestWriter) -> None:
    decoded = writer.decoder.decode(
        "et/v1/dev/bp-1/senml",
        pack(
            {"bn": "urn:dev:id:bp-1:", "bt": T0, "n": "systolic", "u": "kPa", "v": 16},
            {"n": "diastolic", "u": "mm[Hg]", "v": 80},
            {"n": "heart_rate", "u": "beat/min", "v": 70, "t": 1},
        ),
        T0,
    )
    assert not decoded.rejections
    values = {r.signal: (r.value, r.t) for r in decoded.readings}
    assert values[Signal.SYSTOLIC][0] == pytest.approx(120.01, abs=0.01)
    assert values[Signal.DIASTOLIC] == (80.0, T0)
    assert values[Signal.HEART_RATE] == (70.0, T0 + 1)
    mmol = writer.decoder.decode(TOPIC, pack({**GOOD, "u": "mmol/L", "v": 5.5}), T0)
    assert mmol.readings[0].value == pytest.approx(99.1, abs=0.1)


def test_a_bad_record_does_not_sink_its_pack(writer: IngestWriter) -> None:
    payload = pack(
        GOOD,
        {"n": "glucose", "u": "mg/dL", "v": 5000, "t": 300},
        {"n": "glucose", "u": "mg/dL", "v": 130, "t": 600},
    )
    result = writer.commit([RawMessage(TOPIC, payload, T0 + 600)])
    assert (result.readings_new, result.rejected) == (2, 1)
    (q,) = quarantine.recent(writer._store)
    assert (q.reason, q.record_index, q.payload, q.device_id) == (
        "out_of_range",
        1,
        payload,
        "cgm-1",
    )


def test_late_and_backfilled_readings_are_flagged(writer: IngestWriter) -> None:
    writer.commit([RawMessage(TOPIC, pack({**GOOD, "bt": T0 + 600}), T0 + 600)])
    # Older than what is stored, and arriving an hour after it was taken.
    writer.commit([RawMessage(TOPIC, pack({**GOOD, "bt": T0}), T0 + 3600)])
    store = writer._store
    by_time = {r.t: r.flags for r in readings.after(store, 0, 10)}
    assert by_time[T0 + 600] == ReadingFlag.NONE
    assert by_time[T0] == ReadingFlag.LATE | ReadingFlag.BACKFILLED


def test_status_and_online(writer: IngestWriter) -> None:
    writer.commit(
        [
            RawMessage("et/v1/dev/cgm-1/online", b"1", T0),
            RawMessage(
                "et/v1/dev/cgm-1/status",
                pack(
                    {"bn": "urn:dev:id:cgm-1:", "n": "battery", "u": "%", "v": 81},
                    {"n": "firmware", "vs": "2.1"},
                    {"n": "sensor_expires", "u": "s", "v": T0 + 86400},
                ),
                T0,
            ),
            RawMessage("et/v1/dev/cgm-1/online", b"0", T0 + 1),
        ]
    )
    status = devices.statuses(writer._store)["cgm-1"]
    assert (status.online, status.battery_pct, status.firmware) == (False, 81.0, "2.1")
    assert status.sensor_expires_at == T0 + 86400


@pytest.mark.parametrize(
    "record",
    [
        {"n": "sensor_expires", "u": "s", "v": 3600},  # relative: not a point in time
        {"n": "sensor_expires", "u": "h", "v": T0},
        {"n": "sensor_expires", "u": "s", "v": "soon"},
    ],
)
def test_a_bad_sensor_expiry_is_quarantined_with_its_reason(
    writer: IngestWriter, record: dict[str, Any]
) -> None:
    status = pack({"bn": "urn:dev:id:cgm-1:", "n": "battery", "u": "%", "v": 81}, record)
    decoded = writer.decoder.decode("et/v1/dev/cgm-1/status", status, T0)
    assert [r.reason for r in decoded.rejections] == [RejectReason.BAD_VALUE]
    assert "sensor_expires" in decoded.rejections[0].detail
    assert decoded.status is not None
    assert decoded.status.battery_pct == 81.0  # the rest of the pack is kept


def test_duplicates_in_one_batch_and_across_batches_store_once(writer: IngestWriter) -> None:
    msg = RawMessage(TOPIC, pack(GOOD), T0)
    first = writer.commit([msg, msg])
    second = writer.commit([msg])
    assert (first.readings_new, first.readings_duplicate) == (1, 1)
    assert (second.readings_new, second.readings_duplicate) == (0, 1)
    assert readings.count(writer._store) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)
senml_like = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "bn": st.sampled_from(["urn:dev:id:cgm-1:", "urn:dev:id:other:", ""])
            | st.text(max_size=10),
            "bt": st.floats(allow_nan=True) | st.integers() | st.just(T0),
            "n": st.sampled_from(["glucose", "weight", "battery", "x"]) | st.text(max_size=8),
            "u": st.sampled_from(["mg/dL", "mmol/L", "kg", "%"]) | st.text(max_size=5),
            "v": st.floats(allow_nan=True, allow_infinity=True)
            | st.integers()
            | st.text(max_size=3),
            "t": st.floats(allow_nan=True) | st.integers(min_value=-(10**30), max_value=10**30),
            "seq": st.integers() | st.none(),
            "vs": st.text(max_size=5),
        },
    ),
    max_size=6,
)
topics = st.sampled_from(
    [
        TOPIC,
        "et/v1/dev/cgm-1/status",
        "et/v1/dev/cgm-1/online",
        "et/v1/dev/x/senml",
        "et/v1/dev//senml",
        "a/b",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    topic=topics,
    payload=st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | senml_like.map(lambda v: json.dumps(v).encode()),
)
def test_arbitrary_input_is_stored_or_quarantined(
    writer: IngestWriter, topic: str, payload: bytes
) -> None:
    store = writer._store
    before_readings = readings.count(store)
    before_q = sum(quarantine.counts_by_reason(store).values())
    before_status = len(devices.statuses(store))
    decoded = writer.decoder.decode(topic, payload, T0)
    result = writer.commit([RawMessage(topic, payload, T0)])  # must not raise
    stored = readings.count(store) - before_readings
    quarantined = sum(quarantine.counts_by_reason(store).values()) - before_q
    # Rows per message are bounded; a device beyond its quarantine rate (these examples
    # all arrive at T0) has its rejected message counted, not kept.
    rows = min(len(decoded.rejections), writer.quarantine_limits.rows_per_message)
    assert quarantined == (0 if result.quarantine_dropped else rows)
    assert result.quarantine_dropped == (1 if decoded.rejections and not quarantined else 0)
    assert stored + result.readings_duplicate == len(decoded.readings)
    # Nothing vanishes unseen: the message left a reading, a quarantine row, a device
    # status, or a count of what was dropped.
    touched_status = decoded.status is not None or len(devices.statuses(store)) > before_status
    dropped = result.quarantine_dropped
    assert stored or result.readings_duplicate or quarantined or touched_status or dropped


@pytest.mark.parametrize("payload", [b"[{}]", pack({"bt": T0}), pack({"bn": "urn:dev:id:cgm-1:"})])
def test_a_pack_without_measurements_is_quarantined(writer: IngestWriter, payload: bytes) -> None:
    assert reasons(writer, TOPIC, payload) == ["not_senml"]


def test_clock_skew_is_detected_and_flagged_not_corrected(writer: IngestWriter) -> None:
    # A device whose clock runs 30 min slow, sending live every 5 minutes.
    skew = 1800.0
    for i in range(8):
        t_device = T0 + 300 * i
        writer.commit(
            [RawMessage(TOPIC, pack({**GOOD, "bt": t_device, "seq": i}), t_device + skew)]
        )
    store = writer._store
    status = devices.statuses(store)["cgm-1"]
    assert status.clock_offset_s == pytest.approx(skew)
    flags = [r.flags for r in readings.after(store, 0, 10)]
    # The evidence spans 15 min from the 4th message on; before that the skew is unknown.
    assert [ReadingFlag.CLOCK_SKEW in f for f in flags] == [False] * 3 + [True] * 5
    assert all(ReadingFlag.BACKFILLED in f for f in flags)  # safe side: no alarms on them
    assert [r.t for r in readings.after(store, 0, 10)] == [T0 + 300 * i for i in range(8)]


def test_a_backfill_burst_does_not_look_like_skew(writer: IngestWriter) -> None:
    writer.commit([RawMessage(TOPIC, pack({**GOOD, "bt": T0}), T0 + 1)])  # live
    # Back after an hour offline: the hour's readings arrive in one burst.
    burst = [{**GOOD, "bt": T0 + 300 * k, "seq": k} for k in range(1, 13)]
    writer.commit([RawMessage(TOPIC, pack(*burst), T0 + 3600 + 2)])
    store = writer._store
    assert devices.statuses(store)["cgm-1"].clock_offset_s == pytest.approx(1.0)
    flags = [r.flags for r in readings.after(store, 0, 20)]
    assert not any(ReadingFlag.CLOCK_SKEW in f for f in flags)
    assert sum(ReadingFlag.BACKFILLED in f for f in flags) == 10  # older than 10 min on arrival


def test_a_backlog_drain_after_gateway_downtime_is_not_clock_skew(writer: IngestWriter) -> None:
    # The gateway was down for a day; a day of 5-min readings arrives within seconds.
    drain = [
        RawMessage(TOPIC, pack({**GOOD, "bt": T0 + 300 * i, "seq": i}), T0 + 86_400 + i * 0.001)
        for i in range(288)
    ]
    writer.commit(drain)
    flags = [r.flags for r in readings.after(writer._store, 0, 1000)]
    assert len(flags) == 288
    assert not any(ReadingFlag.CLOCK_SKEW in f for f in flags)
    assert "cgm-1" not in devices.statuses(writer._store)  # no offset claimed without evidence


def test_every_signal_is_declared_once_with_a_filter_and_a_device() -> None:
    assert set(SIGNALS) == set(Signal) == set(DEFAULT_MODELS) == set(DEFAULT_STALE_AFTER_S)
    for signal, spec in SIGNALS.items():
        assert spec.wire_units[spec.unit](42.0) == 42.0  # the canonical unit is accepted as is
        assert spec.lo < spec.hi
        assert spec.devices, f"{signal}: no device type may send it"
        assert all(signal in kind.signals for kind in spec.devices)
        assert contract.VOCABULARY[signal.value].signal is signal
    assert {s for kind in DeviceType for s in kind.signals} == set(Signal)
