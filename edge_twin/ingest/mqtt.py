"""The MQTT adapter: a paho-mqtt v5 subscriber that acknowledges only what is committed.

    broker --PUBLISH(QoS 1)--> buffer --(full | idle | old)--> Sink.commit
           <--PUBACK (manual)-- only after COMMIT returned

- Persistent session (clean_start=False, session expiry from config, fixed client id): a
  gateway that dies before acknowledging gets every unacknowledged message redelivered.
- Batching: a batch is committed when it reaches ``batch_max`` messages, when it is older
  than ``batch_max_ms``, or as soon as a poll of the socket brings nothing more, so an
  idle gateway adds no delay and a busy one commits large batches.
- One thread does network I/O, decoding and SQLite writes: a separate writer thread halves
  throughput here (GIL contention, see docs/architecture.md).
- Messages go to a ``Sink`` (ingest/sink.py; the pipeline): ``commit``, then
  ``after_commit(result)``, and ``on_idle()`` when the socket has gone quiet, all on this
  thread, so downstream can yield to ingestion during a burst and catch up right after.
- paho errors are translated to ``BrokerError`` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_twin.clock import Clock
from edge_twin.config import IngestSection, MqttSection, mqtt_password
from edge_twin.errors import BrokerError, EdgeTwinError, StoreMisuse
from edge_twin.ingest import contract
from edge_twin.ingest.inlet import Inlet
from edge_twin.ingest.link import LinkHistory
from edge_twin.ingest.sink import Sink
from edge_twin.ingest.writer import BatchResult, IngestTotals, RawMessage
from edge_twin.workers import STALL_S, Workers

log = logging.getLogger(__name__)

WORKER = "ingest"  # its name on /health

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
# While the broker is away, the idle work (technical alarms, escalation) runs this often.
PAUSED_IDLE_EVERY_S = 1.0
# A commit that failed (a full disk, an I/O error) is retried after this, doubling up to
# the maximum: each retry has the broker send the whole batch again.
COMMIT_RETRY_MIN_S = 1.0
COMMIT_RETRY_MAX_S = 30.0


@dataclass(slots=True)
class _Pending:
    message: RawMessage
    mid: int
    qos: int


@dataclass(slots=True)
class IngestStats(IngestTotals):
    """Totals of what was committed (and so acknowledged), and the connection's state."""

    received: int = 0  # delivered by the broker, committed or not yet
    commit_failures: int = 0
    # Wall-clock times: of the last commit that succeeded, and of the first failure of
    # the failures in a row now (None when the last commit succeeded).
    last_commit_at: float | None = None
    commits_failing_since: float | None = None
    reconnects: int = 0
    connected: bool = False
    last_error: str | None = None

    def snapshot(self) -> dict[str, object]:
        """A copy safe to read from another thread (dict() of a dict is atomic in CPython)."""
        out: dict[str, object] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "rejected_by_reason"
        }
        out["rejected_by_reason"] = dict(self.rejected_by_reason)
        return out


class MqttIngest:
    """Subscribes, batches, commits, then acknowledges. ``start`` / ``stop``."""

    def __init__(
        self,
        mqtt: MqttSection,
        ingest: IngestSection,
        sink: Sink,
        clock: Clock,
        heartbeat: Callable[[], None] = lambda: None,
        inlet: Inlet | None = None,
        workers: Workers | None = None,
    ) -> None:
        """``heartbeat``: called at every turn of the ingest loop (the service watchdog:
        it stops when the loop does). ``inlet``: uploads from the API, committed on this
        thread between MQTT batches (ingest/inlet.py), also while the broker is away.
        ``workers``: the gateway's watched threads, the ingest loop among them."""
        self._inlet = inlet
        self._workers = workers or Workers()
        self._commit_retry_s = COMMIT_RETRY_MIN_S
        self._mqtt = mqtt
        self._heartbeat = heartbeat
        self._ingest = ingest
        self._sink = sink
        self._clock = clock
        self._buffer: list[_Pending] = []
        self._oldest = 0.0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._link = LinkHistory(time.monotonic())  # on the monotonic clock
        self._dropping = False  # we drop the link ourselves: the store failed
        self._refused: str | None = None  # the broker's reason, when it refused CONNECT
        self._thread: threading.Thread | None = None
        self.stats = IngestStats()

        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=mqtt.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,  # we reconnect ourselves, with backoff
        )
        if mqtt.username:
            client.username_pw_set(mqtt.username, mqtt_password(mqtt) or None)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Connect and start the ingest thread; BrokerError if not connected in time.
        ``wait=False``: start even if the broker is away or refuses us; the thread
        reconnects with back-off, and ``stats`` say what is wrong meanwhile."""
        try:
            self._connect()
        except BrokerError as exc:
            if wait:
                raise
            self.stats.last_error = str(exc)
            log.warning("%s; retrying in the background", exc)
        self._thread = self._workers.thread(WORKER, self._run, stall_s=STALL_S)
        self._thread.start()
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.02):
            if self._refused is None and time.monotonic() < deadline:
                continue
            self.stop()
            if self._refused is not None:
                raise BrokerError(
                    f"the broker at {self._mqtt.host}:{self._mqtt.port} refused the connection:"
                    f" {self._refused} (check mqtt.username and mqtt.password)"
                )
            raise BrokerError(
                f"not subscribed at {self._mqtt.host}:{self._mqtt.port} within"
                f" {timeout:g} s: {self.stats.last_error or 'no answer'}"
            )

    def stop(self) -> None:
        """Commit what is buffered, acknowledge it, disconnect."""
        self._workers.stopping(WORKER)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        # Disconnecting a dead socket is not an error worth raising.
        with contextlib.suppress(Exception):
            self._client.disconnect()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def down_for(self) -> float | None:
        """Seconds the gateway has been without a lasting link to its broker
        (ingest/link.py); None while it is up for good. Ask on the ingest thread."""
        return self._link.down_for(time.monotonic())

    # -- paho callbacks (run on the ingest thread, inside client.loop) ------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.error(self.stats.last_error)
            return
        self._refused = None
        client.subscribe(
            contract.subscription(self._mqtt.topic_prefix), options=SubscribeOptions(qos=1)
        )
        log.info(
            "connected to %s:%s (session present: %s)",
            self._mqtt.host,
            self._mqtt.port,
            flags.session_present,
        )

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # Ready only once the broker has the subscription: a message published before
        # that would not be routed to us.
        if any(r.is_failure or r.value != 1 for r in reasons):
            self.stats.last_error = f"subscription refused or downgraded: {reasons}"
            log.error(self.stats.last_error)
            return
        self.stats.connected = True
        self._link.up(time.monotonic())
        self._dropping = False  # a drop from here on is not ours unless we say so again
        self._connected.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.stats.connected = False
        self._connected.clear()
        self._link.dropped(time.monotonic(), by_us=self._dropping)
        self._dropping = False
        if not self._stop.is_set() and self._refused is None:
            self.stats.last_error = f"disconnected: {reason}"
            log.warning(self.stats.last_error)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if not self._buffer:
            self._oldest = time.monotonic()
        self.stats.received += 1
        self._buffer.append(
            _Pending(RawMessage(msg.topic, bytes(msg.payload), self._clock.now()), msg.mid, msg.qos)
        )

    # -- the loop --------------------------------------------------------------------

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._mqtt.session_expiry_s
        try:
            self._client.connect(
                self._mqtt.host,
                self._mqtt.port,
                keepalive=self._mqtt.keepalive_s,
                clean_start=False,
                properties=props,
            )
        except OSError as exc:
            raise BrokerError(
                f"cannot reach the MQTT broker at {self._mqtt.host}:{self._mqtt.port}: {exc}"
            ) from exc

    def _run(self) -> None:
        backoff = RECONNECT_MIN_S
        max_age = self._ingest.batch_max_ms / 1000.0
        while not self._stop.is_set():
            self._heartbeat()  # the service watchdog: this loop still turns
            self._workers.beat(WORKER)
            self._serve_inlet()
            # With messages buffered, poll without waiting: a poll that brings nothing
            # means the burst is over and the batch is committed at once.
            wait = 0.0 if self._buffer else 0.25
            before = self.stats.received
            rc = self._client.loop(timeout=wait)
            if rc != paho.MQTT_ERR_SUCCESS:
                self._buffer.clear()  # unacknowledged: the broker redelivers them
                if self.stats.commits_failing_since is not None:
                    backoff = max(backoff, self._commit_retry_s)
                backoff = self._reconnect(backoff)
                continue
            backoff = RECONNECT_MIN_S
            arrived = self.stats.received != before
            if not self._buffer:
                if not arrived:
                    self._downstream(self._sink.on_idle)
                continue
            if (
                not arrived
                or len(self._buffer) >= self._ingest.batch_max
                or time.monotonic() - self._oldest >= max_age
            ):
                self._flush()
        if self._buffer and self._client.is_connected():
            self._flush()

    def _flush(self) -> None:
        batch, self._buffer = self._buffer, []
        try:
            result = self._commit(batch)
        except EdgeTwinError as exc:
            # Not stored, so not acknowledged. The broker redelivers unacknowledged messages
            # only on a new connection: drop this one and come back, later each time (a
            # full disk is not freed in a second).
            stats = self.stats
            stats.commit_failures += 1
            if stats.commits_failing_since is None:
                stats.commits_failing_since = time.time()
                self._commit_retry_s = COMMIT_RETRY_MIN_S
            else:
                self._commit_retry_s = min(COMMIT_RETRY_MAX_S, self._commit_retry_s * 2)
            stats.last_error = f"commit failed, retrying in {self._commit_retry_s:g} s: {exc}"
            log.error(stats.last_error)
            self._dropping = True
            self._client.disconnect()
            return
        for pending in batch:
            if pending.qos > 0:
                self._client.ack(pending.mid, pending.qos)
        self._committed()
        self.stats.add(result)
        self._downstream(lambda: self._sink.after_commit(result))

    def _commit(self, batch: list[_Pending]) -> BatchResult:
        """Commit the batch; if that fails on a fault of ours (not the store's: a bug met
        by some message), commit its messages one at a time and quarantine those that
        fail as internal_error: one message must not stop ingest, nor, redelivered after
        a restart, stop it again for ever. StoreError passes (then nothing is acked)."""
        messages = [p.message for p in batch]
        try:
            return self._sink.commit(messages)
        except StoreMisuse:
            log.exception("a batch of %d messages failed to commit; one at a time", len(batch))
        except EdgeTwinError:
            raise
        except Exception:
            log.exception("a batch of %d messages failed to commit; one at a time", len(batch))
        total = BatchResult()
        for message in messages:
            try:
                one = self._sink.commit([message])
            except StoreMisuse as exc:
                log.exception("a message on %s failed to commit: quarantined", message.topic)
                one = self._sink.refuse(message, f"{type(exc).__name__} while storing")
            except EdgeTwinError:
                raise
            except Exception as exc:
                log.exception("a message on %s failed to commit: quarantined", message.topic)
                one = self._sink.refuse(message, f"{type(exc).__name__} while decoding")
            total.merge(one)
        return total

    def _committed(self) -> None:
        if self.stats.commits_failing_since is not None:
            log.warning("commits succeed again after %d failures", self.stats.commit_failures)
        self.stats.commits_failing_since = None
        self.stats.last_commit_at = time.time()

    def _serve_inlet(self) -> None:
        if self._inlet is None or not self._inlet.arrived.is_set():
            return
        for result in self._inlet.serve(self._sink):
            self._committed()
            self.stats.add(result)
            self._downstream(functools.partial(self._sink.after_commit, result))

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (True if stopping meanwhile), serving uploads as they come and
        doing the idle work: the technical alarms (gateway_broker_unreachable among them),
        escalation and delivery must not wait for the broker."""
        deadline = time.monotonic() + seconds
        idle_at = time.monotonic()  # a short pause reconnects without the idle work
        while not self._stop.is_set():
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return False
            if now - idle_at >= PAUSED_IDLE_EVERY_S:
                idle_at = now
                self._heartbeat()
                self._workers.beat(WORKER)
                self._downstream(self._sink.on_idle)
                continue
            wait = min(left, PAUSED_IDLE_EVERY_S)
            if self._inlet is not None and self._inlet.arrived.wait(wait):
                self._serve_inlet()
            elif self._inlet is None:
                self._stop.wait(wait)
        return True

    def _downstream(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            # Downstream must never stop ingestion: what it missed it reads from the store.
            log.exception("downstream processing failed; it will catch up from the store")

    def _reconnect(self, backoff: float) -> float:
        if self._pause(backoff):
            return backoff
        try:
            self._client.reconnect()
            self.stats.reconnects += 1
        except OSError as exc:
            self._link.unreachable(time.monotonic())
            self.stats.last_error = f"reconnect failed: {exc}"
            log.warning(self.stats.last_error)
        return min(backoff * 2, RECONNECT_MAX_S)


def probe_broker(mqtt: MqttSection, timeout: float = 5.0) -> None:
    """Connect with a throwaway client id and disconnect; BrokerError if that fails.
    (Never the gateway's own client id: that would take over its persistent session.)"""
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{mqtt.client_id}-check",
        protocol=paho.MQTTv5,
    )
    if mqtt.username:
        client.username_pw_set(mqtt.username, mqtt_password(mqtt) or None)
    client.on_connect = on_connect
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=10)
    except OSError as exc:
        raise BrokerError(f"cannot reach {mqtt.host}:{mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise BrokerError(f"{mqtt.host}:{mqtt.port} did not answer CONNECT in {timeout:g} s")
        if refused:
            raise BrokerError(f"{mqtt.host}:{mqtt.port} refused the connection: {refused[0]}")
    finally:
        client.disconnect()
        client.loop_stop()
