"""Alarm delivery to the care team's on-call endpoint: a consumer of the alarm event log
(``alarm-webhook``) on its own thread and store connection.

Each event is POSTed as JSON, in order, signed so that the receiver can trust it::

    X-Edge-Twin-Event: <gateway_id>:<event_id>
    X-Edge-Twin-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

(the Stripe/GitHub scheme: the receiver recomputes the HMAC with the shared secret and
refuses a stale ``t``, so a captured request cannot be replayed later).

Only a 2xx status counts as delivered (its body is read best effort: a body cut short
does not undo it). Nothing can fool it or stop it:
- redirects are not followed (urllib would re-send a POST as a GET without its body, and
  the 200 that followed would look like a delivery): a 3xx is a failure;
- any failure of an attempt (timeout, refused connection, a reply that is not HTTP, 5xx,
  401/403/404/410 and the other 4xx that say the channel is wrong, not the event) is
  retried with back-off (1 s to 5 min, ``Retry-After`` in seconds honoured, bounded),
  the later events waiting behind it, in order;
- an event the endpoint refuses for good (400, 413, 415, 422) goes to the dead-letter
  list (``delivery_dead_letters``) and the rest flow on; once the receiver is fixed,
  ``redeliver_dead_letters`` (``edge-twin alarms redeliver``) sends them again, signed
  and identified as before, marked ``"redelivered": true`` (late, out of order);
- failures are counted on the consumer (``/health``); the alert stage raises the
  technical alarm ``alarm_delivery_failing`` when events wait too long or were refused
  (IEC 60601-1-8: a distributed alarm system reports its own failure).

The URL may carry a token: logs and errors name only its scheme and host.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_twin import __version__
from edge_twin.alert.payload import event_json
from edge_twin.config import AlertSection, redacted, webhook_url_problem
from edge_twin.domain import Alarm
from edge_twin.errors import ConfigError
from edge_twin.store import Store, alarms, consumers
from edge_twin.workers import Workers

log = logging.getLogger(__name__)

WEBHOOK_CONSUMER = consumers.Consumer("alarm-webhook", consumers.Log.ALARM_EVENTS)
WORKER = "alarm-webhook"  # its name on /health
BATCH = 50
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
# 4xx answers that say "not now" rather than "never": retried like a 5xx.
# The 4xx answers that refuse the event itself (its content): set aside as a dead letter
# and the rest flow on. Every other failure (401/403: a wrong or rotated secret, a stale
# signature time; 404/410: an endpoint moved; 408/429; 5xx) is the channel's: the event is
# retried, the later ones wait behind it, and alarm_delivery_failing says so.
REFUSED_FOR_GOOD = frozenset({400, 413, 415, 422})
# What is read of an answer's body (best effort, within the attempt's timeout).
MAX_ANSWER_BYTES = 65_536


def read_secret(alert: AlertSection) -> bytes:
    """The HMAC key from alert.webhook_secret_file; ConfigError with the fix if absent."""
    if not alert.webhook_secret_file:
        raise ConfigError(
            "alert.webhook_secret_file is required with alert.webhook_url: the receiver"
            " checks each request's HMAC signature with it (create one with"
            " `openssl rand -hex 32 > FILE`, chmod 600, and give the receiver the same)"
        )
    path = Path(os.path.expandvars(alert.webhook_secret_file))
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"alert.webhook_secret_file: cannot read {path} ({exc.strerror})"
        ) from None
    if len(secret) < 16:
        raise ConfigError(f"alert.webhook_secret_file {path}: use at least 16 bytes of secret")
    return secret


def signature(secret: bytes, body: bytes, at: int) -> str:
    digest = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def signed_request(
    secret: bytes,
    gateway_id: str,
    e: alarms.AlarmEvent,
    a: Alarm,
    at: int,
    redelivered: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """One event's body and headers, signed at ``at`` (unix seconds). ``redelivered``: a
    dead letter sent again, late and out of order (said in the signed body)."""
    payload = event_json(e, a, gateway_id)
    if redelivered:
        payload["redelivered"] = True
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"edge-twin/{__version__}",
        "X-Edge-Twin-Event": f"{gateway_id}:{e.id}",
        "X-Edge-Twin-Signature": signature(secret, body, at),
    }
    return body, headers


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to."""

    delivered: bool
    permanent: bool  # refused for good: dead-lettered, not retried
    status: int | None
    why: str
    retry_after_s: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx


_OPENER = urllib.request.build_opener(_NoRedirect())


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Attempt:
    """POST once; every failure becomes an Attempt, none escapes."""
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = int(response.status)
            _drain(response, time.monotonic() + timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        status = exc.code
        retry = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        permanent = status in REFUSED_FOR_GOOD
        return Attempt(False, permanent, status, f"HTTP {status}", retry)
    except Exception as exc:  # any failure of an attempt is retried
        reason = str(getattr(exc, "reason", None) or exc).strip()
        return Attempt(False, False, None, f"{type(exc).__name__}: {reason}"[:300])
    if 200 <= status < 300:
        return Attempt(True, False, status, f"HTTP {status}")
    return Attempt(False, False, status, f"HTTP {status}: not a 2xx")


def _drain(response: http.client.HTTPResponse, deadline: float) -> None:
    """Read some of the answer's body, best effort (it is not ours to keep): the status
    line said what happened, so a body cut short, endless or dripping does not undo a
    2xx (sending the event again forever would hold every later alarm behind it)."""
    read = 0
    try:
        while read < MAX_ANSWER_BYTES and time.monotonic() < deadline:
            chunk = response.read1(4096)
            if not chunk:
                return
            read += len(chunk)
    except (OSError, http.client.HTTPException):
        return


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class WebhookSender:
    """Posts the alarm events after its position, in order, from its own thread."""

    def __init__(
        self,
        db_path: str,
        alert: AlertSection,
        gateway_id: str,
        workers: Workers | None = None,
        wall: Callable[[], float] = time.time,
        backoff_s: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S),
    ) -> None:
        """``wall``: the gateway clock (when events were delivered or set aside).
        ``backoff_s``: the first and the longest wait after a failure."""
        problem = webhook_url_problem(alert.webhook_url)
        if problem is not None:
            raise ConfigError(problem)
        self._secret = read_secret(alert)
        self._db_path = db_path
        self._url = alert.webhook_url
        self._gateway_id = gateway_id
        self._timeout_s = alert.webhook_timeout_s
        self._wall = wall
        self._backoff_min_s, self._backoff_max_s = backoff_s
        self._workers = workers or Workers()
        self._stop = threading.Event()
        self._thread = self._workers.thread(WORKER, self._run)
        self.sent = 0
        self.failures = 0
        self.dead_lettered = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._workers.stopping(WORKER)
        self._stop.set()
        self._thread.join(timeout=self._timeout_s + 10)

    def _run(self) -> None:
        """Until stopped; a failure of any kind (the store's included) is logged and
        retried after a back-off: the thread never ends on its own."""
        backoff = self._backoff_min_s
        store: Store | None = None
        while not self._stop.is_set():
            wait: float | None = None
            handled = self.sent + self.dead_lettered
            try:
                if store is None:
                    store = Store(self._db_path, migrate=False)
                wait = self._send_pending(store)
            except Exception:
                log.exception("webhook delivery failed; retried")
                _closed(store)
                wait, store = math.inf, None
            if self.sent + self.dead_lettered != handled:
                # The endpoint took events before this failure: it works, and an
                # occasional failure must not slow every later alarm down to the longest
                # back-off (it did: 5 min pauses while 4 posts in 5 succeeded).
                backoff = self._backoff_min_s
            if wait is None:
                backoff = self._backoff_min_s
                self._stop.wait(0.2)
                continue
            # Full jitter, never sooner than the endpoint asked (Retry-After, bounded).
            pause = random.uniform(self._backoff_min_s, backoff)  # jitter, not security
            asked = min(wait, 4 * self._backoff_max_s) if math.isfinite(wait) else 0.0
            self._stop.wait(max(pause, asked))
            backoff = min(self._backoff_max_s, backoff * 2)
        _closed(store)

    def _send_pending(self, store: Store) -> float | None:
        """Send what waits; None when all went, else the wait the endpoint asked for
        (0 if none, inf for a failure of ours)."""
        start = consumers.position(store.conn, WEBHOOK_CONSUMER)
        for e in alarms.events_after(store.conn, start, BATCH):
            a = alarms.get(store.conn, e.alarm_id)
            if a is None:
                with store.transaction() as conn:
                    consumers.advance(conn, WEBHOOK_CONSUMER, e.id, self._wall())
                continue
            at = int(self._wall())
            body, headers = signed_request(self._secret, self._gateway_id, e, a, at)
            result = post(self._url, body, headers, self._timeout_s)
            now = self._wall()
            if result.delivered:
                with store.transaction() as conn:
                    consumers.advance(conn, WEBHOOK_CONSUMER, e.id, now)
                self.sent += 1
                continue
            if result.permanent:
                with store.transaction() as conn:
                    consumers.dead_letter(conn, WEBHOOK_CONSUMER, e.id, result.why, now)
                    consumers.advance(conn, WEBHOOK_CONSUMER, e.id, now)
                self.dead_lettered += 1
                log.error(
                    "webhook %s refused alarm event %d for good (%s): dead-lettered",
                    redacted(self._url),
                    e.id,
                    result.why,
                )
                continue
            self.failures += 1
            with store.transaction() as conn:
                failures = consumers.record_failure(conn, WEBHOOK_CONSUMER, result.why, now)
            if failures == 1 or failures % 20 == 0:
                log.warning(
                    "webhook %s: alarm event %d not delivered (%s; %d in a row); retried",
                    redacted(self._url),
                    e.id,
                    result.why,
                    failures,
                )
            return result.retry_after_s or 0.0
        return None


@dataclass(frozen=True, slots=True)
class Redelivery:
    """What sending the dead letters again came to."""

    delivered: int
    refused: int  # refused for good again: still set aside, with the new reason
    gone: int  # their event or alarm no longer stored: nothing to send, forgotten
    waiting: int  # not sent: the endpoint failed, not for good, first (``why``)
    why: str | None = None


def redeliver_dead_letters(
    store: Store, alert: AlertSection, gateway_id: str, wall: Callable[[], float] = time.time
) -> Redelivery:
    """Send the webhook's dead letters again, oldest first, once the receiver is fixed:
    signed as any event, identified as before (``X-Edge-Twin-Event``: the receiver
    dedupes) and marked ``"redelivered": true`` in the body (they come late, after events
    that followed them: the receiver orders by ``at``). Delivered ones leave the list;
    one refused for good again stays with the new reason (and keeps
    alarm_delivery_failing up for a day from now); the first failure that is not for good
    stops it, the rest kept. Beside a running gateway too: its sender never touches a
    dead letter again."""
    problem = (
        webhook_url_problem(alert.webhook_url)
        if alert.webhook_url
        else ("alert.webhook_url is empty: there is no webhook to send to")
    )
    if problem is not None:
        raise ConfigError(problem)
    secret = read_secret(alert)
    letters = consumers.dead_letters(store.conn, WEBHOOK_CONSUMER, 10_000, oldest_first=True)
    delivered = refused = gone = 0
    for i, d in enumerate(letters):
        e = alarms.event(store.conn, d.entry_id)
        a = None if e is None else alarms.get(store.conn, e.alarm_id)
        if e is None or a is None:
            # The store never deletes alarm events: only a store replaced or edited by
            # hand gets here. Nothing can be sent, and it is said.
            log.warning("dead letter %d: its alarm event is no longer stored", d.entry_id)
            with store.transaction() as conn:
                consumers.forget_dead_letter(conn, WEBHOOK_CONSUMER, d.entry_id)
            gone += 1
            continue
        body, headers = signed_request(secret, gateway_id, e, a, int(wall()), redelivered=True)
        result = post(alert.webhook_url, body, headers, alert.webhook_timeout_s)
        if not (result.delivered or result.permanent):
            return Redelivery(delivered, refused, gone, len(letters) - i, result.why)
        with store.transaction() as conn:
            if result.delivered:
                consumers.forget_dead_letter(conn, WEBHOOK_CONSUMER, e.id)
                delivered += 1
            else:
                consumers.dead_letter(conn, WEBHOOK_CONSUMER, e.id, result.why, wall())
                refused += 1
    return Redelivery(delivered, refused, gone, 0)


def _closed(store: Store | None) -> None:
    if store is not None:
        try:
            store.close()
        except Exception:  # a connection that will not close is dropped
            log.debug("closing the webhook's store connection failed", exc_info=True)
