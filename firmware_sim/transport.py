"""Faults of home networks and device firmware, applied to a device's message stream.

    [Message] (in send order, true send times) -> apply_faults -> [Message] (as delivered)

Each fault has one knob, and the tests measure that the knob does what it says:

- ``p_drop``: a message never reaches the broker (QoS 0 firmware, buffer overflow).
- ``p_duplicate``: a message is sent twice (a PUBACK was lost, the firmware resent it).
- ``p_reorder``: a message is held back behind up to ``reorder_max`` later ones.
- ``offline_per_day``: the device goes offline for ``offline_minutes``; what it measured
  meanwhile is sent in one burst when it reconnects (a backfill).
- ``p_malformed``: the payload is corrupted in flight or by a firmware bug.
- ``home_outages_per_day``: the home's Wi-Fi goes down for ``offline_minutes``; every
  device of the home holds its data and all reconnect and backfill at the same moment
  (a reconnect storm). The windows are the home's, drawn once (``outage_windows``).

Clock skew and drift are properties of the device's clock, not of transport: they live in
``DeviceClock`` and change the timestamps the firmware writes into payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from firmware_sim.messages import Message


@dataclass(frozen=True)
class TransportFaults:
    p_drop: float = 0.0
    p_duplicate: float = 0.0
    p_reorder: float = 0.0
    reorder_max: int = 5
    offline_per_day: float = 0.0
    offline_minutes: tuple[float, float] = (30.0, 240.0)
    p_malformed: float = 0.0
    home_outages_per_day: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_drop", "p_duplicate", "p_reorder", "p_malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.reorder_max < 1 or self.offline_per_day < 0 or self.home_outages_per_day < 0:
            raise ValueError("reorder_max must be >= 1, outage rates >= 0")

    @property
    def any(self) -> bool:
        return any(
            (
                self.p_drop,
                self.p_duplicate,
                self.p_reorder,
                self.offline_per_day,
                self.p_malformed,
                self.home_outages_per_day,
            )
        )


RESEND_DELAY_S = 2.0


Window = tuple[float, float]


def outage_windows(
    rate_per_day: float,
    start: float,
    end: float,
    minutes: tuple[float, float],
    rng: np.random.Generator,
) -> list[Window]:
    """Poisson(rate) offline windows in [start, end), each lasting ``minutes`` (a range)."""
    windows = []
    for _ in range(rng.poisson(rate_per_day * (end - start) / 86400.0)):
        at = rng.uniform(start, end)
        windows.append((at, at + 60.0 * rng.uniform(*minutes)))
    return windows


def apply_faults(
    messages: list[Message],
    faults: TransportFaults,
    rng: np.random.Generator,
    home_outages: Sequence[Window] = (),
) -> list[Message]:
    """One device's messages (sorted by send time) as the broker would receive them;
    ``home_outages``: the home's outage windows, shared by all its devices."""
    if not faults.any or not messages:
        return list(messages)
    windows = list(home_outages)
    if faults.offline_per_day > 0:
        windows += outage_windows(
            faults.offline_per_day, messages[0].t, messages[-1].t, faults.offline_minutes, rng
        )
    out = _hold_while_offline(messages, windows)
    delivered: list[Message] = []
    for m in out:
        if m.retain:  # online/offline flags are not readings: leave them alone
            delivered.append(m)
            continue
        if rng.random() < faults.p_drop:
            continue
        if rng.random() < faults.p_malformed:
            m = replace(m, payload=_corrupt(m.payload, rng))
        delivered.append(m)
        if rng.random() < faults.p_duplicate:
            delivered.append(replace(m, t=m.t + RESEND_DELAY_S))
    delivered.sort(key=lambda m: m.t)
    return _reorder(delivered, faults, rng)


def _hold_while_offline(messages: list[Message], windows: list[Window]) -> list[Message]:
    if not windows:
        return list(messages)
    out = []
    for m in messages:
        # The latest reconnection among the windows covering m (they may overlap).
        back = max((b for a, b in windows if a <= m.t < b), default=None)
        # Held by the device while offline, sent when it reconnects; the payload keeps
        # the time it was measured.
        out.append(m if back is None or m.retain else replace(m, t=back))
    out.sort(key=lambda m: m.t)
    return out


def _reorder(
    messages: list[Message], faults: TransportFaults, rng: np.random.Generator
) -> list[Message]:
    """Each message is held back, with probability p_reorder, behind the next 1..reorder_max
    messages: it moves k + 0.5 places down, then a stable sort delivers the stream."""
    if faults.p_reorder <= 0:
        return messages
    keys = []
    for position, m in enumerate(messages):
        shift = 0.0
        if not m.retain and rng.random() < faults.p_reorder:
            shift = int(rng.integers(1, faults.reorder_max + 1)) + 0.5
        keys.append(position + shift)
    order = sorted(range(len(messages)), key=keys.__getitem__)
    return [messages[i] for i in order]


def _corrupt(payload: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return payload[: max(1, len(payload) // 2)]  # truncated
    if kind == 1:
        return b"\xff\xfe" + payload[2:]  # not UTF-8
    return payload.replace(b'"v":', b'"v":"', 1)  # a value that is not a number
