"""Virtual Bluetooth health devices on bumble's in-process controllers (no radio, no
kernel): GATT servers that behave as the real ones do. A cuff and a scale indicate their
stored measurements once subscribed, then hang up; a glucose meter keeps numbered records
and answers the Record Access Control Point. Each can go away (out of range) and come
back. All share one ``LocalLink``: the air."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from ble_bridge.bumble_central import just_works

INDICATE = Characteristic.Properties.INDICATE
NOTIFY = Characteristic.Properties.NOTIFY
READ = Characteristic.Properties.READ


def u16(short: str) -> UUID:
    return UUID.from_16_bits(int(short, 16))


def sfloat(mantissa: int, exponent: int = 0) -> bytes:
    return struct.pack("<H", ((exponent & 0xF) << 12) | (mantissa & 0x0FFF))


def date_time(t: float) -> bytes:
    d = datetime.fromtimestamp(t, UTC)
    return struct.pack("<HBBBBB", d.year, d.month, d.day, d.hour, d.minute, d.second)


def bp_record(t: float, systolic: int, diastolic: int, pulse: int) -> bytes:
    """mmHg, time stamp, pulse rate."""
    return (
        bytes([0x06])
        + sfloat(systolic)
        + sfloat(diastolic)
        + sfloat(100)
        + date_time(t)
        + sfloat(pulse)
    )


def weight_record(t: float, kg: float | None) -> bytes:
    """SI, time stamp; None: the scale's "measurement unsuccessful"."""
    raw = 0xFFFF if kg is None else round(kg / 0.005)
    return bytes([0x02]) + struct.pack("<H", raw) + date_time(t)


def glucose_record(seq: int, t: float, mgdl: int) -> bytes:
    """Concentration in kg/L (mg/dL x 1e-5), capillary whole blood from a finger."""
    return bytes([0x02]) + struct.pack("<H", seq) + date_time(t) + sfloat(mgdl, -5) + b"\x11"


def central_device(link: LocalLink, address: str) -> Device:
    return _device(link, "gateway", address)


def _device(link: LocalLink, name: str, address: str) -> Device:
    controller = Controller(name, link=link)
    return Device(
        name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller))
    )


class VirtualDevice:
    """A peripheral advertising one health service, with a battery."""

    def __init__(
        self, link: LocalLink, name: str, address: str, service: str, chars: list[Characteristic]
    ) -> None:
        self.device = _device(link, name, address)
        self.device.pairing_config_factory = just_works
        self.service = service
        self.tasks: set[asyncio.Task[None]] = set()
        battery = Characteristic(
            u16("2a19"), READ, Characteristic.Permissions.READABLE, bytes([77])
        )
        self.device.add_services([Service(u16(service), chars), Service(u16("180f"), [battery])])

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        await self.device.power_on()
        await self.advertise()

    async def advertise(self) -> None:
        data = AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.device.name.encode()),
                (
                    AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                    bytes(u16(self.service)),
                ),
            ]
        )
        await self.device.start_advertising(
            advertising_data=bytes(data), advertising_interval_min=20, advertising_interval_max=20
        )

    async def go_away(self) -> None:
        await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            await connection.disconnect(reason=0x08)  # as a supervision timeout looks

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.device.stop_advertising()
        await self.device.power_off()


class StoringDevice(VirtualDevice):
    """A cuff or a scale: indicates its stored measurements once subscribed (each
    confirmed before the next), then forgets them and hangs up."""

    def __init__(self, link: LocalLink, name: str, address: str, service: str, char: str) -> None:
        self.measurement = Characteristic(u16(char), INDICATE, Characteristic.Permissions(0))
        super().__init__(link, name, address, service, [self.measurement])
        self.stored: list[bytes] = []
        self.measurement.on(self.measurement.EVENT_SUBSCRIPTION, self._subscribed)

    def _subscribed(self, connection: Connection, notify: bool, indicate: bool) -> None:
        if indicate:
            self.spawn(self._send(connection))

    async def _send(self, connection: Connection) -> None:
        while self.stored:
            await self.device.indicate_subscriber(connection, self.measurement, self.stored[0])
            self.stored.pop(0)
        await asyncio.sleep(0.05)
        await connection.disconnect()


class VirtualMeter(VirtualDevice):
    """A glucose meter: numbered records, fetched with the Record Access Control Point."""

    def __init__(self, link: LocalLink, name: str, address: str) -> None:
        self.measurement = Characteristic(u16("2a18"), NOTIFY, Characteristic.Permissions(0))
        self.racp = Characteristic(
            u16("2a52"),
            Characteristic.Properties.WRITE | INDICATE,
            Characteristic.Permissions.WRITEABLE
            | Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION,
            CharacteristicValue(write=self._on_racp),
        )
        super().__init__(link, name, address, "1808", [self.measurement, self.racp])
        self.records: list[tuple[int, bytes]] = []
        self.requests: list[bytes] = []

    def _on_racp(self, connection: Connection, value: bytes) -> None:
        self.requests.append(bytes(value))
        self.spawn(self._answer(connection, bytes(value)))

    async def _answer(self, connection: Connection, request: bytes) -> None:
        if request == b"\x01\x01":
            chosen = self.records
        elif request[:3] == b"\x01\x03\x01" and len(request) == 5:
            first = int.from_bytes(request[3:5], "little")
            chosen = [r for r in self.records if r[0] >= first]
        else:
            await self.device.indicate_subscriber(
                connection, self.racp, b"\x06\x00" + request[:1] + b"\x02"
            )
            return
        for _, record in chosen:
            await self.device.notify_subscriber(connection, self.measurement, record)
        code = b"\x01" if chosen else b"\x06"
        await self.device.indicate_subscriber(connection, self.racp, b"\x06\x00\x01" + code)


class StreamingStrap(VirtualDevice):
    """A heart-rate strap: notifies a beat rate every ``every_s`` while subscribed."""

    def __init__(self, link: LocalLink, name: str, address: str, every_s: float = 0.05) -> None:
        self.measurement = Characteristic(u16("2a37"), NOTIFY, Characteristic.Permissions(0))
        super().__init__(link, name, address, "180d", [self.measurement])
        self.every_s = every_s
        self.sent = 0
        self.measurement.on(self.measurement.EVENT_SUBSCRIPTION, self._subscribed)

    def _subscribed(self, connection: Connection, notify: bool, indicate: bool) -> None:
        if notify:
            self.spawn(self._stream(connection))

    async def _stream(self, connection: Connection) -> None:
        while connection.handle in self.device.connections:
            await self.device.notify_subscriber(
                connection, self.measurement, bytes([0x06, 60 + self.sent % 20])
            )
            self.sent += 1
            await asyncio.sleep(self.every_s)
