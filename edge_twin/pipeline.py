"""The only module that wires the stages together, in order.

    MQTT / replay files
      | RawMessage(topic, payload bytes, received_at)
      v
    ingest  (IngestWriter.commit: decode, validate, bind to patient, store or quarantine)
      | rows appended to the readings log (SQLite), committed before any MQTT ack
      v
    estimate (TwinEstimator.catch_up: Kalman filters per patient and signal)
      | FilterRecord per (patient, signal), saved with the log cursor
      v
    assess  (on read: StateEstimate -> ThresholdRisk; ONNX risk model: issue #6)
      v
    alert   (issue #7)
      v
    sync    (FHIR upstream; not built yet)

Stages talk through domain types and the store, never through each other's internals.
"""

from __future__ import annotations

import logging
import threading

from edge_twin.config import Config
from edge_twin.estimate.tracker import TwinEstimator
from edge_twin.ingest.writer import BatchResult, IngestWriter
from edge_twin.store import Store

log = logging.getLogger(__name__)

# After each commit the twin applies at most max(FLOOR, SHARE x readings committed); the
# rest waits for the socket to go quiet. A home sends a few readings a minute, far below
# FLOOR, so live readings are estimated at once; a backlog after days offline drains at
# nearly full speed and the twin catches up right after.
CATCH_UP_FLOOR = 20
CATCH_UP_SHARE = 0.25


class Pipeline:
    """Everything downstream of the MQTT socket, on one store connection and one thread."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.writer = IngestWriter(store, config)
        self.estimator = TwinEstimator(store)
        self._lock = threading.Lock()
        # A gateway restarted after a crash first applies what was stored but not estimated.
        self.estimator.catch_up()

    def after_commit(self, result: BatchResult) -> None:
        """Called by ingest after each durable commit: run the downstream stages, within
        a budget so that ingestion keeps priority during a burst (readings that arrive in
        a backlog are backfilled data, which may not raise alarms anyway)."""
        if not result.readings_new:
            return
        budget = max(CATCH_UP_FLOOR, int(result.readings_new * CATCH_UP_SHARE))
        with self._lock:
            self.estimator.catch_up(budget)

    def on_idle(self) -> None:
        """Called by ingest when nothing is waiting: finish any deferred work."""
        with self._lock:
            if self.estimator.lag():
                self.estimator.catch_up()
