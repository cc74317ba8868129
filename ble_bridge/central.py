"""The Bluetooth seam the bridge talks to; bleak_central and bumble_central implement it.
Their libraries' errors are translated there into ``DeviceLinkError``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Advert:
    address: str
    name: str
    services: tuple[str, ...]  # 16-bit UUIDs, hex
    rssi: int | None


class Link(Protocol):
    """A connected, encrypted (bonded) device."""

    disconnected: asyncio.Event

    async def read(self, uuid: str) -> bytes | None:
        """The characteristic's value; None if the device has no such characteristic."""
        ...

    async def subscribe(self, uuid: str, on_value: Callable[[bytes], None]) -> bool:
        """Notifications or indications of the characteristic; False if it has none."""
        ...

    async def write(self, uuid: str, value: bytes) -> None: ...

    async def disconnect(self) -> None: ...


class Central(Protocol):
    async def scan(self, timeout: float) -> list[Advert]: ...

    async def connect(self, address: str, timeout: float) -> Link:
        """Connect and secure the link: pair and bond the first time, encrypt with the
        bond's key after. DeviceLinkError if the device is away or refuses."""
        ...
