"""Messages that reach the gateway other than over MQTT (the API's Nightscout uploads),
committed by the ingest thread like any other and answered only once durable.

    API request thread: Inlet.submit(messages) --queue--> ingest loop: Inlet.serve(sink)
                        <-- BatchResult (or the StoreError) -- commit, then after_commit

The pipeline's store connection and its decoder belong to the ingest thread, so the
request waits for it: a phone is told "stored" only after the COMMIT, exactly like the
PUBACK a device gets over MQTT; a gateway killed before that leaves the phone to upload
again (Nightscout clients retry what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_twin.errors import EdgeTwinError, IngestUnavailable
from edge_twin.ingest.sink import Sink
from edge_twin.ingest.writer import BatchResult, RawMessage

log = logging.getLogger(__name__)

# Requests waiting for the ingest thread beyond this are refused at once (503): a phone
# retries, and a flood cannot queue unbounded work behind live devices.
MAX_WAITING = 64


@dataclass(slots=True)
class _Request:
    messages: Sequence[RawMessage]
    answered: Callable[[], None]  # called on the ingest thread once result or error is set
    result: BatchResult | None = None
    error: str | None = None


class Inlet:
    """A bounded hand-over from request threads to the ingest thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Request] = queue.Queue(MAX_WAITING)
        self.arrived = threading.Event()  # set when a request waits (wakes a sleeping loop)

    async def submit(self, messages: Sequence[RawMessage], timeout: float = 10.0) -> BatchResult:
        """Commit ``messages`` on the ingest thread and return what was stored;
        IngestUnavailable if the ingest thread is busy or gone, or the commit failed (then
        nothing was stored). Waits without holding a worker thread: phones waiting on a
        slow disk do not starve the API's other routes."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def answered() -> None:
            # The request may have timed out and its loop closed meanwhile.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(woken.set)

        request = _Request(messages, answered)
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise IngestUnavailable("the gateway is busy: try again shortly") from None
        self.arrived.set()
        try:
            await asyncio.wait_for(woken.wait(), timeout)
        except TimeoutError:
            # The ingest thread may still commit it later: the client retries, and the
            # store's dedupe keeps one copy.
            raise IngestUnavailable(f"not stored within {timeout:g} s: try again") from None
        if request.result is None:
            raise IngestUnavailable(f"not stored: {request.error}")
        return request.result

    @staticmethod
    def _refuse(sink: Sink, messages: Sequence[RawMessage], error: str) -> None:
        for message in messages:
            try:
                sink.refuse(message, f"{error} while decoding")
            except EdgeTwinError as exc:
                log.error("an upload that failed could not be quarantined: %s", exc)

    def serve(self, sink: Sink) -> list[BatchResult]:
        """On the ingest thread: commit every waiting request, one transaction each, and
        answer it; returns the results, for after_commit."""
        self.arrived.clear()
        results: list[BatchResult] = []
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return results
            try:
                request.result = sink.commit(request.messages)
            except EdgeTwinError as exc:
                request.error = str(exc)
                log.error("an upload could not be stored: %s", exc)
            except Exception as exc:
                # A fault of ours (a bug met by this upload): kept in quarantine, so that
                # it neither stops ingest nor is lost; the phone is told it was not stored.
                log.exception("an upload failed to commit: quarantined")
                request.error = f"internal error ({type(exc).__name__}): kept for a fix"
                self._refuse(sink, request.messages, type(exc).__name__)
            else:
                results.append(request.result)
            finally:
                request.answered()
