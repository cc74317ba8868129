"""Sessions with bridged devices: connect (bonded), read, fetch stored records, publish.

A cuff or scale indicates its stored measurements once the bridge subscribes and then
disconnects; a glucose meter is asked for the records after the last one delivered
(Record Access Control Point, '>= last + 1'); streaming devices (heart-rate straps,
continuous oximeters, a CGM) stay connected and are published every ``flush_s``.
Values are published raw, with the time the bridge received them: the gateway decodes
them (edge_twin/ingest/gatt.py), so a bad one is quarantined with its bytes.

Event times: a device's own time stamps where it has them; else ``now()`` at reception
(an injectable clock, so a test runs on its own time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ble_bridge.central import Central, Link
from ble_bridge.profiles import (
    BATTERY_LEVEL,
    CGM_SESSION_START,
    RACP,
    Profile,
    racp_done,
    racp_request,
    record_sequence,
)
from ble_bridge.state import BridgeState
from edge_twin.errors import BrokerError, DeviceLinkError

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, values: list[dict[str, Any]]) -> None: ...


@dataclass(frozen=True, slots=True)
class BridgedDevice:
    device_id: str  # as provisioned on the gateway (its broker user name)
    address: str
    profile: Profile
    user: int | None = None  # the patient's user index on a shared cuff or scale


@dataclass(slots=True)
class SessionResult:
    received: int = 0
    delivered: int = 0
    stored_records: bool | None = None  # the meter said it sent them all (None: not asked)
    pending: int = 0  # values kept for the next session: the broker did not acknowledge


@dataclass(slots=True)
class _Session:
    device: BridgedDevice
    now: Callable[[], float]
    session_start: str | None = None
    values: list[dict[str, Any]] = field(default_factory=list)  # not yet delivered
    received: int = 0
    sequences: list[int] = field(default_factory=list)
    last_value: float = 0.0
    racp: asyncio.Future[bool] | None = None

    def on(self, uuid: str) -> Callable[[bytes], None]:
        def received(value: bytes) -> None:
            doc: dict[str, Any] = {"uuid": uuid, "value": value.hex(), "at": self.now()}
            if self.session_start is not None:
                doc["session_start"] = self.session_start
            if self.device.user is not None:
                doc["user"] = self.device.user
            self.values.append(doc)
            self.received += 1
            sequence = record_sequence(uuid, value)
            if sequence is not None:
                self.sequences.append(sequence)
            self.last_value = asyncio.get_running_loop().time()

        return received

    def on_racp(self, value: bytes) -> None:
        done = racp_done(value)
        if done is not None and self.racp is not None and not self.racp.done():
            self.racp.set_result(done)


class Bridge:
    def __init__(
        self,
        central: Central,
        publishers: dict[str, Publisher],
        state: BridgeState,
        now: Callable[[], float],
        idle_s: float = 3.0,
        flush_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        racp_timeout_s: float = 60.0,
    ) -> None:
        self.central = central
        self.publishers = publishers
        self.state = state
        self.now = now
        self.idle_s = idle_s
        self.flush_s = flush_s
        self.connect_timeout_s = connect_timeout_s
        self.racp_timeout_s = racp_timeout_s
        self._pending: dict[str, list[dict[str, Any]]] = {}

    async def session(
        self, device: BridgedDevice, stop: asyncio.Event | None = None
    ) -> SessionResult:
        """One connection to ``device``: DeviceLinkError if it is away or fails. What it
        received is published even if the link broke half way; ``stop`` ends a streaming
        device's session (the service stopping), what it sent delivered first."""
        result = SessionResult()
        link = await self.central.connect(device.address, self.connect_timeout_s)
        s = _Session(device, self.now)
        try:
            await self._collect(link, s, result, stop or asyncio.Event())
        finally:
            await link.disconnect()
            result.received = s.received
            await self._deliver(device, s, result)
        return result

    async def _collect(
        self, link: Link, s: _Session, result: SessionResult, stop: asyncio.Event
    ) -> None:
        profile = s.device.profile
        if profile.name == "cgm":
            start = await link.read(CGM_SESSION_START)
            s.session_start = None if start is None else start.hex()
        battery = await link.read(BATTERY_LEVEL)
        if battery is not None:
            s.on(BATTERY_LEVEL)(battery)
        s.last_value = asyncio.get_running_loop().time()
        for uuid in profile.measurements:
            await link.subscribe(uuid, s.on(uuid))
        if profile.stored_records and await link.subscribe(RACP, s.on_racp):
            s.racp = asyncio.get_running_loop().create_future()
            await link.write(RACP, racp_request(self.state.last_sequence(s.device.device_id)))
            try:
                result.stored_records = await asyncio.wait_for(s.racp, self.racp_timeout_s)
            except TimeoutError:
                log.warning("%s: the stored records did not end in time", s.device.device_id)
        if profile.streams:
            while not (link.disconnected.is_set() or stop.is_set()):
                await _either(link.disconnected, stop, self.flush_s)
                await self._deliver(s.device, s, result)
            return
        # A cuff or scale sends what it has, then hangs up; a meter waits: leave once quiet.
        loop = asyncio.get_running_loop()
        while not (link.disconnected.is_set() or stop.is_set()):
            quiet = loop.time() - s.last_value
            if quiet >= self.idle_s:
                return
            await _either(link.disconnected, stop, self.idle_s - quiet)

    async def _deliver(self, device: BridgedDevice, s: _Session, result: SessionResult) -> None:
        values = [*self._pending.pop(device.device_id, []), *s.values]
        sequences, s.values, s.sequences = s.sequences, [], []
        if not values:
            return
        try:
            await asyncio.to_thread(self.publishers[device.device_id].publish, values)
        except BrokerError as exc:
            self._pending[device.device_id] = values[-10_000:]  # bounded: oldest dropped
            result.pending = len(self._pending[device.device_id])
            log.error("%s: %d values kept for later: %s", device.device_id, len(values), exc)
            return
        result.delivered += len(values)
        if sequences:
            self.state.delivered(device.device_id, max(sequences))

    async def run(self, devices: list[BridgedDevice], retry_s: float, stop: asyncio.Event) -> None:
        """Every device, again and again, until ``stop``: a device away is tried again
        after ``retry_s`` (a cuff is in range when the patient uses it)."""

        async def loop(device: BridgedDevice) -> None:
            while not stop.is_set():
                try:
                    got = await self.session(device, stop)
                    log.info(
                        "%s: %d values, %d delivered", device.device_id, got.received, got.delivered
                    )
                except DeviceLinkError as exc:
                    log.debug("%s: %s", device.device_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)

        await asyncio.gather(*(loop(d) for d in devices))


async def _either(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    """Wait until either event is set, or ``timeout`` passes."""
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
