"""Sensor firmware models: what each device measures from the truth, when, and how badly.

Each model returns ``Upload``s: what the device sends at one moment (true time), a list of
records ``(name, unit, measured_at, value, seq)``. ``seq`` counts every sample the
firmware takes, sent or lost, so the gateway can see gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

Record = tuple[str, str, float, float, int]


@dataclass(frozen=True)
class Upload:
    t: float  # true time at which the device sends it
    records: list[Record]


@dataclass(frozen=True)
class Artefact:
    """A sensor-only event (the body is fine): labelled so alerting can be scored on it."""

    kind: str
    onset: float
    end: float
