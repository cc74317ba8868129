"""The gateway service: store + pipeline + MQTT ingest + local API, started and stopped
together. ``edge-twin run`` and the demo use it; tests start it against a private broker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from edge_twin.alert import (
    MQTT_CONSUMER,
    WEBHOOK_CONSUMER,
    AlarmBus,
    WebhookSender,
    delivery_channels,
    register_channel,
)
from edge_twin.api import ApiServer, create_app, tls_of
from edge_twin.clock import Clock, ClockTrust, SystemClock
from edge_twin.config import Config
from edge_twin.errors import ConfigError
from edge_twin.ingest import Inlet, MqttIngest
from edge_twin.notify import Notifier
from edge_twin.pipeline import Pipeline
from edge_twin.store import PipelineLock, Store
from edge_twin.sync import SyncWorker
from edge_twin.workers import Workers

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        config: Config,
        clock: Clock,
        serve_api: bool = True,
        degrade: bool = False,
        clock_trust: ClockTrust | None = None,
        on_death: Callable[[str, str], None] | None = None,
    ) -> None:
        """``degrade``: start even when the broker is away or refuses the gateway (ingest
        and alarm delivery retry in the background; the API and pages serve the store,
        and ``/health`` says what is wrong): how ``edge-twin run`` starts in the field.
        ``clock_trust``: whether ``clock`` may judge device times; by default the
        kernel's NTP state for the system clock (unless ingest.hold_until_clock_synced
        is off), always for a clock the caller controls. ``on_death(worker, why)``: a
        worker thread died (edge-twin run ends the process; /health says so anyway)."""
        self.config = config
        self.clock = clock
        if clock_trust is None:
            on_system = isinstance(clock, SystemClock) and config.ingest.hold_until_clock_synced
            clock_trust = ClockTrust() if on_system else ClockTrust.always()
        self.clock_trust = clock_trust
        self._serve_api = serve_api
        self._degrade = degrade
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.ingest: MqttIngest | None = None
        self.inlet = Inlet()  # the API's Nightscout uploads, committed by ingest
        self.api: ApiServer | None = None
        self.alarm_bus: AlarmBus | None = None
        self.webhook: WebhookSender | None = None
        self.webhook_problem: str | None = None
        self.sync: SyncWorker | None = None
        self._lock: PipelineLock | None = None
        self.notifier = Notifier()  # systemd: ready, watchdog (from the ingest loop), stopping
        self.workers = Workers(on_death)

    def start(self) -> None:
        cfg = self.config
        try:
            self._lock = PipelineLock(cfg.store.path)
            self._lock.acquire()
            self.store = Store(cfg.store.path, cfg.store.synchronous)
            # Delivery channels follow the alarm event log from before the pipeline's
            # first catch-up, so nothing it raises is skipped.
            if cfg.alert.mqtt:
                register_channel(self.store, MQTT_CONSUMER, self.clock.now())
            if cfg.alert.webhook_url:
                register_channel(self.store, WEBHOOK_CONSUMER, self.clock.now())
            self.pipeline = Pipeline(self.store, cfg, self.clock, self.clock_trust)
            self.pipeline.alerts.watch_delivery(
                delivery_channels(cfg.alert), cfg.alert.delivery_alarm_after_s
            )
            if cfg.alert.mqtt:
                bus = AlarmBus(cfg.mqtt, cfg.gateway.id, wait=not self._degrade)
                self.alarm_bus = self.pipeline.bus = bus
            if cfg.alert.webhook_url:
                try:
                    self.webhook = WebhookSender(
                        str(cfg.store.path), cfg.alert, cfg.gateway.id, self.workers, self.clock.now
                    )
                except ConfigError as exc:
                    # Ingest and the local alarms must run whatever the webhook's settings:
                    # /health says why it is off, and its events wait (alarm_delivery_failing).
                    self.webhook_problem = f"the alarm webhook is not running: {exc}"
                    log.error(self.webhook_problem)
                else:
                    self.webhook.start()
            if cfg.sync.url:
                self.sync = SyncWorker(
                    cfg.store.path, cfg.sync, cfg.gateway.id, self.clock.now, self.workers
                )
                self.sync.start()
            self.ingest = MqttIngest(
                cfg.mqtt,
                cfg.ingest,
                self.pipeline,
                self.clock,
                heartbeat=self.notifier.beat,
                inlet=self.inlet,
                workers=self.workers,
            )
            ingest = self.ingest
            self.pipeline.alerts.watch_broker(
                ingest.down_for, lambda: ingest.stats.last_error, cfg.alert.broker_alarm_after_s
            )
            self.ingest.start(wait=not self._degrade)
            if self._serve_api:
                app = create_app(cfg, self.clock, self.status, inlet=self.inlet)
                self.api = ApiServer(app, cfg.api.host, cfg.api.port, tls_of(cfg.api), self.workers)
                self.api.start()
        except BaseException:
            self.stop()
            raise
        self.notifier.ready()
        log.info("gateway %s started", cfg.gateway.id)

    def status(self) -> dict[str, Any]:
        if self.ingest is None:
            return {"running": False}
        stats = self.ingest.stats.snapshot()
        if self.pipeline is not None:
            stats["estimator"] = dict(self.pipeline.estimator.outcomes)
        if self.sync is not None:
            stats["sync_worker_alive"] = self.sync.alive
        stats["clock_synchronised"] = self.clock_trust.synchronised()
        stats["webhook_problem"] = self.webhook_problem
        stats["workers"] = [{**asdict(w), "problem": w.problem()} for w in self.workers.statuses()]
        return stats

    def stop(self) -> None:
        self.notifier.stopping()
        self.workers.stopping()
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None
        if self.webhook is not None:
            self.webhook.stop()
            self.webhook = None
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if self.alarm_bus is not None:
            self.alarm_bus.stop()
            self.alarm_bus = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
