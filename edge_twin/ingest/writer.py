"""Committing a batch of raw messages: decode each, then one transaction for all.

    [RawMessage] -> decode -> INSERT readings (idempotent) + quarantine + device status
                 -> COMMIT -> BatchResult

The MQTT subscriber acknowledges a batch only after ``commit`` returns; ``edge-twin
replay`` calls the same ``commit`` with messages read from files.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from edge_twin.clock import ClockTrust
from edge_twin.config import Config
from edge_twin.domain import Device, DeviceStatus, Reading, Rejection, RejectReason, Treatment
from edge_twin.ingest import contract
from edge_twin.ingest.decode import DecodeLimits, Decoder
from edge_twin.store import Store, devices, quarantine, readings, treatments
from edge_twin.store.database import translated
from edge_twin.store.quarantine import QuarantinedMessage, QuarantineLimits, Rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    payload: bytes
    received_at: float  # gateway clock
    # Handed over by the API (a Nightscout upload, its size bounded there), not from the
    # broker: only these may use the ns-* channels.
    via_api: bool = False


@dataclass(slots=True)
class BatchResult:
    messages: int = 0
    readings_new: int = 0
    readings_duplicate: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    treatments_new: int = 0
    # Rejected messages beyond their device's quarantine rate: counted, not kept.
    quarantine_dropped: int = 0
    # Per message, in order: (readings accepted, treatments accepted, rejections): what
    # an uploader is told about its own request (api/nightscout.py).
    per_message: list[tuple[int, int, list[Rejection]]] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        """Add ``other`` (a commit of the messages after this one's) to this result."""
        self.messages += other.messages
        self.readings_new += other.readings_new
        self.readings_duplicate += other.readings_duplicate
        self.rejected += other.rejected
        self.rejections += other.rejections
        self.treatments_new += other.treatments_new
        self.quarantine_dropped += other.quarantine_dropped
        self.per_message += other.per_message


@dataclass(slots=True)
class IngestTotals:
    """What a run of commits added up to: live ingest's stats and replay's summary."""

    messages: int = 0
    batches: int = 0
    readings_new: int = 0
    readings_duplicate: int = 0
    rejected: int = 0
    largest_batch: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, result: BatchResult) -> None:
        self.messages += result.messages
        self.batches += 1
        self.largest_batch = max(self.largest_batch, result.messages)
        self.readings_new += result.readings_new
        self.readings_duplicate += result.readings_duplicate
        self.rejected += result.rejected
        for rejection in result.rejections:
            key = rejection.reason.value
            self.rejected_by_reason[key] = self.rejected_by_reason.get(key, 0) + 1


class DeviceRegistry:
    """Provisioned devices, cached. A miss re-reads the store, so a newly provisioned
    device is accepted without a restart; and the whole cache is dropped when a binding
    changed (from the CLI in another process, say), so a device moved to another patient
    is never bound to the old one."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, Device] = {}
        self._version = devices.bindings_version(store)

    def refresh(self) -> None:
        """Called before each batch: one cheap read of the bindings' version."""
        version = devices.bindings_version(self._store)
        if version != self._version:
            self._cache.clear()
            self._version = version

    def lookup(self, device_id: str) -> Device | None:
        device = self._cache.get(device_id)
        if device is None:
            device = devices.get(self._store, device_id)
            if device is not None:
                self._cache[device_id] = device
        return device


# Reasons whose recorded arrival time was judged by a wrong clock: decoded again at the
# time of reprocessing (readings older than ingest.backfill_after_s then count as
# backfilled: no clinical alarm on old data).
CLOCK_REASONS = frozenset({RejectReason.FUTURE_TIME, RejectReason.CLOCK_UNSYNCHRONISED})
WRONG = RejectReason.WRONG_TOPIC
# How often an idle gateway looks for held rows it did not hold itself.
HELD_RECHECK_S = 60.0


@dataclass(slots=True)
class ReprocessResult:
    """What decoding quarantined messages again did."""

    reason: str
    rows: int = 0  # quarantine rows taken
    messages: int = 0
    readings_new: int = 0
    still_rejected: dict[str, int] = field(default_factory=dict)  # by (new) reason


class IngestWriter:
    def __init__(self, store: Store, config: Config, clock_trust: ClockTrust | None = None) -> None:
        self._store = store
        self.clock_trust = clock_trust or ClockTrust.always()
        self.registry = DeviceRegistry(store)
        self._prefix = config.mqtt.topic_prefix
        self.decoder = Decoder(
            prefix=config.mqtt.topic_prefix,
            limits=DecodeLimits(
                max_payload_bytes=config.ingest.max_payload_bytes,
                backfill_after_s=config.ingest.backfill_after_s,
                future_tolerance_s=config.ingest.future_tolerance_s,
                clock_skew_tolerance_s=config.ingest.clock_skew_tolerance_s,
                zone=ZoneInfo(config.api.time_zone),
            ),
            lookup=self.registry.lookup,
            latest=lambda device_id, signal: readings.latest_time(store, device_id, signal),
            clock_synchronised=self.clock_trust.synchronised,
        )
        self.quarantine_limits = QuarantineLimits(
            keep_bytes=config.ingest.quarantine_keep_bytes,
            per_device_per_min=config.ingest.quarantine_per_device_per_min,
            device_max_bytes=config.ingest.quarantine_device_max_bytes,
            retain_days=config.ingest.quarantine_retain_days,
        )
        # Readings held while the clock was not synchronised wait in the quarantine (a
        # restart included) until release_held() decodes them again.
        self.holding = quarantine.count(store, RejectReason.CLOCK_UNSYNCHRONISED) > 0
        self._held_checked = time.monotonic()

    def commit(self, messages: Sequence[RawMessage], statuses: bool = True) -> BatchResult:
        """Decode and durably store ``messages``; raises StoreError if the commit fails
        (then nothing of the batch is stored and none of it may be acknowledged).
        ``statuses=False``: what the devices said about themselves (status reports, clock
        offsets) is not recorded (a capture replayed again over times already lived)."""
        result = BatchResult(messages=len(messages))
        accepted: list[Reading] = []
        treated: list[Treatment] = []
        rejected: list[Rejected] = []
        reported: list[tuple[DeviceStatus, float]] = []
        kept = quarantine.Stored()
        try:
            # Decoding reads the store (bindings, the newest times): a read that fails is
            # the store's failure, like a write's (retried, nothing acknowledged).
            try:
                self.registry.refresh()
                for msg in messages:
                    decoded = self.decoder.decode(
                        msg.topic, msg.payload, msg.received_at, msg.via_api
                    )
                    accepted.extend(decoded.readings)
                    treated.extend(decoded.treatments)
                    if decoded.rejections:
                        rejected.append(
                            Rejected(
                                msg.received_at,
                                msg.topic,
                                msg.payload,
                                decoded.device_id,
                                decoded.rejections,
                            )
                        )
                    if decoded.status is not None:
                        reported.append((decoded.status, msg.received_at))
                    result.per_message.append(
                        (len(decoded.readings), len(decoded.treatments), decoded.rejections)
                    )
            except sqlite3.Error as exc:
                raise translated(exc, "reading the store while decoding") from exc
            with self._store.transaction() as conn:
                new = readings.insert(conn, accepted) if accepted else 0
                if treated:
                    result.treatments_new = treatments.insert(conn, treated)
                if rejected:
                    kept = quarantine.insert(conn, rejected, self.quarantine_limits)
                    result.quarantine_dropped = kept.dropped
                for status, at in reported if statuses else ():
                    devices.record_status(conn, status, at)
        except BaseException:
            # The decoder remembered these readings as the newest; they were not stored.
            self.decoder.forget_latest()
            raise
        result.readings_new = new
        result.readings_duplicate = len(accepted) - new
        if kept.evicted:
            log.warning(
                "quarantine: %d older messages deleted to keep a device within"
                " ingest.quarantine_device_max_bytes",
                kept.evicted,
            )
        result.rejections = [r for item in rejected for r in item.rejections]
        result.rejected = len(result.rejections)
        if any(r.reason is RejectReason.CLOCK_UNSYNCHRONISED for r in result.rejections):
            self.holding = True
        return result

    def refuse(self, message: RawMessage, why: str) -> BatchResult:
        """Quarantine ``message`` whole as INTERNAL_ERROR: its commit failed on a fault
        of the gateway's own. Nothing is decoded (that is what failed)."""
        rejection = Rejection(RejectReason.INTERNAL_ERROR, why[:300])
        parsed = contract.parse_topic(self._prefix, message.topic)
        device = parsed[0] if parsed is not None else None
        item = Rejected(message.received_at, message.topic, message.payload, device, [rejection])
        with self._store.transaction() as conn:
            kept = quarantine.insert(conn, [item], self.quarantine_limits)
        return BatchResult(
            messages=1,
            rejected=1,
            rejections=[rejection],
            quarantine_dropped=kept.dropped,
            per_message=[(0, 0, [rejection])],
        )

    def release_held(self, now: float, limit: int = 500) -> ReprocessResult | None:
        """Once the clock is synchronised, decode again (up to ``limit`` rows of) what was
        held for it; None while there is nothing to release or the clock is still not
        trusted. Called by the pipeline when idle until ``holding`` is False."""
        if not self.holding and time.monotonic() - self._held_checked >= HELD_RECHECK_S:
            # Another process (edge-twin reprocess) may have held some: look again.
            self._held_checked = time.monotonic()
            self.holding = quarantine.count(self._store, RejectReason.CLOCK_UNSYNCHRONISED) > 0
        if not self.holding or not self.clock_trust.synchronised():
            return None
        held = RejectReason.CLOCK_UNSYNCHRONISED
        result = self.reprocess(held, now, limit)
        self.holding = result.rows == limit or held.value in result.still_rejected
        return result

    def reprocess(self, reason: RejectReason, now: float, limit: int = 10_000) -> ReprocessResult:
        """Decode the oldest ``limit`` messages quarantined for ``reason`` again (the cause
        fixed: a device provisioned, the clock synchronised) and store the outcome in one
        transaction: their quarantine rows go; the readings they now give are stored
        (readings already stored from the same message are duplicates, ignored); the
        records rejected again are quarantined again, with their new reason. Messages
        judged by a wrong clock (CLOCK_REASONS) are decoded as arriving ``now``."""
        result = ReprocessResult(reason.value)
        self.registry.refresh()
        rejected: list[Rejected] = []
        try:
            # Select, decode and replace in one write transaction: another process doing
            # the same (the CLI beside the gateway) waits, and never sees half of it.
            with self._store.transaction() as conn:
                rows = quarantine.oldest_with_reason(self._store, reason.value, limit)
                result.rows = len(rows)
                # One quarantined message may have several rows (one per rejected record).
                messages: dict[int, list[QuarantinedMessage]] = {}
                for row in rows:
                    messages.setdefault(row.message_id, []).append(row)
                result.messages = len(messages)
                accepted: list[Reading] = []
                treated: list[Treatment] = []
                reported: list[tuple[DeviceStatus, float]] = []
                done: list[int] = []
                for group in messages.values():
                    first = group[0]
                    if first.truncated:
                        # Only its first bytes were kept (refused for its size): it cannot
                        # be decoded again, and stays as it is.
                        result.still_rejected[first.reason] = result.still_rejected.get(
                            first.reason, 0
                        ) + len(group)
                        continue
                    done += [row.id for row in group]
                    records = {row.record_index for row in group}
                    at = now if reason in CLOCK_REASONS else first.received_at
                    # A message refused for its topic stays refused: it came over MQTT.
                    try:
                        decoded = self.decoder.decode(
                            first.topic, first.payload, at, reason is not WRONG
                        )
                    except sqlite3.Error:
                        raise
                    except Exception as exc:  # a fault of ours: kept whole for the fix
                        log.exception("decoding a quarantined message again failed")
                        why = Rejection(RejectReason.INTERNAL_ERROR, type(exc).__name__)
                        rejected.append(
                            Rejected(first.received_at, first.topic, first.payload, None, [why])
                        )
                        continue
                    accepted.extend(decoded.readings)
                    treated.extend(decoded.treatments)
                    if decoded.status is not None:
                        reported.append((decoded.status, at))
                    # Records rejected for other reasons already have their own rows.
                    again = [
                        r
                        for r in decoded.rejections
                        if r.record_index in records or None in records
                    ]
                    if again:  # put back as it arrived (not as new traffic: no rate counts it)
                        rejected.append(
                            Rejected(
                                first.received_at,
                                first.topic,
                                first.payload,
                                decoded.device_id,
                                again,
                            )
                        )
                quarantine.delete(conn, done)
                result.readings_new = readings.insert(conn, accepted) if accepted else 0
                if treated:
                    treatments.insert(conn, treated)
                if rejected:  # back where they were: no rate or quota drops them
                    quarantine.insert(conn, rejected, self.quarantine_limits, admitted=True)
                for status, at in reported:  # never over a newer report (devices.py)
                    devices.record_status(conn, status, at)
        except BaseException:
            self.decoder.forget_latest()
            raise
        for item in rejected:
            for rejection in item.rejections:
                key = rejection.reason.value
                result.still_rejected[key] = result.still_rejected.get(key, 0) + 1
        return result

    def purge_quarantine(self, now: float, batch: int = 1000) -> int:
        """Delete up to ``batch`` quarantined messages older than
        ingest.quarantine_retain_days (held ones excepted) in one transaction; returns how
        many went (``batch``: call again, at the next idle moment: a large quarantine
        never holds the store, nor the ingest loop, for long)."""
        before = now - self.quarantine_limits.retain_days * 86400.0
        with self._store.transaction() as conn:
            return quarantine.purge(conn, before, batch)
