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

# Under a backlog, how many readings the twin applies per reading committed.
BACKLOG_SHARE = 0.25


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

    def after_commit(self, result: BatchResult, backlog: bool) -> None:
        """Called by ingest after each durable commit: run the downstream stages.

        Under a backlog (more messages already waiting) ingestion comes first: the twin
        advances by at most BACKLOG_SHARE of the readings just committed, so the broker's
        queue drains at nearly full speed, and catches up completely on the first idle
        moment (``on_idle``). Backlogged readings are backfilled data, which may not raise
        alarms anyway; live readings arriving at home rates are estimated at once.
        """
        if not result.readings_new:
            return
        with self._lock:
            if backlog:
                self.estimator.catch_up(max(1, int(result.readings_new * BACKLOG_SHARE)))
            else:
                self.estimator.catch_up()

    def on_idle(self) -> None:
        """Called by ingest when nothing is waiting: finish any deferred work."""
        with self._lock:
            if self.estimator.lag():
                self.estimator.catch_up()
