"""Virtual Bluetooth devices -> the bridge -> mosquitto -> the gateway's store -> the twin.

bumble plays a blood-pressure cuff, a scale and a glucose meter on in-process controllers
(tests/ble_devices.py); the bridge pairs with each (LE Secure Connections, bonded), reads
them through the same code path as in the field, and publishes over a real broker to a
real gateway. The meter goes away for a day, stores records (a low among them), comes
back: they are backfilled, stored once, and raise no alarm."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from bumble.link import LocalLink

from ble_bridge.bridge import Bridge, BridgedDevice
from ble_bridge.bumble_central import BumbleCentral
from ble_bridge.profiles import PROFILES
from ble_bridge.publisher import BrokerAccess, DevicePublisher
from ble_bridge.state import BridgeState
from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.domain import ReadingFlag, Signal
from edge_twin.errors import DeviceLinkError
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, devices, quarantine, readings, twin_state
from tests.ble_devices import (
    StoringDevice,
    StreamingStrap,
    VirtualMeter,
    bp_record,
    central_device,
    glucose_record,
    weight_record,
)
from tests.conftest import T0, wait_until

pytestmark = pytest.mark.broker

CUFF, SCALE, METER = "bp-001", "sc-001", "gm-001"
ADDRESSES = {CUFF: "C0:00:00:00:00:01", SCALE: "C0:00:00:00:00:02", METER: "C0:00:00:00:00:03"}
DAY = 86400.0


def test_virtual_devices_reach_the_twin_and_a_meter_back_after_a_day_is_backfilled_once(
    broker: PrivateBroker, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = make_config(broker)
    with Store(cfg.store.path) as store:
        for device_id, kind in ((CUFF, "bp_cuff"), (SCALE, "scale"), (METER, "glucose_meter")):
            devices.provision(store, device_id, "pt-001", kind, T0 - DAY)
    clock = ManualClock(T0)
    access = BrokerAccess(broker.host, broker.port, cfg.mqtt.topic_prefix)
    publishers = {d: DevicePublisher(d, access) for d in ADDRESSES}
    state_file = tmp_path / "ble-state.json"
    with Gateway(cfg, clock, serve_api=False) as gw:
        for publisher in publishers.values():
            publisher.start()
        try:
            asyncio.run(scenario(gw, clock, publishers, state_file, tmp_path / "keys.json"))
        finally:
            for publisher in publishers.values():
                publisher.stop()


def stored(cfg: Config, device_id: str, signal: Signal) -> list[readings.Reading]:
    with Store(cfg.store.path) as store:
        return readings.series(store, [device_id], signal, 0, 2e9)


async def settle(gw: Gateway, messages: int) -> None:
    ingest, pipeline = gw.ingest, gw.pipeline
    assert ingest is not None
    assert pipeline is not None

    def done() -> bool:
        return ingest.stats.messages >= messages and pipeline.settled(messages)

    await asyncio.to_thread(wait_until, done, 15.0, "the gateway to ingest the bridge's values")


async def scenario(
    gw: Gateway,
    clock: ManualClock,
    publishers: dict[str, DevicePublisher],
    state_file: Path,
    keys: Path,
) -> None:
    cfg = gw.config
    link = LocalLink()
    cuff = StoringDevice(link, "Cuff", ADDRESSES[CUFF], "1810", "2a35")
    scale = StoringDevice(link, "Scale", ADDRESSES[SCALE], "181d", "2a9d")
    meter = VirtualMeter(link, "Meter", ADDRESSES[METER])
    central = central_device(link, "C0:00:00:00:00:FF")
    await central.power_on()
    for device in (cuff, scale, meter):
        await device.start()
    bumble = BumbleCentral(central, keys)
    bridge = Bridge(bumble, dict(publishers), BridgeState(state_file), clock.now, idle_s=0.3)
    bridged = {
        CUFF: BridgedDevice(CUFF, ADDRESSES[CUFF], PROFILES["blood_pressure"]),
        SCALE: BridgedDevice(SCALE, ADDRESSES[SCALE], PROFILES["weight_scale"]),
        METER: BridgedDevice(METER, ADDRESSES[METER], PROFILES["glucose"]),
    }
    try:
        # The field engineer's scan finds each device by its health service.
        found = {a.address: a.services for a in await bumble.scan(0.3)}
        assert found[ADDRESSES[CUFF]] == ("1810",)
        assert found[ADDRESSES[METER]] == ("1808",)

        # Day 1: a measurement on the cuff, two on the scale (one unsuccessful), three
        # records on the meter, the newest just taken.
        cuff.stored = [bp_record(T0 - 120, 128, 82, 71)]
        scale.stored = [weight_record(T0 - 3600, 81.25), weight_record(T0 - 60, None)]
        meter.records = [
            (n, glucose_record(n, T0 - 600 + 240 * n, v)) for n, v in ((1, 132), (2, 121), (3, 115))
        ]
        results = {d: await bridge.session(bridged[d]) for d in (CUFF, SCALE, METER)}
        assert results[CUFF].delivered == 2  # battery + measurement
        assert results[SCALE].delivered == 3
        assert results[METER].stored_records is True
        assert meter.requests == [b"\x01\x01"]  # nothing delivered yet: all
        assert await bumble.device.keystore.get_all()  # bonded with all three
        await settle(gw, 3)

        systolic = stored(cfg, CUFF, Signal.SYSTOLIC)
        assert [(r.t, r.value) for r in systolic] == [(T0 - 120, 128.0)]
        assert [r.value for r in stored(cfg, CUFF, Signal.HEART_RATE)] == [71.0]
        assert [(r.t, r.value) for r in stored(cfg, SCALE, Signal.WEIGHT)] == [(T0 - 3600, 81.25)]
        glucose = stored(cfg, METER, Signal.GLUCOSE)
        assert [(r.seq, r.value) for r in glucose] == [(1, 132.0), (2, 121.0), (3, 115.0)]
        with Store(cfg.store.path) as store:
            (bad,) = quarantine.recent(store)
            statuses = devices.statuses(store)
        assert (bad.reason, bad.device_id, bad.record_index) == ("bad_value", SCALE, 2)
        assert "unsuccessful" in bad.detail
        assert weight_record(T0 - 60, None).hex() in bad.payload.decode()  # the raw bytes
        assert statuses[METER].battery_pct == 77

        # The meter goes away: a session finds nobody.
        await meter.go_away()
        with pytest.raises(DeviceLinkError):
            await bumble.connect(ADDRESSES[METER], 0.3)

        # A day later it is back with the day's records, a low among them.
        clock.advance(DAY)
        now = clock.now()
        day = [
            (n, now - DAY + 3600 * (n - 3) * 3, v)
            for n, v in ((4, 140), (5, 52), (6, 98), (7, 104))
        ]
        meter.records += [(n, glucose_record(n, t, v)) for n, t, v in day]
        await meter.advertise()
        back = await bridge.session(bridged[METER])
        assert meter.requests[-1] == b"\x01\x03\x01\x04\x00"  # from record 4 on
        assert back.delivered == 5  # battery + 4 records
        await settle(gw, 4)
        glucose = stored(cfg, METER, Signal.GLUCOSE)
        assert [r.seq for r in glucose] == [1, 2, 3, 4, 5, 6, 7]
        assert all(r.flags & ReadingFlag.BACKFILLED for r in glucose[3:])
        with Store(cfg.store.path) as store:
            raised = [a.alarm_type for a in alarms.listing(store.conn, "pt-001", False, 100)]
            # The twin took them in: its glucose and blood pressure are as of the newest.
            glucose_at = twin_state.time_of(store, "pt-001", Signal.GLUCOSE)
            systolic_at = twin_state.time_of(store, "pt-001", Signal.SYSTOLIC)
        assert not {"low", "urgent_low", "predicted_low"} & set(raised), raised
        assert glucose_at == max(r.t for r in glucose)
        assert systolic_at == T0 - 120

        # The bridge loses its memory: everything is fetched again, and stored once.
        state_file.unlink()
        forgetful = Bridge(bumble, dict(publishers), BridgeState(state_file), clock.now, idle_s=0.3)
        await meter.advertise()
        again = await forgetful.session(bridged[METER])
        assert meter.requests[-1] == b"\x01\x01"
        assert again.delivered == 8
        await settle(gw, 5)
        assert [r.seq for r in stored(cfg, METER, Signal.GLUCOSE)] == [1, 2, 3, 4, 5, 6, 7]
        assert BridgeState(state_file).last_sequence(METER) == 7
    finally:
        for device in (cuff, scale, meter):
            await device.close()
        await central.power_off()


class Collected:
    """A publisher that keeps what it was given (the broker's part is tested above)."""

    def __init__(self) -> None:
        self.values: list[dict[str, object]] = []

    def publish(self, values: list[dict[str, object]]) -> None:
        self.values += values


def test_a_streaming_device_is_published_as_it_goes_and_a_stop_ends_its_session(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        link = LocalLink()
        strap = StreamingStrap(link, "Strap", "C0:00:00:00:00:04")
        central = central_device(link, "C0:00:00:00:00:FE")
        await central.power_on()
        await strap.start()
        out = Collected()
        bridge = Bridge(
            BumbleCentral(central),
            {"hr-001": out},
            BridgeState(tmp_path / "s.json"),
            lambda: T0,
            flush_s=0.2,
        )
        stop = asyncio.Event()
        device = BridgedDevice("hr-001", "C0:00:00:00:00:04", PROFILES["heart_rate"])
        try:
            session = asyncio.create_task(bridge.session(device, stop))
            await asyncio.sleep(0.7)
            published_while_connected = len(out.values)
            stop.set()
            result = await asyncio.wait_for(session, 5)
        finally:
            await strap.close()
            await central.power_off()
        assert published_while_connected >= 3  # flushed every 0.2 s, not at the end
        assert result.delivered == len(out.values) == result.received
        assert {v["uuid"] for v in out.values} == {"2a19", "2a37"}
        assert strap.sent >= len(out.values) - 1

    asyncio.run(run())
