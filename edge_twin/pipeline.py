"""The only module that wires the stages together, in order.

    MQTT / replay files
      | RawMessage(topic, payload bytes, received_at), handed to the Pipeline as an
      | ingest.sink.Sink: commit, after_commit, on_idle
      v
    ingest  (IngestWriter.commit: decode, validate, bind to patient, store or quarantine)
      | rows appended to the readings log (SQLite), committed before any MQTT ack
      v
    estimate (TwinEstimator.catch_up: Kalman filters per patient and signal)
      | FilterRecord per (patient, signal), saved with the log cursor;
      | Scorekeeper: the forecasts issued, scored against the readings that come
      v
    assess  (RiskAssessor: patients whose filters moved -> ONNX decompensation risk,
      |      stored with its provenance; glycaemic risk on read: StateEstimate -> ThresholdRisk)
      v
    alert   (AlertStage: conditions from the twin -> AlarmEngine -> alarms + audit log;
      |      delivered over MQTT, to the webhook and the API from the audit log)
      v
    sync    (FHIR upstream: a consumer of the readings log on its own thread, started by
             the gateway; its trouble comes back as a technical alarm from alert)

Stages talk through domain types and the store, never through each other's internals.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections.abc import Sequence

from edge_twin.alert import (
    ALARM_SIGNALS,
    AlarmBus,
    AlarmEngine,
    AlertStage,
    deliver_mqtt,
    handle_command,
)
from edge_twin.assess import RiskAssessor, active_model
from edge_twin.clock import Clock, ClockTrust, SystemClock
from edge_twin.config import Config
from edge_twin.domain import Signal
from edge_twin.errors import EdgeTwinError, ModelError
from edge_twin.estimate import Scorekeeper, TwinEstimator
from edge_twin.ingest import BatchResult, IngestWriter, RawMessage
from edge_twin.store import Store

log = logging.getLogger(__name__)

# After each commit the twin applies at most max(FLOOR, SHARE x readings committed); the
# rest waits for the socket to go quiet. A home sends a few readings a minute, far below
# FLOOR, so live readings are estimated at once; a backlog after days offline drains at
# nearly full speed and the twin catches up right after.
CATCH_UP_FLOOR = 20
CATCH_UP_SHARE = 0.25
# ... unless the batch is small and the twin only a little behind: live traffic from many
# devices, not a drain (a drain commits batches of hundreds). Then the twin catches up at
# once, so an alarm does not wait behind other patients' readings (bench/alerts.py
# measures the latency under such load; bench/ingest.py the drain).
LIVE_BATCH_MESSAGES = 50
LIVE_BACKLOG = 500
# Quarantine rows held for the clock decoded again per idle moment once it is synchronised.
RELEASE_ROWS = 500
# The quarantine's retention (ingest.quarantine_retain_days) runs this often.
PURGE_QUARANTINE_EVERY_S = 3600.0
PURGE_BATCH = 1000


class Pipeline:
    """Everything downstream of the MQTT socket, on one store connection and one thread."""

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock | None = None,
        clock_trust: ClockTrust | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock or SystemClock()
        self.writer = IngestWriter(store, config, clock_trust)
        self.estimator = TwinEstimator(store, now=self.clock.now)
        self.scorekeeper = Scorekeeper(store)
        self.risk: RiskAssessor | None = None
        try:
            model = active_model(config.assess.model_dir)
            self.risk = RiskAssessor(store, model, config.assess.risk_every_s, self.clock)
        except ModelError as exc:
            # The twin, its estimates and glycaemic risks do not need the model: run on.
            log.error("no decompensation model: risk is not assessed (%s)", exc)
        self.engine = AlarmEngine(
            store, self.clock.now, care_team_channel=bool(config.alert.webhook_url)
        )
        self.alerts = AlertStage(
            store,
            self.engine,
            config.estimate.stale_after_s.get(Signal.GLUCOSE, 900.0),
            config.sync.alarm_after_s if config.sync.url else None,
            self.writer.clock_trust.synchronised,
        )
        self.bus: AlarmBus | None = None  # attached by the gateway when MQTT is up
        self._risk_pending: set[str] = set()
        self._alarm_pending: set[str] = set()
        self._purged_at = -math.inf
        self._lock = threading.Lock()
        # Messages whose commit has been through the stages after ingest (see settled()).
        self.messages_settled = 0
        # A gateway restarted after a crash first applies what was stored but not estimated.
        self.estimator.catch_up()
        self._downstream()

    def _downstream(self, live: bool = True) -> None:
        """Alarms for the patients whose twin moved: at once for live traffic (each
        patient's filters are consistent up to their own time, even while the twin has
        other patients' readings to apply), deferred during a drain (backfilled data
        raises no alarm anyway). Risk once the twin has caught up. Then deliver the audit
        events written (the idle loop delivers the rest: the API's, the CLI's, retries),
        and last the twin's forecasts are issued and scored (estimate/scorekeeper.py)."""
        moved = self.estimator.take_moved()
        self._risk_pending |= {patient for patient, _ in moved}
        self._alarm_pending |= {patient for patient, signal in moved if signal in ALARM_SIGNALS}
        caught_up = not self.estimator.lag()
        written: list[int] = []
        if self._alarm_pending and (live or caught_up):
            pending, self._alarm_pending = self._alarm_pending, set()
            try:
                written += self.alerts.on_data(pending)
            except EdgeTwinError as exc:
                self._alarm_pending |= pending  # nobody is forgotten: retried next time
                log.error("alarm evaluation failed, retried with the next data: %s", exc)
        if self._risk_pending and self.risk is not None and caught_up:
            pending, self._risk_pending = self._risk_pending, set()
            try:
                assessed = self.risk.run(pending)
                if assessed:  # a new risk may raise or clear its alarm
                    written += self.alerts.on_data({r.patient_id for r in assessed})
            except EdgeTwinError as exc:
                log.error("risk assessment failed, the twin runs on: %s", exc)
        if written:
            self._deliver()
        try:
            # After the alarms, which must not wait for it: bookkeeping, whose failure
            # must not stop the twin, the alarms or their delivery.
            self.scorekeeper.on_moved(moved)
        except (EdgeTwinError, sqlite3.Error, ArithmeticError, ValueError) as exc:
            log.error("forecast scoring failed, the twin runs on: %r", exc)

    def _deliver(self) -> None:
        if self.bus is None:
            return
        try:
            deliver_mqtt(self.store, self.bus, self.config.gateway.id, self.clock.now())
        except EdgeTwinError as exc:
            log.error("alarm delivery over MQTT failed, will retry: %s", exc)

    def commit(self, messages: Sequence[RawMessage], statuses: bool = True) -> BatchResult:
        """The entry seam (ingest.sink.Sink): decode and durably store the messages."""
        return self.writer.commit(messages, statuses)

    def refuse(self, message: RawMessage, why: str) -> BatchResult:
        """The entry seam's last resort (ingest.sink.Sink): keep a message whose commit
        failed on a bug in quarantine, so that it neither stops ingest nor returns."""
        return self.writer.refuse(message, why)

    def after_commit(self, result: BatchResult) -> None:
        """Called by ingest after each durable commit: run the downstream stages, within
        a budget so that ingestion keeps priority during a burst (readings that arrive in
        a backlog are backfilled data, which may not raise alarms anyway)."""
        budget = max(CATCH_UP_FLOOR, int(result.readings_new * CATCH_UP_SHARE))
        with self._lock:
            try:
                if result.readings_new:
                    live = (
                        result.messages <= LIVE_BATCH_MESSAGES
                        and self.estimator.backlog() <= LIVE_BACKLOG
                    )
                    self.estimator.catch_up(None if live else budget)
                    self._downstream(live)
            finally:
                self.messages_settled += result.messages

    def _release_held(self) -> None:
        """Readings held while the clock was not synchronised: decoded again once it is,
        a slice per idle moment so live messages keep their priority."""
        try:
            released = self.writer.release_held(self.clock.now(), RELEASE_ROWS)
        except EdgeTwinError as exc:
            log.error("releasing readings held for the clock failed, will retry: %s", exc)
            return
        except Exception:
            # A bug here must not starve what follows in on_idle (technical alarms,
            # escalation, delivery).
            log.exception("releasing readings held for the clock failed, will retry")
            return
        if released is not None and released.rows:
            log.warning(
                "clock synchronised: %d held messages decoded again, %d readings stored",
                released.messages,
                released.readings_new,
            )

    def settled(self, messages: int) -> bool:
        """True once ``messages`` messages were committed and everything they started has
        finished: twin, risk, alarms. The twin having caught up is not enough for a reader
        of alarms: the alert stage runs right after it, under the same lock."""
        with self._lock:
            return self.messages_settled >= messages and not self.estimator.lag()

    def on_idle(self, technical: bool = True) -> None:
        """Called by ingest when nothing is waiting: finish any deferred work; then the
        technical alarms and escalation (unless ``technical`` is False: replay before the
        store's newest arrival)."""
        with self._lock:
            self._release_held()
            if self.estimator.lag():
                self.estimator.catch_up()
                self._downstream()
            now = self.clock.now()
            while self.bus is not None and not self.bus.commands.empty():
                display, command = self.bus.commands.get_nowait()
                result = handle_command(self.store, self.engine, display, command, now)
                self.bus.publish(self.bus.result_topic(display), result)
            try:
                if technical:
                    self.alerts.tick(now)
            except EdgeTwinError as exc:
                log.error("technical alarm check failed, will retry: %s", exc)
            if not 0.0 <= now - self._purged_at < PURGE_QUARANTINE_EVERY_S:
                try:
                    # One batch per idle moment; the next idle takes the next batch.
                    if self.writer.purge_quarantine(now, PURGE_BATCH) < PURGE_BATCH:
                        self._purged_at = now
                except EdgeTwinError as exc:
                    self._purged_at = now  # tried again in an hour, not at once
                    log.error("quarantine retention failed, will retry: %s", exc)
            self._deliver()
