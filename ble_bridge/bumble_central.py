"""The central on bumble's own Bluetooth stack: a USB or serial HCI controller in the
field (``bumble.transport``), virtual controllers on a shared link in the tests. Pairing
is LE Secure Connections, Just Works, bonding: the keys go to bumble's key store (a JSON
file with ``keystore``), so a device paired once is only encrypted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bumble import core
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.hci import Address
from bumble.keys import JsonKeyStore, MemoryKeyStore
from bumble.pairing import PairingConfig, PairingDelegate

from ble_bridge.central import Advert
from edge_twin.errors import DeviceLinkError

# bumble and its transports raise these for a device away, a refused pairing, a dropped link.
LINK_ERRORS = (core.BaseBumbleError, core.ProtocolError, asyncio.TimeoutError, OSError)


def just_works(_connection: Connection) -> PairingConfig:
    """Health devices have no display or keyboard: LE Secure Connections, Just Works,
    bonded (the gateway sits in the patient's home; the field engineer pairs in person)."""
    return PairingConfig(
        sc=True,
        mitm=False,
        bonding=True,
        delegate=PairingDelegate(io_capability=PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT),
    )


def _uuid(short: str) -> UUID:
    return UUID.from_16_bits(int(short, 16))


class BumbleLink:
    def __init__(self, connection: Connection, peer: Peer) -> None:
        self._connection = connection
        self._peer = peer
        self.disconnected = asyncio.Event()
        connection.on(connection.EVENT_DISCONNECTION, lambda *_: self.disconnected.set())

    def _one(self, uuid: str) -> Any:
        found = self._peer.get_characteristics_by_uuid(_uuid(uuid))
        return found[0] if found else None

    async def read(self, uuid: str) -> bytes | None:
        characteristic = self._one(uuid)
        if characteristic is None:
            return None
        try:
            return bytes(await self._peer.read_value(characteristic))
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"reading {uuid}: {exc!r}") from exc

    async def subscribe(self, uuid: str, on_value: Callable[[bytes], None]) -> bool:
        characteristic = self._one(uuid)
        if characteristic is None:
            return False
        try:
            # Indications where the characteristic has them: confirmed, so none is lost.
            await self._peer.subscribe(
                characteristic, lambda v: on_value(bytes(v)), prefer_notify=False
            )
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"subscribing to {uuid}: {exc!r}") from exc
        return True

    async def write(self, uuid: str, value: bytes) -> None:
        characteristic = self._one(uuid)
        if characteristic is None:
            raise DeviceLinkError(f"the device has no characteristic {uuid}")
        try:
            await self._peer.write_value(characteristic, value, with_response=True)
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"writing {uuid}: {exc!r}") from exc

    async def disconnect(self) -> None:
        if not self.disconnected.is_set():
            with contextlib.suppress(*LINK_ERRORS):
                await self._connection.disconnect()


class BumbleCentral:
    """A powered-on bumble ``Device`` as the bridge's central."""

    def __init__(self, device: Device, keystore: Path | None = None) -> None:
        self.device = device
        if keystore is not None:
            device.keystore = JsonKeyStore(namespace=None, filename=str(keystore))
        elif device.keystore is None:
            device.keystore = MemoryKeyStore()  # bonds for as long as the process lives
        device.pairing_config_factory = just_works

    async def scan(self, timeout: float) -> list[Advert]:
        seen: dict[str, Advert] = {}

        def on_advertisement(adv: Advertisement) -> None:
            listed = adv.data.get(AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS) or []
            partial = adv.data.get(AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS)
            uuids = [*listed, *(partial or [])]
            name = adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or ""
            services = tuple(bytes(reversed(bytes(u))).hex() for u in uuids)
            seen[str(adv.address)] = Advert(str(adv.address), str(name), services, adv.rssi)

        self.device.on(self.device.EVENT_ADVERTISEMENT, on_advertisement)
        try:
            await self.device.start_scanning(filter_duplicates=True)
            await asyncio.sleep(timeout)
        finally:
            self.device.remove_listener(self.device.EVENT_ADVERTISEMENT, on_advertisement)
            await self.device.stop_scanning()
        return list(seen.values())

    async def _advertising(self, address: str, timeout: float) -> bool:
        """Whether ``address`` advertises within ``timeout``: a health device advertises
        only when it has something to send or was just used, and connecting to one that
        does not would only wait (and cancelling a pending connection is not reliable on
        every controller)."""
        heard = asyncio.Event()

        def on_advertisement(adv: Advertisement) -> None:
            if str(adv.address).split("/")[0] == address.upper():
                heard.set()

        self.device.on(self.device.EVENT_ADVERTISEMENT, on_advertisement)
        try:
            await self.device.start_scanning(filter_duplicates=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), timeout)
        finally:
            self.device.remove_listener(self.device.EVENT_ADVERTISEMENT, on_advertisement)
            await self.device.stop_scanning()
        return heard.is_set()

    async def connect(self, address: str, timeout: float) -> BumbleLink:
        if not await self._advertising(address, timeout):
            raise DeviceLinkError(f"{address} is not advertising: out of range or asleep")
        try:
            connection = await self.device.connect(Address(address), timeout=timeout)
        except LINK_ERRORS as exc:
            raise DeviceLinkError(f"{address} did not answer: {exc!r}") from exc
        try:
            keys = self.device.keystore
            bonded = None if keys is None else await keys.get(str(connection.peer_address))
            if bonded is not None and bonded.ltk is not None:
                await connection.encrypt()
            else:
                await connection.pair()
            peer = Peer(connection)
            await peer.discover_services()
            for service in peer.services:
                await service.discover_characteristics()
        except LINK_ERRORS as exc:
            with contextlib.suppress(*LINK_ERRORS):
                await connection.disconnect()
            raise DeviceLinkError(f"{address}: securing the link failed: {exc!r}") from exc
        return BumbleLink(connection, peer)
