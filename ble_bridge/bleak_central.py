"""The central on BlueZ through bleak, for a gateway's own Bluetooth adapter. BlueZ keeps
the bonds (``pair=True`` pairs the first time; a bonded device is encrypted from then on).

Not exercised by the test suite: this machine has no Bluetooth adapter and no BlueZ
daemon; the bridge's logic is tested through bumble_central on virtual controllers, and
this adapter is kept to the same small seam (central.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from ble_bridge.central import Advert
from ble_bridge.profiles import full_uuid, short_uuid
from edge_twin.errors import DeviceLinkError

LINK_ERRORS = (BleakError, asyncio.TimeoutError, OSError, EOFError)


class BleakLink:
    def __init__(self, client: BleakClient, disconnected: asyncio.Event) -> None:
        self._client = client
        self.disconnected = disconnected

    def _has(self, uuid: str) -> bool:
        return self._client.services.get_characteristic(full_uuid(uuid)) is not None

    async def read(self, uuid: str) -> bytes | None:
        if not self._has(uuid):
            return None
        try:
            return bytes(await self._client.read_gatt_char(full_uuid(uuid)))
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"reading {uuid}: {exc!r}") from exc

    async def subscribe(self, uuid: str, on_value: Callable[[bytes], None]) -> bool:
        if not self._has(uuid):
            return False
        try:
            await self._client.start_notify(full_uuid(uuid), lambda _c, v: on_value(bytes(v)))
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"subscribing to {uuid}: {exc!r}") from exc
        return True

    async def write(self, uuid: str, value: bytes) -> None:
        try:
            await self._client.write_gatt_char(full_uuid(uuid), value, response=True)
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"writing {uuid}: {exc!r}") from exc

    async def disconnect(self) -> None:
        with contextlib.suppress(*LINK_ERRORS):
            await self._client.disconnect()


class BleakCentral:
    async def scan(self, timeout: float) -> list[Advert]:
        try:
            found = await BleakScanner.discover(timeout=timeout, return_adv=True)
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"scanning failed (is bluetoothd running?): {exc!r}") from exc
        return [
            Advert(
                device.address,
                adv.local_name or "",
                tuple(short_uuid(u) for u in adv.service_uuids),
                adv.rssi,
            )
            for device, adv in found.values()
        ]

    async def connect(self, address: str, timeout: float) -> BleakLink:
        disconnected = asyncio.Event()
        client = BleakClient(address, lambda _c: disconnected.set(), timeout=timeout, pair=True)
        try:
            await client.connect()
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"{address} did not answer or refused pairing: {exc!r}") from exc
        return BleakLink(client, disconnected)
