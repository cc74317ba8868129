"""FHIR upstream sync: a consumer of the alarm event, readings and risk logs
(store/upstream.py).

Each step reads a bounded batch of each log after its consumer's position, maps the
consenting patients' entries to resources (sync/mapping.py) and sends them as one
transaction Bundle with conditional create on each resource's identifier (conditional
update for what changes: an alarm's state, a flag, an hour's samples); a position moves
only when the server has accepted the batch, so a crash mid-batch re-sends it and the
server creates nothing twice. Each log goes up in its order, so each patient's in time of
arrival; alarm events first, as the most urgent.

Wrist streams are not sent per reading: the step marks their hourly windows, which go up
as SampledData once the hour is over (plus ``summary_grace_s``), by conditional update,
so a reading that comes later updates its hour instead of being lost.

A batch the server refuses (a 4xx) is split in halves until the refused resource is
alone; that one is parked with the server's OperationOutcome (``edge-twin sync parked``,
``sync retry-parked``) and the rest goes on. If the server refuses even the gateway's
Patient and Device resources, nothing is parked: that is a deployment problem, retried
and alarmed like an outage. An outage (connection refused, timeouts, 5xx, 429) is retried
with exponential back-off and jitter, Retry-After honoured; the alert stage raises
``upstream_sync_failing`` when a patient's data waits longer than ``sync.alarm_after_s``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge_twin.config import SyncSection
from edge_twin.domain import SIGNALS, DecompensationRisk, Device, DeviceType, Reading, Signal
from edge_twin.errors import ConfigError, EdgeTwinError, UpstreamError, UpstreamRefused
from edge_twin.store import Store, alarms, consumers, devices, readings, risks, upstream
from edge_twin.store.consumers import Consumer
from edge_twin.store.upstream import ALARMS_CONSUMER, READINGS_CONSUMER, RISKS_CONSUMER, Window
from edge_twin.sync import mapping
from edge_twin.sync.client import FhirClient, Resource
from edge_twin.workers import Workers

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
IDLE_WAIT_S = 1.0
# A step reads at most this many times sync.batch_max readings to fill one bundle.
SCAN_FACTOR = 20
# Bundles queued for the sender thread at most: the next ones are prepared meanwhile.
PIPELINE_DEPTH = 2
WORKER = "fhir-sync"  # its name on /health
# Retention runs this often, deleting this many readings a transaction.
PURGE_EVERY_S = 3600.0
PURGE_BATCH = 10_000
# The shortest retention allowed: the risk model reads 29 days of history.
MIN_RETAIN_DAYS = 35.0


@dataclass(frozen=True, slots=True)
class Item:
    """One resource to send, with what the bundle must carry for its references: its
    patient (unless it is the gateway's own) and its device (a reading's)."""

    patient_id: str
    device: Device | None
    resource: Resource
    # Conditional update (a summary, an alarm's state) rather than conditional create.
    update: bool = False
    # The readings it carries (device, first and last device time), if any.
    span: tuple[str, float, float] | None = None

    @property
    def identifier(self) -> str:
        ident = self.resource["identifier"][0]
        return f"{ident['system']}|{ident['value']}"


Refusals = list[tuple[Item, UpstreamRefused]]


@dataclass(frozen=True, slots=True)
class _Batch:
    """One bundle prepared from one log (or the due summaries), and what to write in the
    store once the server has it."""

    consumer: Consumer  # whose failure it is
    items: list[Item]
    handled: int  # log entries (or windows) it covers
    commit: Callable[[sqlite3.Connection], None]  # position, windows: after acceptance
    read_to: int | None = None  # the log read this far for it (None: not a log)


@dataclass(frozen=True, slots=True)
class _InFlight:
    batch: _Batch
    outcome: Future[tuple[int, Refusals]]


class FhirSync:
    """One upstream's sync, step by step (the worker's thread, or a test, drives it)."""

    def __init__(
        self,
        store: Store,
        client: FhirClient,
        gateway_id: str,
        cfg: SyncSection,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._client = client
        self._cfg = cfg
        self._now = now
        self._gateway = Device(gateway_id, "", DeviceType.CGM)  # type unused for the gateway
        self._gateway_url = mapping.device_url(gateway_id)
        self._patient_system = mapping.patient_system(cfg.patient_system, gateway_id)
        self._bindings: tuple[int, dict[str, Device]] = (-1, {})
        self._known: dict[str, Device] = {}
        self.accepted = 0
        self.parked = 0
        self.current = READINGS_CONSUMER  # the log being handled: a failure is its
        # The pipeline: one bundle at the server on the sender thread while the next is
        # prepared; how far each log was read for the bundles sent (by consumer name;
        # absent: from its durable position).
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="fhir-send")
        self._inflight: deque[_InFlight] = deque()
        self._broken = False  # a bundle failed: the sender sends nothing after it
        self._read_pos: dict[str, int] = {}
        with store.transaction() as conn:
            for consumer in upstream.CONSUMERS:
                consumers.register(conn, consumer)

    def step(self) -> int:
        """Send one bundle of each log (alarm events first, the most urgent; readings;
        risks) and of the summaries that are due; returns how many entries and windows
        it handled (0: nothing to do; the resources the server accepted are counted in
        ``accepted``). Raises UpstreamError.

        Pipelined: bundles are prepared (logs read, mapped) while the ones before them
        are at the server, sent in order by the sender thread, PIPELINE_DEPTH at most
        waiting; each one's outcome is committed in order (its position moved, its hours
        marked, its refusals parked). After a failure nothing after it is sent, whatever
        was prepared is dropped and each log is read again from its durable position."""
        handled = 0
        self._known = self._bindings_now()  # the device bindings, read once a step
        for consumer, prepare in (
            (ALARMS_CONSUMER, self._alarm_events),
            (READINGS_CONSUMER, self._readings),
            (READINGS_CONSUMER, self._summaries),
            (RISKS_CONSUMER, self._risks),
        ):
            self.current = consumer
            try:
                handled += self._pipe(prepare())
            except BaseException:
                self._settle_inflight()  # nothing stale is left to fail a later step
                raise
        if not handled and self._inflight:
            # Nothing new to send: finish what is out (its commits may make more due).
            handled = len(self._inflight)
            try:
                while self._inflight:
                    self._settle_oldest()
            except BaseException:
                self._settle_inflight()
                raise
        return handled

    def _pipe(self, batch: _Batch | None) -> int:
        """Send ``batch`` (prepared while the ones before it were at the server), first
        settling the oldest in flight if the pipeline is full."""
        if batch is None:
            return 0
        handled = 0
        while len(self._inflight) >= PIPELINE_DEPTH:
            handled += self._settle_oldest()
        self._inflight.append(_InFlight(batch, self._sender.submit(self._in_order, batch.items)))
        if batch.read_to is not None:
            self._read_pos[batch.consumer.name] = batch.read_to
        return handled + batch.handled

    def _in_order(self, items: list[Item]) -> tuple[int, Refusals]:
        """On the sender thread: once a bundle failed, the ones queued after it are not
        sent (they would overtake it)."""
        if self._broken:
            raise UpstreamError("not sent: an earlier bundle failed")
        try:
            return self._deliver(items)
        except BaseException:
            self._broken = True
            raise

    def _settle_oldest(self) -> int:
        """Wait for the oldest bundle in flight and commit it; if it failed, or its
        commit did, drop everything queued after it (nothing is committed past a
        bundle that was not) and raise."""
        done = self._inflight.popleft()
        try:
            accepted, refused = done.outcome.result()
            self._commit(done.batch, accepted, refused)
        except BaseException:
            self.current = done.batch.consumer
            self._drop_inflight()
            raise
        return 0  # its entries were counted when it was sent

    def _commit(self, batch: _Batch, accepted: int, refused: Refusals) -> None:
        """One transaction: the refused resources parked, what the batch writes (its
        position, its hours), and parked versions its accepted updates supersede."""
        at = self._now()
        refused_ids = {item.identifier for item, _ in refused}
        with self._store.transaction() as conn:
            for item, exc in refused:
                self._park(conn, item, exc, at)
            batch.commit(conn)
            updated = [i.identifier for i in batch.items if i.update]
            upstream.unpark_identifiers(conn, (i for i in updated if i not in refused_ids))
        self.accepted += accepted
        self.parked += len(refused)

    def _position(self, consumer: Consumer) -> int:
        """Where to read ``consumer``'s log from: after what was last sent."""
        known = self._read_pos.get(consumer.name)
        return consumers.position(self._store.conn, consumer) if known is None else known

    def finish(self) -> None:
        """Settle the bundles in flight and stop the sender thread."""
        try:
            self._settle_inflight()
        finally:
            self._sender.shutdown(wait=True)

    def _settle_inflight(self) -> None:
        """Wait for every bundle in flight: commit those the server took, in order, up to
        the first that failed (or whose commit failed); drop the rest (each log is read
        again from its durable position: they are sent again)."""
        try:
            while self._inflight:
                done = self._inflight.popleft()
                try:
                    accepted, refused = done.outcome.result()
                    self._commit(done.batch, accepted, refused)
                except Exception:  # not committed: sent again next time
                    log.warning("FHIR sync: a bundle was not committed; it is sent again")
                    break
        finally:
            self._drop_inflight()

    def _drop_inflight(self) -> None:
        """Forget what is queued (waiting for it: the sender sends nothing after a
        failure) and read every log again from its durable position."""
        while self._inflight:
            done = self._inflight.popleft()
            with contextlib.suppress(Exception):  # dropped either way
                done.outcome.result()
        self._read_pos.clear()
        self._broken = False

    def __enter__(self) -> FhirSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    # --- readings -----------------------------------------------------------------------

    def _readings(self) -> _Batch | None:
        """Up to ``batch_max`` resources from the readings log: it is read on until there
        are that many (most readings of a wrist only mark their hour), at most
        SCAN_FACTOR x ``batch_max`` readings, so memory stays bounded."""
        position = self._position(READINGS_CONSUMER)
        consenting = upstream.consenting(self._store.conn)
        items: dict[str, Item] = {}
        windows: dict[tuple[str, Signal, float], Window] = {}
        now = self._now()
        scanned = 0
        limit = self._cfg.batch_max
        full = False
        while not full and scanned < SCAN_FACTOR * limit:
            batch = readings.after(self._store, position, limit)
            if not batch:
                break
            for r in batch:
                assert r.id is not None
                position = r.id
                scanned += 1
                since = consenting.get(r.patient_id)
                if since is None or r.received_at < since:
                    continue  # never leaves the gateway: stored without consent
                d = self._device(r)
                if mapping.summarised(d):
                    start = mapping.window_start(r.t)
                    w = Window(r.patient_id, d.device_id, d.device_type, r.signal, start, now, now)
                    windows[(d.device_id, r.signal, start)] = w
                    continue
                item = self._item(r, d)
                items.setdefault(item.identifier, item)
                if len(items) >= limit:
                    full = True  # the bundle is full: the rest waits for the next
                    break
        if not scanned:
            return None
        last = position

        def commit(conn: sqlite3.Connection) -> None:
            upstream.mark_windows(conn, windows.values())
            consumers.advance(conn, READINGS_CONSUMER, last, self._now())

        return _Batch(READINGS_CONSUMER, list(items.values()), scanned, commit, last)

    def _item(self, r: Reading, d: Device) -> Item:
        if r.signal in (Signal.SYSTOLIC, Signal.DIASTOLIC) and d.device_type is DeviceType.BP_CUFF:
            # One panel per cuff measurement, whichever of its two readings comes first;
            # the other maps to the same identifier and is not sent again.
            systolic = readings.at(self._store, d.device_id, Signal.SYSTOLIC, r.t)
            diastolic = readings.at(self._store, d.device_id, Signal.DIASTOLIC, r.t)
            panel = mapping.blood_pressure(systolic, diastolic, d, self._gateway_url)
            return Item(r.patient_id, d, panel, span=(d.device_id, r.t, r.t))
        observation = mapping.reading_observation(r, d, self._gateway_url)
        return Item(r.patient_id, d, observation, span=(d.device_id, r.t, r.t))

    def _bindings_now(self) -> dict[str, Device]:
        version = devices.bindings_version(self._store)
        if version != self._bindings[0]:
            self._bindings = (version, {d.device_id: d for d in devices.all_devices(self._store)})
        return self._bindings[1]

    def _device(self, r: Reading) -> Device:
        d = self._known.get(r.device_id)
        if d is None or d.patient_id != r.patient_id:
            # Unprovisioned (or moved) since the reading was stored: the reading still
            # belongs to the patient it was bound to, and the device keeps its type.
            d = devices.retired(self._store, r.device_id, r.patient_id) or Device(
                r.device_id, r.patient_id, min(SIGNALS[r.signal].devices, key=lambda k: k.value)
            )
        return d

    # --- summaries ----------------------------------------------------------------------

    def _summaries(self) -> _Batch | None:
        """The wrist hours that ended ``summary_grace_s`` ago, by conditional update
        (not while a bundle of them is in flight: their windows are cleared when it is
        committed), with the samples stored while the patient consented."""
        if any(f.batch.read_to is None for f in self._inflight):
            return None
        conn = self._store.conn
        ended = self._now() - self._cfg.summary_grace_s
        due = upstream.due_windows(conn, ended, mapping.SUMMARY_S, self._cfg.batch_max)
        if not due:
            return None
        consenting = upstream.consenting(conn)
        items = []
        for w in due:
            since = consenting.get(w.patient_id)
            if since is None:
                continue  # consent withdrawn since the hour was marked: not sent
            d = Device(w.device_id, w.patient_id, w.device_type)
            end = w.start + mapping.SUMMARY_S
            samples = readings.samples(self._store, w.device_id, w.signal, w.start, end, since)
            if not samples:
                continue
            resource = mapping.summary(
                w.patient_id, d, w.signal, w.start, samples, self._gateway_url
            )
            span = (w.device_id, w.start, end)
            items.append(Item(w.patient_id, d, resource, update=True, span=span))

        def commit(conn: sqlite3.Connection) -> None:
            for w in due:
                upstream.clear_window(conn, w)

        return _Batch(READINGS_CONSUMER, items, len(due), commit)

    # --- alarms and risks ----------------------------------------------------------------

    def _alarm_events(self) -> _Batch | None:
        conn = self._store.conn
        batch = alarms.events_after(conn, self._position(ALARMS_CONSUMER), self._cfg.batch_max)
        if not batch:
            return None
        consenting = {**upstream.consenting(conn), mapping.GATEWAY_PATIENT: 0.0}
        by_id = alarms.get_many(conn, {e.alarm_id for e in batch})
        items: dict[str, Item] = {}
        gw, url = self._gateway.device_id, self._gateway_url
        for e in batch:
            a = by_id.get(e.alarm_id)
            since = None if a is None else consenting.get(a.patient_id)
            if a is None or since is None or e.recorded_at < since:
                continue  # without consent: never leaves the gateway
            # The alarm's state as this event left it (later events of the batch win),
            # and the event itself.
            for resource, update in (
                (mapping.alarm_request(gw, a, e, url), True),
                (mapping.alarm_communication(gw, a, e, url), False),
                *(
                    [(mapping.high_risk_flag(gw, a, e, url), True)]
                    if a.alarm_type == mapping.HIGH_RISK_ALARM
                    else []
                ),
            ):
                item = Item(a.patient_id, None, resource, update)
                if update:
                    items.pop(item.identifier, None)  # keep the order of the states
                    items[item.identifier] = item
                else:
                    items.setdefault(item.identifier, item)
        return self._log_batch(ALARMS_CONSUMER, list(items.values()), len(batch), batch[-1].id)

    def _log_batch(self, consumer: Consumer, items: list[Item], handled: int, last: int) -> _Batch:
        def commit(conn: sqlite3.Connection) -> None:
            consumers.advance(conn, consumer, last, self._now())

        return _Batch(consumer, items, handled, commit, last)

    def _risks(self) -> _Batch | None:
        conn = self._store.conn
        batch = risks.after(conn, self._position(RISKS_CONSUMER), self._cfg.batch_max)
        if not batch:
            return None
        consenting = upstream.consenting(conn)
        items = []
        for _, computed_at, risk in batch:
            since = consenting.get(risk.patient_id)
            if since is not None and computed_at >= since:
                resource = mapping.risk_assessment(risk, self._basis(risk), self._gateway_url)
                items.append(Item(risk.patient_id, None, resource))
        return self._log_batch(RISKS_CONSUMER, items, len(batch), batch[-1][0])

    def _basis(self, risk: DecompensationRisk) -> list[str]:
        """The Observations a risk was computed from, by identifier: for each signal the
        model read, the newest one in its window (the twin's state there carries all the
        readings before it)."""
        prov = risk.provenance
        mine = [d for d in self._known.values() if d.patient_id == risk.patient_id]
        out = []
        for name in prov.inputs:
            try:
                signal = Signal(name)
            except ValueError:
                continue
            kinds = SIGNALS[signal].devices
            ids = [d.device_id for d in mine if d.device_type in kinds]
            r = readings.latest_of(self._store, ids, signal, prov.window_end)
            if r is not None and r.t >= prov.window_start:
                out.append(mapping.observation_identifier(r, self._device(r)))
        return sorted(set(out))

    # --- sending ------------------------------------------------------------------------

    def _deliver(self, items: list[Item]) -> tuple[int, Refusals]:
        """Network only (it runs on the sender thread too): send ``items``, splitting a
        refused bundle down to the refused resources; returns how many the server took
        and the refused ones with the server's answer."""
        if not items:
            return 0, []
        try:
            self._client.transaction(self._bundle(items))
        except UpstreamRefused as exc:
            if len(items) == 1:
                self._check_support(items)
                return 0, [(items[0], exc)]
            half = len(items) // 2
            first, second = self._deliver(items[:half]), self._deliver(items[half:])
            return first[0] + second[0], first[1] + second[1]
        return len(items), []

    def _check_support(self, items: list[Item]) -> None:
        """Before parking a resource: does the server take the Patient and Device it
        references? If not, nothing of this patient can go up: an outage, not a refusal."""
        try:
            self._client.transaction(self._support(items))
        except UpstreamRefused as exc:
            # The server's OperationOutcome is not quoted: it may echo patient data.
            raise UpstreamError(
                f"the upstream refuses the gateway's Patient/Device resources ({exc.status})"
            ) from exc

    def _park(self, conn: sqlite3.Connection, item: Item, exc: UpstreamRefused, at: float) -> None:
        log.error(
            "upstream refused a %s (%s): parked, see edge-twin sync parked",
            item.resource["resourceType"],
            exc.status,
        )
        upstream.park(
            conn,
            item.patient_id,
            item.resource["resourceType"],
            item.identifier,
            json.dumps(item.resource),
            exc.status,
            exc.outcome,
            at,
            item.span,
        )

    def _support(self, items: Iterable[Item]) -> list[Resource]:
        """The Patient and Device entries the items reference (conditional create: the
        server resolves each urn:uuid fullUrl to the resource it already holds)."""
        entries: dict[str, Resource] = {}
        gateway = mapping.device(self._gateway, gateway_id=self._gateway.device_id)
        entries[self._gateway_url] = _create(self._gateway_url, gateway)
        for item in items:
            if item.patient_id != mapping.GATEWAY_PATIENT:
                url = mapping.patient_url(item.patient_id)
                if url not in entries:
                    patient = mapping.patient(item.patient_id, self._patient_system)
                    entries[url] = _create(url, patient)
            if item.device is not None:
                url = mapping.device_url(item.device.device_id)
                if url not in entries:
                    entries[url] = _create(url, mapping.device(item.device))
        return list(entries.values())

    def _bundle(self, items: list[Item]) -> list[Resource]:
        entries = self._support(items)
        for item in items:
            kind = item.resource["resourceType"]
            query = mapping.identifier_query(item.resource)
            if item.update:
                request = {"method": "PUT", "url": f"{kind}?{query}"}
            else:
                request = {"method": "POST", "url": kind, "ifNoneExist": query}
            entries.append({"resource": item.resource, "request": request})
        return entries

    # --- retention ----------------------------------------------------------------------

    def purge(self) -> int:
        """Delete the readings the upstream confirmed more than ``sync.retain_days`` ago
        (nothing with 0), in short transactions; returns how many."""
        if not self._cfg.retain_days:
            return 0
        before = self._now() - self._cfg.retain_days * 86400.0
        total = 0
        while True:
            with self._store.transaction() as conn:
                safe = consumers.slowest(conn, consumers.Log.READINGS)
                n = upstream.purge_confirmed(conn, before, safe, mapping.SUMMARY_S, PURGE_BATCH)
            total += n
            if n < PURGE_BATCH:
                break
        if total:
            log.info("retention: %d readings the upstream confirmed were deleted", total)
        return total

    # --- parked -------------------------------------------------------------------------

    def retry_parked(self) -> tuple[int, int]:
        """Send every parked resource again as it was (after a fix on the server's side;
        an update a newer accepted version superseded was unparked then); returns
        (accepted, still parked)."""
        accepted = left = 0
        known = self._bindings_now()
        for p in upstream.parked(self._store.conn):
            resource = json.loads(p.resource)
            d = None
            if p.device_id is not None:
                d = known.get(p.device_id) or devices.retired(
                    self._store, p.device_id, p.patient_id
                )
                if d is None:
                    log.error("a parked %s names an unknown device: left parked", p.resource_type)
                    left += 1
                    continue
            item = Item(p.patient_id, d, resource, update=_updated(resource), span=p.span)
            took, refusals = self._deliver([item])
            with self._store.transaction() as conn:
                if refusals:
                    self._park(conn, item, refusals[0][1], self._now())  # the new reason
                    left += 1
                else:
                    upstream.unpark(conn, [p.id])
            accepted += took
        return accepted, left


def _updated(resource: Resource) -> bool:
    """Whether a resource goes up by conditional update: one whose content changes as the
    gateway learns more (an hour's samples, an alarm's state, a flag)."""
    kind = resource["resourceType"]
    return kind in ("CommunicationRequest", "Flag") or "valueSampledData" in resource


def _create(url: str, resource: Resource) -> Resource:
    return {
        "fullUrl": url,
        "resource": resource,
        "request": {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": mapping.identifier_query(resource),
        },
    }


class SyncWorker:
    """Runs FhirSync on its own thread and store connection, forever: an outage is
    retried with back-off (Retry-After honoured) and recorded on the consumer, so
    ``/health``, ``edge-twin sync status`` and the technical alarm see it."""

    def __init__(
        self,
        db_path: Path,
        cfg: SyncSection,
        gateway_id: str,
        now: Callable[[], float] = time.time,
        workers: Workers | None = None,
    ) -> None:
        """``now``: the gateway clock (when things were sent, when hours are over).
        ``workers``: the gateway's watched threads."""
        self._db_path = db_path
        self._cfg = cfg
        self._gateway_id = gateway_id
        self._now = now
        self._stop = threading.Event()
        self._workers = workers or Workers()
        self._thread = self._workers.thread(WORKER, self._run)
        if 0 < cfg.retain_days < MIN_RETAIN_DAYS:
            raise ConfigError(
                f"sync.retain_days {cfg.retain_days:g} is too short: use 0 (keep) or at"
                f" least {MIN_RETAIN_DAYS:g} (the risk model reads 29 days of history)"
            )
        self.client = FhirClient(cfg)  # validates the URL at start, not in the thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._workers.stopping(WORKER)
        self._stop.set()
        # The bundles in flight finish first (each within the timeout, and a token fetch).
        self._thread.join(timeout=(PIPELINE_DEPTH + 1) * 2 * self._cfg.timeout_s + 5)
        self.client.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        """Forever until stopped: even opening the store or registering the consumers is
        retried (the disk may be full a while); the thread never ends on its own."""
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                with Store(self._db_path, migrate=False) as store:
                    self._serve(store)
            except Exception:
                log.exception("FHIR sync cannot run; retried")
                self._stop.wait(_backoff_wait(backoff, None))
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _serve(self, store: Store) -> None:
        backoff = BACKOFF_MIN_S
        purged_at = -float("inf")
        with FhirSync(store, self.client, self._gateway_id, self._cfg, self._now) as sync:
            while not self._stop.is_set():
                try:
                    handled = sync.step()
                    if time.monotonic() - purged_at >= PURGE_EVERY_S:
                        purged_at = time.monotonic()
                        sync.purge()
                except Exception as exc:  # any failure: retried, recorded
                    wait = _backoff_wait(backoff, exc)
                    backoff = min(BACKOFF_MAX_S, backoff * 2)
                    _record(store, sync.current, exc)
                    self._stop.wait(wait)
                    continue
                if handled and backoff > BACKOFF_MIN_S:
                    # Data flows again: the failures recorded on the logs with nothing
                    # new to send since would otherwise show for good.
                    with store.transaction() as conn:
                        for consumer in upstream.CONSUMERS:
                            consumers.clear_failures(conn, consumer)
                if handled:
                    backoff = BACKOFF_MIN_S
                else:
                    self._stop.wait(IDLE_WAIT_S)


def _backoff_wait(backoff: float, exc: Exception | None) -> float:
    """Full jitter (a fleet of gateways back online at once does not march in step), but
    never sooner than the server asked."""
    wait = random.uniform(BACKOFF_MIN_S, backoff)  # jitter, not security
    if isinstance(exc, UpstreamError) and exc.retry_after_s is not None:
        wait = max(wait, min(exc.retry_after_s, BACKOFF_MAX_S * 4))
    return wait


def _record(store: Store, consumer: Consumer, exc: Exception) -> None:
    message = str(exc) if isinstance(exc, EdgeTwinError) else f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, EdgeTwinError):
        log.exception("FHIR sync failed unexpectedly; retried")
    try:
        with store.transaction() as conn:
            failures = consumers.record_failure(conn, consumer, message, time.time())
    except EdgeTwinError:
        log.error("FHIR sync: %s (and the failure could not be recorded)", message)
        return
    if failures == 1 or failures % 100 == 0:
        log.warning("FHIR sync: %s (%d in a row)", message, failures)
