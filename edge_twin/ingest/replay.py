"""Replaying recorded messages through the live path: decode -> store -> downstream.

A capture is a JSON-lines file, one MQTT message per line, in the order received:

    {"t": 1790000000.0, "topic": "et/v1/dev/cgm-001/senml", "payload": "[{...}]"}

``t`` is when the message was received (epoch s; it drives the backfill and future-time
checks exactly as the gateway clock would); ``payload`` is UTF-8 text, or ``payload_b64``
for arbitrary bytes. Files may be gzip-compressed (``.gz``). A directory is read as a
``firmware-sim cohort``: its ``messages/*.jsonl.gz`` merged in time order, its
``devices.jsonl`` the devices to provision.
A line that is not valid capture JSON is quarantined (topic ``<replay>``) with its raw
bytes, like any other bad input: nothing is skipped silently.

Replay lives the capture as the gateway lived it: one message per commit, the clock at
each message's arrival, then the stages downstream and the idle work (technical alarms,
escalation), as live ingest does for a home's traffic, and the idle work every minute of
the clock through quiet spells (up to IDLE_SPAN_S into each). So it gives the same
estimates and raises the same clinical alarms at the same event times (technical ones and
escalations within a minute), whatever the capture's length. (Committing several messages
at once would let the stages see a later message's readings while they judge an earlier
one.) A line whose ``t`` is not epoch seconds of this era is malformed.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import heapq
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edge_twin.clock import ManualClock
from edge_twin.domain import DeviceType
from edge_twin.errors import EdgeTwinError, ProvisioningError
from edge_twin.ingest.sink import Sink
from edge_twin.ingest.writer import IngestTotals, RawMessage
from edge_twin.store import Store, devices

REPLAY_TOPIC = "<replay>"
# Through a quiet spell in a capture, replay runs the gateway's idle work this often (a
# live gateway checks every 5 s; technical alarms in a replay are late by at most this).
IDLE_STEP_S = 60.0
# ... for at most this long into a quiet spell (the longest timer a technical check or an
# escalation waits for: a stale scale, 48 h), then straight to the next arrival.
IDLE_SPAN_S = 50 * 3600.0
# A capture's arrival times: epoch seconds from 2001 to 2100 (a line outside is malformed).
PLAUSIBLE_T = (1e9, 4.1e9)


@dataclass(slots=True)
class ReplaySummary(IngestTotals):
    first_t: float | None = None
    last_t: float | None = None


def capture_files(path: Path) -> list[Path]:
    """The capture files behind ``path``: itself, or a cohort directory's messages."""
    if path.is_dir():
        files = sorted((path / "messages").glob("*.jsonl*"))
        if not files:
            raise EdgeTwinError(f"{path} holds no messages/*.jsonl[.gz]: is it a cohort?")
        return files
    if not path.exists():
        raise EdgeTwinError(f"capture {path} does not exist")
    return [path]


def read_capture(path: Path) -> Iterator[RawMessage]:
    """Messages of a capture file, or of a cohort directory merged in time order.
    Malformed lines become messages on ``<replay>`` carrying the raw line, so the decoder
    quarantines them as wrong_topic."""
    files = capture_files(path)
    if len(files) == 1:
        yield from _read_file(files[0])
    else:
        yield from heapq.merge(*(_read_file(f) for f in files), key=lambda m: m.received_at)


def first_arrival(path: Path) -> float:
    """When the capture's first well-formed message arrived (now, if it has none)."""
    first = next((m for m in read_capture(path) if m.topic != REPLAY_TOPIC), None)
    return time.time() if first is None else first.received_at


def count_messages(path: Path) -> int:
    total = 0
    for file in capture_files(path):
        with _open(file) as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is an IO[bytes]
    return path.open("rb")


def _read_file(path: Path) -> Iterator[RawMessage]:
    """A bad line is quarantined as arriving with the well-formed line before it; bad
    lines before the first well-formed one, with that one (never at 1970, which the
    quarantine's retention would delete at once)."""
    last_t: float | None = None
    leading: list[bytes] = []
    with _open(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            message = _parse_line(line, last_t or 0.0)
            if message.topic == REPLAY_TOPIC and last_t is None:
                leading.append(line)
                continue
            if last_t is None:
                yield from (_parse_line(bad, message.received_at) for bad in leading)
            last_t = message.received_at
            yield message
    if last_t is None:  # not one well-formed line: no time to give them
        yield from (_parse_line(bad, 0.0) for bad in leading)


def _parse_line(line: bytes, last_t: float) -> RawMessage:
    try:
        doc = json.loads(line)
        t = float(doc["t"])
        if not PLAUSIBLE_T[0] <= t <= PLAUSIBLE_T[1]:  # NaN, inf, ms, a clock at 1970
            raise ValueError(f"t {t} is not epoch seconds of this era")
        topic = str(doc["topic"])
        if "payload_b64" in doc:
            payload = base64.b64decode(doc["payload_b64"], validate=True)
        else:
            payload = str(doc["payload"]).encode()
        return RawMessage(topic, payload, t)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return RawMessage(REPLAY_TOPIC, line.rstrip(b"\n"), last_t)


def provision_from(path: Path, store: Store, at: float) -> int:
    """Provision the devices listed in a JSON-lines file (``firmware-sim devices`` format)."""
    n = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            device_id, patient_id, kind = d["device_id"], d["patient_id"], d["device_type"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProvisioningError(f"{path}:{number}: not a device line ({exc})") from None
        devices.provision(store, device_id, patient_id, DeviceType(kind).value, at)
        n += 1
    return n


def replay(
    sink: Sink,
    messages: Iterable[RawMessage],
    clock: ManualClock,
    progress: Callable[[ReplaySummary], None] | None = None,
    progress_every: int = 1000,
    quiet_until: float = -math.inf,
    idle_step_s: float = IDLE_STEP_S,
) -> ReplaySummary:
    """Each message through the sink as live ingest hands it over, with ``clock`` (the
    pipeline's) moved to its arrival first: commit, downstream, idle. Between arrivals the
    gateway's idle work (technical alarms, escalation, pause expiry) runs every
    ``idle_step_s`` of the clock, as a live gateway's idle loop does through a quiet spell.

    ``quiet_until`` (the store's newest arrival when replay started): at or before it, no
    technical checks and nothing the devices said about themselves is recorded (status
    reports, clock offsets; readings are deduplicated anyway): a capture replayed again
    must neither judge devices at past times by what they reported since nor set their
    status back, so a second replay changes nothing."""
    if idle_step_s <= 0:
        raise ValueError("idle_step_s must be positive")
    summary = ReplaySummary()
    last_idle = -math.inf

    def idle(at: float) -> None:
        nonlocal last_idle
        clock.advance_to(at)
        last_idle = clock.now()
        sink.on_idle(technical=last_idle > quiet_until)

    for message in messages:
        if summary.first_t is None:
            summary.first_t = message.received_at
        summary.last_t = message.received_at
        quiet_from = last_idle
        while (
            math.isfinite(last_idle)
            and last_idle + idle_step_s < message.received_at
            and last_idle < quiet_from + IDLE_SPAN_S
        ):
            idle(last_idle + idle_step_s)
        clock.advance_to(message.received_at)
        result = sink.commit([message], statuses=message.received_at > quiet_until)
        sink.after_commit(result)
        idle(clock.now())
        summary.add(result)
        if progress is not None and summary.messages % progress_every == 0:
            progress(summary)
    if progress is not None:
        progress(summary)
    return summary
