"""Bluetooth health profile decoding, byte for byte against published vectors, and against
hypothesis-made values (no crash; every value either decodes or is refused with a reason).

Vectors: the SIG's GATT definitions (field layouts) with the byte strings of Nordic
Semiconductor's Android-BLE-Common-Library tests (blood pressure, heart rate, glucose,
CGM, CRC, Date Time), SpeziBluetooth's pulse-oximeter tests and bluetooth-sig-python's
weight tests (its SFLOAT vectors are not used: it reads the exponent as biased)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_twin.domain import RejectReason, Signal
from edge_twin.ingest import gatt
from edge_twin.ingest.gatt import Refused, Value

UTC_ZONE = ZoneInfo("UTC")
AT = 1_790_000_000.0


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("8A 00", 138),
        ("BD F0", 18.9),
        ("9F F0", 15.9),
        ("0C 10", 120),
        ("D2 E4", 12.34),
        ("02 F0", 0.2),
        ("E5 F3", 99.7),
        ("E8 F3", 100.0),
        ("7A E3", 8.9),
        ("64 00", 100),
    ],
)
def test_sfloat(raw: str, value: float) -> None:
    assert gatt.sfloat(int.from_bytes(h(raw), "little")) == pytest.approx(value)


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801])
def test_sfloat_special_values_are_no_number(raw: int) -> None:
    with pytest.raises(Refused):
        gatt.sfloat(raw)


def test_float32() -> None:
    assert gatt.float32(0xFE00_04D2) == pytest.approx(12.34)  # 1234e-2
    assert gatt.float32(0x00FF_FFFF) == -1.0
    with pytest.raises(Refused):
        gatt.float32(0x007F_FFFF)


def test_crc_check_values() -> None:
    assert gatt.crc_mcrf4xx(b"123456789") == 0x6F91
    assert gatt.crc_mcrf4xx(h("3E 01 02 03 04 05 06 07 08 09")) == 0x2F01


def bp(value: str, user: int | None = None) -> list[tuple[Signal, float, float, bool]]:
    v = Value("2a35", h(value), AT, user=user)
    return [(m.signal, m.t, m.value, m.caution) for m in gatt.blood_pressure(v, UTC_ZONE)]


def test_blood_pressure_vectors() -> None:
    # Nordic: mmHg 138/88 MAP 120, time stamp of year 0 (unknown: the bridge's time),
    # pulse 60, user 1, status 0x0027 (movement, loose cuff, irregular pulse, position).
    got = bp("1E 8A 00 58 00 78 00 00 00 04 11 14 29 3B 3C 00 01 27 00", user=1)
    assert got == [
        (Signal.SYSTOLIC, AT, 138.0, True),
        (Signal.DIASTOLIC, AT, 88.0, True),
        (Signal.HEART_RATE, AT, 60.0, True),
    ]
    # kPa 18.9/11, pulse 60, status 0x0012 (loose cuff, pulse below range)
    kpa = bp("15 BD F0 0B 00 9F F0 3C 00 12 00")
    assert [round(v, 2) for _, _, v, _ in kpa] == [141.76, 82.51, 60.0]
    assert bp("00 BD F0 0B 00 9F F0") == [
        (Signal.SYSTOLIC, AT, pytest.approx(18.9), False),
        (Signal.DIASTOLIC, AT, 11.0, False),
    ]
    # A known time stamp is the device's wall clock in the home's zone.
    stamped = Value("2a35", h("02 8A 00 58 00 78 00 E2 07 04 11 0F 33 00"), AT)
    paris = gatt.blood_pressure(stamped, ZoneInfo("Europe/Paris"))
    assert paris[0].t == utc(2018, 4, 17, 13, 51, 0)  # 15:51 CEST


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("01 02 03 04 05 06", RejectReason.MALFORMED),  # too short
        ("03 02 03 04 05 06 07", RejectReason.MALFORMED),  # time stamp announced, missing
        ("00 FF 07 58 00 78 00", RejectReason.BAD_VALUE),  # systolic NaN
    ],
)
def test_blood_pressure_refusals(value: str, reason: RejectReason) -> None:
    with pytest.raises(Refused) as refused:
        gatt.blood_pressure(Value("2a35", h(value), AT), UTC_ZONE)
    assert refused.value.reason is reason


def test_another_users_measurement_is_not_the_patients() -> None:
    value = "1E 8A 00 58 00 78 00 00 00 04 11 14 29 3B 3C 00 02 27 00"  # user 2
    with pytest.raises(Refused) as refused:
        gatt.blood_pressure(Value("2a35", h(value), AT, user=1), UTC_ZONE)
    assert refused.value.reason is RejectReason.NOT_ALLOWED


def test_weight_vectors() -> None:
    def kg(value: str) -> list[tuple[float, float]]:
        return [(m.t, m.value) for m in gatt.weight(Value("2a9d", h(value), AT), UTC_ZONE)]

    assert kg("00 B0 36") == [(AT, pytest.approx(70.0))]
    assert kg("01 54 3D") == [(AT, pytest.approx(157.0 * 0.45359237))]
    assert kg("02 B0 36 E7 07 0C 19 0E 1E 2D") == [(utc(2023, 12, 25, 14, 30, 45), 70.0)]
    assert kg("0C B0 36 05 F5 00 D6 06") == [(AT, 70.0)]  # user 5, BMI and height unread
    assert kg("0F 54 3D E7 07 0C 19 0E 1E 2D 03 F5 00 A8 02")[0][0] == utc(2023, 12, 25, 14, 30, 45)
    with pytest.raises(Refused):
        kg("00 FF FF")  # measurement unsuccessful


def test_glucose_measurement_vector() -> None:
    # Nordic: seq 1, base 2019-02-27 11:10:30, offset -5 min, 30 kg/L (synthetic),
    # capillary plasma from a finger, status 0x0105 (battery low, sample size
    # insufficient, temperature too low): no usable result.
    value = "1B 01 00 E3 07 02 1B 0B 0A 1E FB FF 1E 00 12 05 01"
    with pytest.raises(Refused) as refused:
        gatt.glucose(Value("2a18", h(value), AT), UTC_ZONE)
    assert refused.value.reason is RejectReason.BAD_VALUE
    assert "sample size insufficient" in refused.value.detail
    # The same record with a clean status and 110e-5 kg/L = 110 mg/dL.
    clean = "1B 01 00 E3 07 02 1B 0B 0A 1E FB FF 6E B0 12 00 00"
    (m,) = gatt.glucose(Value("2a18", h(clean), AT), UTC_ZONE)
    assert (m.signal, m.t, m.value, m.seq, m.caution) == (
        Signal.GLUCOSE,
        utc(2019, 2, 27, 11, 5, 30),
        pytest.approx(110.0),
        1,
        False,
    )
    # mol/L: 5.5e-3 mol/L = 5.5 mmol/L; a meter's "LO" is the range's end, flagged.
    mmol = "06 02 00 E3 07 02 1B 0B 0A 1E 37 C0 11"
    assert gatt.glucose(Value("2a18", h(mmol), AT), UTC_ZONE)[0].value == pytest.approx(99.1, 0.01)
    low = "0A 03 00 E3 07 02 1B 0B 0A 1E FF 07 11 40 00"
    (lo,) = gatt.glucose(Value("2a18", h(low), AT), UTC_ZONE)
    assert (lo.value, lo.caution) == (20.0, True)
    control = "02 04 00 E3 07 02 1B 0B 0A 1E 6E B0 4A"
    with pytest.raises(Refused) as refused:
        gatt.glucose(Value("2a18", h(control), AT), UTC_ZONE)
    assert refused.value.reason is RejectReason.NOT_ALLOWED


def test_infinite_glucose_is_the_range_end_flagged_never_lost() -> None:
    low = "02 05 00 E3 07 02 1B 0B 0A 1E 02 08 11"  # concentration -INF: below the range
    (m,) = gatt.glucose(Value("2a18", h(low), AT), UTC_ZONE)
    assert (m.value, m.caution) == (20.0, True)
    high = "02 06 00 E3 07 02 1B 0B 0A 1E FE 07 11"
    assert gatt.glucose(Value("2a18", h(high), AT), UTC_ZONE)[0].value == 600.0
    cgm = gatt.cgm_records(Value("2aa7", h("06 00 02 08 06 00"), AT, SESSION))
    assert [(m.value, m.caution) for m in cgm] == [(20.0, True)]


def test_device_time_is_the_homes_wall_clock_across_a_dst_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 2026-03-29 01:30 is CET (UTC+1); 03:30 is CEST (UTC+2): the clocks went forward.
    before = Value("2a9d", h("02 B0 36 EA 07 03 1D 01 1E 00"), AT)
    after = Value("2a9d", h("02 B0 36 EA 07 03 1D 03 1E 00"), AT)
    assert gatt.weight(before, paris)[0].t == utc(2026, 3, 29, 0, 30, 0)
    assert gatt.weight(after, paris)[0].t == utc(2026, 3, 29, 1, 30, 0)


def test_a_128_bit_sig_uuid_is_read_as_its_short_form() -> None:
    doc = {"uuid": "00002A19-0000-1000-8000-00805F9B34FB", "value": "32", "at": AT}
    assert gatt.decode(message(doc), UTC_ZONE, 2**28).battery_pct == 50


SESSION = h("E2 07 04 18 0D 08 18 08 04 E0 C2")  # 2018-04-24 13:08:24, UTC+2:00, DST +1 h


def test_cgm_session_start_and_records() -> None:
    start = gatt.session_start(SESSION)
    assert start == utc(2018, 4, 24, 10, 8, 24)  # 13:08:24 at UTC+3
    with pytest.raises(Refused):
        gatt.session_start(SESSION[:-1] + b"\xc3")  # CRC error
    # UTC+14 and DST +2 h is a day ahead: no zone the Time Zone characteristic allows.
    with pytest.raises(Refused) as refused:
        gatt.session_start(SESSION[:7] + bytes([96, 8]))
    assert refused.value.reason is RejectReason.BAD_TIME
    # Nordic: 12.34 mg/dL at 5 min, status octets 02 14 FF, trend, quality, CRC 0x3F8E:
    # all warning bits, the below-device-range one among them: the range's end, flagged.
    full = Value("2aa7", h("0F E3 D2 E4 05 00 02 14 FF 02 F0 E5 F3 8E 3F"), AT, SESSION)
    (m,) = gatt.cgm_records(full)
    assert (m.t, m.value, m.seq, m.caution) == (start + 300, 20.0, 5, True)
    two = Value("2aa7", h("06 00 0C 10 05 00 06 00 0C 10 06 00"), AT, SESSION)
    assert [(m.t, m.value, m.seq) for m in gatt.cgm_records(two)] == [
        (start + 300, 120.0, 5),
        (start + 360, 120.0, 6),
    ]
    with pytest.raises(Refused) as refused:
        gatt.cgm_records(Value("2aa7", h("08 00 0C 10 06 00 58 6F"), AT, SESSION))
    assert "CRC" in refused.value.detail
    assert (
        gatt.cgm_records(Value("2aa7", h("08 00 0C 10 06 00 59 6F"), AT, SESSION))[0].value == 120
    )
    with pytest.raises(Refused) as refused:
        gatt.cgm_records(Value("2aa7", h("06 00 0C 10 06 00"), AT))
    assert refused.value.reason is RejectReason.BAD_TIME


def test_heart_rate_vectors() -> None:
    def bpm(value: str) -> float:
        return gatt.heart_rate(Value("2a37", h(value), AT))[0].value

    assert bpm("00 55") == 85
    assert bpm("1E 55 32 00 21 00") == 85
    assert bpm("1F 01 01 32 01 01 00 02 01 FF FF") == 257
    for refused in ("04 FF", "17 01 01"):  # no skin contact; RR announced, missing
        with pytest.raises(Refused):
            gatt.heart_rate(Value("2a37", h(refused), AT))


def test_pulse_oximeter_vectors() -> None:
    # SpeziBluetooth's spot check: its device status says "equipment malfunction" (and
    # low perfusion): not the patient's value.
    spot = Value("2a5e", h("0F AC F3 BE F5 E8 07 0B 1D 17 08 39 20 40 22 00 00 66 E3"), AT)
    with pytest.raises(Refused) as refused:
        gatt.plx(spot, UTC_ZONE, continuous=False)
    assert "equipment malfunction" in refused.value.detail
    # The same with low perfusion only: kept, flagged.
    spot = Value("2a5e", h("0F AC F3 BE F5 E8 07 0B 1D 17 08 39 20 40 20 00 00 66 E3"), AT)
    spo2, pulse = gatt.plx(spot, UTC_ZONE, continuous=False)
    assert (spo2.value, pulse.value, spo2.t) == (
        pytest.approx(94.0),
        pytest.approx(147.0),
        utc(2024, 11, 29, 23, 8, 57),
    )
    assert spo2.caution  # questionable, low perfusion
    for value, expected in (
        ("00 E8 F3 84 F3", (100.0, 90.0)),
        ("00 64 00 5A 00", (100.0, 90.0)),
        ("1C 5F 00 5A 00 20 00 00 00 00 57 F0", (95.0, 90.0)),
        ("1F DE F3 CA F3 CA F3 5A F5 D4 F3 B2 F2 20 01 00 00 00 7A E3", (99.0, 97.0)),
    ):
        got = gatt.plx(Value("2a5f", h(value), AT), UTC_ZONE, continuous=True)
        assert tuple(round(m.value, 6) for m in got) == expected
        assert got[0].t == AT


def message(*values: dict[str, object]) -> bytes:
    return json.dumps(list(values)).encode()


def test_a_message_keeps_good_values_and_refuses_bad_ones_each_with_a_reason() -> None:
    parsed = gatt.decode(
        message(
            {"uuid": "2a35", "value": "008a0058007800", "at": AT},
            {"uuid": "2a35", "value": "0102", "at": AT},
            {"uuid": "2a19", "value": "57", "at": AT},
            {"uuid": "2a00", "value": "41", "at": AT},
            {"uuid": "2a37", "value": "0055"},
            {"uuid": "2a37", "value": "zz", "at": AT},
        ),
        UTC_ZONE,
        2**28,
    )
    assert [(i, m.signal) for i, m in parsed.measurements] == [
        (0, Signal.SYSTOLIC),
        (0, Signal.DIASTOLIC),
    ]
    assert parsed.battery_pct == 87
    assert [(r.record_index, r.reason.value) for r in parsed.rejections] == [
        (1, "malformed"),
        (3, "unknown_measurement"),
        (4, "bad_time"),
        (5, "malformed"),
    ]


UUIDS = st.sampled_from(["2a35", "2a36", "2a9d", "2a18", "2aa7", "2a37", "2a5e", "2a5f", "2a19"])


@settings(max_examples=600, deadline=None)
@given(
    uuid=UUIDS,
    value=st.binary(max_size=40),
    start=st.one_of(st.none(), st.just(SESSION), st.binary(max_size=12)),
    user=st.one_of(st.none(), st.integers(0, 255)),
)
def test_any_bytes_decode_or_are_refused_with_a_reason(
    uuid: str, value: bytes, start: bytes | None, user: int | None
) -> None:
    doc: dict[str, object] = {"uuid": uuid, "value": value.hex(), "at": AT}
    if start is not None:
        doc["session_start"] = start.hex()
    if user is not None:
        doc["user"] = user
    parsed = gatt.decode(message(doc), UTC_ZONE, 2**28)
    decoded = bool(parsed.measurements) or parsed.battery_pct is not None
    assert decoded or parsed.rejections or uuid == "2a36"
    assert all(r.record_index == 0 and r.detail for r in parsed.rejections)
    for _, m in parsed.measurements:
        assert math.isfinite(m.value)
        assert math.isfinite(m.t)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_payload_is_a_message_or_refused(payload: bytes) -> None:
    parsed = gatt.decode(payload, UTC_ZONE, 2**28)
    assert parsed.measurements or parsed.rejections or parsed.battery_pct is not None
