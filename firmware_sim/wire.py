"""The device side of the MQTT wire contract (docs/wire-contract.md).

Written independently of the gateway's decoder on purpose: the tests then check that two
implementations of the contract agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

DEFAULT_PREFIX = "et/v1"


def readings_topic(device_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/dev/{device_id}/senml"


def status_topic(device_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/dev/{device_id}/status"


def online_topic(device_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/dev/{device_id}/online"


def senml_pack(
    device_id: str, records: Sequence[tuple[str, str, float, float, int | None]]
) -> bytes:
    """records: (name, unit, device time epoch s, value, seq). The first record carries the
    base name and base time; later ones are relative to it."""
    if not records:
        raise ValueError("a SenML pack needs at least one record")
    base_time = records[0][2]
    pack: list[dict[str, object]] = []
    for i, (name, unit, t, value, seq) in enumerate(records):
        rec: dict[str, object] = {"n": name, "u": unit, "v": value}
        if i == 0:
            rec = {"bn": f"urn:dev:id:{device_id}:", "bt": base_time, **rec}
        elif t != base_time:
            rec["t"] = round(t - base_time, 3)
        if seq is not None:
            rec["seq"] = seq
        pack.append(rec)
    return json.dumps(pack, separators=(",", ":")).encode()


def status_pack(
    device_id: str,
    t: float,
    battery_pct: float,
    firmware: str,
    sensor_expires: float | None = None,
) -> bytes:
    """Battery and firmware; a CGM adds when its sensor session ends (device time)."""
    pack: list[dict[str, object]] = [
        {"bn": f"urn:dev:id:{device_id}:", "bt": t, "n": "battery", "u": "%", "v": battery_pct},
        {"n": "firmware", "vs": firmware},
    ]
    if sensor_expires is not None:
        pack.append({"n": "sensor_expires", "u": "s", "v": sensor_expires})
    return json.dumps(pack, separators=(",", ":")).encode()
