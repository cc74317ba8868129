"""The gateway's long-running threads, watched: none of them dies silently.

Every worker (ingest, alarm webhook, FHIR sync, the API server) runs its loop through
``Workers.thread``. A loop that raises, or returns while the gateway is not stopping, is
*dead*: the death is logged with its traceback, kept for ``/health`` ("degraded: worker
X died: ...") and passed to ``on_death``. ``edge-twin run`` ends the process there with a
failure status, so systemd restarts it: a gateway that cannot ingest, alarm or deliver
must not sit there looking alive. Loops that are expected to turn (ingest) call ``beat``
each turn; one that has not turned for ``stall_s`` is reported as stalled.

Failures a worker expects (a broker away, a full disk, an upstream down) are handled in
the worker itself, retried with back-off and reported on ``/health``: a death here means
something nobody planned for, and a fresh process is the safest answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The ingest loop turning no more than once a minute is hung (systemd's WatchdogSec is 60 s).
STALL_S = 60.0


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    name: str
    alive: bool
    died: str | None  # the exception's type when it died while the gateway was running
    last_beat_s: float | None  # seconds since the loop last turned (None: not beating)
    stalled: bool

    def problem(self) -> str | None:
        """What is wrong with this worker, in words for /health, or None."""
        if self.died is not None:
            return f"the {self.name} worker died: {self.died}"
        if not self.alive:
            return f"the {self.name} worker is not running"
        if self.stalled:
            return f"the {self.name} worker has not turned for {self.last_beat_s:.0f} s"
        return None


class Workers:
    """A registry of watched threads; ``on_death(name, why)`` is called from the dying
    thread (it must not block on that thread)."""

    def __init__(self, on_death: Callable[[str, str], None] | None = None) -> None:
        self._on_death = on_death
        self._stall_s: dict[str, float] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._beats: dict[str, float] = {}
        self._deaths: dict[str, str] = {}
        self._stopping: set[str] = set()
        self._all_stopping = False
        self._lock = threading.Lock()

    def thread(
        self, name: str, loop: Callable[[], None], stall_s: float | None = None
    ) -> threading.Thread:
        """A daemon thread running ``loop`` under watch (not started). ``name`` is the
        worker's name on /health; the thread is named ``edge-twin-<name>``.
        ``stall_s``: the loop beats (``beat``) and is stalled after this long without."""
        thread = threading.Thread(
            target=self._watch, args=(name, loop), name=f"edge-twin-{name}", daemon=True
        )
        with self._lock:
            self._threads[name] = thread
            self._deaths.pop(name, None)
            self._stopping.discard(name)
            if stall_s is not None:
                self._stall_s[name] = stall_s
        return thread

    def beat(self, name: str) -> None:
        """The worker's loop turned (cheap: called on every turn)."""
        self._beats[name] = time.monotonic()

    def stopping(self, name: str | None = None) -> None:
        """The worker ``name`` (default: every worker) is being stopped: its loop ending
        now ends as asked."""
        with self._lock:
            if name is None:
                self._all_stopping = True
            else:
                self._stopping.add(name)

    def _asked_to_stop(self, name: str) -> bool:
        with self._lock:
            return self._all_stopping or name in self._stopping

    def _watch(self, name: str, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # every death is reported, then fatal
            if self._asked_to_stop(name):
                log.warning("worker %s failed while stopping", name, exc_info=exc)
                return
            # The type only: /health is read by engineers, and an exception's text may
            # carry a value; the traceback goes to the log.
            why = type(exc).__name__
            log.critical("worker %s died", name, exc_info=exc)
        else:
            if self._asked_to_stop(name):
                return
            why = "its loop ended while the gateway was running"
            log.critical("worker %s: %s", name, why)
        self._died(name, why)

    def _died(self, name: str, why: str) -> None:
        with self._lock:
            self._deaths[name] = why
        if self._on_death is not None:
            self._on_death(name, why)

    def died_elsewhere(self, name: str, why: str) -> None:
        """A thread not started here died (a library's, seen by threading.excepthook)."""
        log.critical("thread %s died: %s", name, why)
        self._died(name, why)

    def statuses(self) -> list[WorkerStatus]:
        now = time.monotonic()
        with self._lock:
            threads = dict(self._threads)
            deaths = dict(self._deaths)
        out = []
        for name, thread in threads.items():
            beat = self._beats.get(name)
            age = None if beat is None else now - beat
            alive = thread.is_alive()
            limit = self._stall_s.get(name)
            stalled = alive and limit is not None and age is not None and age > limit
            out.append(WorkerStatus(name, alive, deaths.get(name), age, stalled))
        out.extend(
            WorkerStatus(name, False, why, None, False)
            for name, why in deaths.items()
            if name not in threads
        )
        return out

    def problems(self) -> list[str]:
        return [p for s in self.statuses() if (p := s.problem()) is not None]
