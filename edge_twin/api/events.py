"""Live updates for the pages: server-sent events from the alarm and reading logs.

    GET /events   (text/event-stream, for the user's own patients only)
      event: alarm     data: {"patient_id", "alarm_id", "type", "priority", "event", "state"}
      event: readings  data: {"patients": [...]}   new readings stored for these patients
      event: status    data: {"problems": [...]}   why data may not be current (changed)
      : keep-alive     every KEEPALIVE_S, so a dead connection is noticed at both ends

The stream starts at the logs' ends when it opens: a page already shows the past. It
polls the store (its own short read connection each time; SQLite readers never block the
writer) every ``poll_s``; it ends when the client goes, when the user's login ends or is
disabled (checked every RECHECK_S, which also picks up a change of their patients), and
when the server stops. Values are not sent:
a page that hears of a change fetches itself again, through the same access rules.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from edge_twin.api import access
from edge_twin.store import Store, alarms, readings, users

KEEPALIVE_S = 15.0
RECHECK_S = 30.0
BATCH = 500


@dataclass
class Cursor:
    """Where a stream has read the logs to."""

    alarm_event: int
    reading: int
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EventSource:
    """What a stream needs of the app."""

    store_path: Path
    read_only: bool
    guard: access.Guard
    problems: Callable[[Store], list[str]]  # why data may not be current
    closing: threading.Event  # set when the server stops
    poll_s: float = 1.0


def _open(source: EventSource) -> Store:
    return Store(source.store_path, migrate=False, read_only=source.read_only)


def start(source: EventSource) -> Cursor:
    with _open(source) as store:
        last_event = store.conn.execute("SELECT coalesce(max(id), 0) FROM alarm_events")
        return Cursor(int(last_event.fetchone()[0]), readings.max_id(store), source.problems(store))


def _kinds(problems: list[str]) -> list[str]:
    return [re.sub(r"\d+", "#", p) for p in problems]


def _message(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def poll(source: EventSource, user: users.User, cursor: Cursor) -> list[str]:
    """What happened since ``cursor`` that the user may know of (advances it)."""
    out = []
    with _open(source) as store:
        while True:
            found = alarms.events_after(store.conn, cursor.alarm_event, BATCH)
            if not found:
                break
            cursor.alarm_event = found[-1].id
            of = alarms.get_many(store.conn, {e.alarm_id for e in found})
            for e in found:
                a = of.get(e.alarm_id)
                if a is not None and user.may_see(a.patient_id):
                    out.append(
                        _message(
                            "alarm",
                            {
                                "patient_id": a.patient_id,
                                "alarm_id": a.id,
                                "type": a.alarm_type,
                                "priority": a.priority.value,
                                "event": e.event,
                                "state": e.state.value,
                            },
                        )
                    )
        newest = readings.max_id(store)
        if newest > cursor.reading:
            moved = readings.patients_between(store, cursor.reading, newest)
            cursor.reading = newest
            seen = sorted(p for p in moved if user.may_see(p))
            if seen:
                out.append(_message("readings", {"patients": seen}))
        problems = source.problems(store)
        # A change of what is wrong, not of its figures ("no reading for 31 min", 32, ...).
        if _kinds(problems) != _kinds(cursor.problems):
            out.append(_message("status", {"problems": problems}))
        cursor.problems = problems
    return out


def _logged_in_as(source: EventSource, request: Request) -> users.User | None:
    """The user as they are now (their patients may have changed); None: logged out."""
    with _open(source) as store:
        try:
            return access.authenticate(request, store, source.guard)
        except HTTPException:
            return None


async def stream(source: EventSource, request: Request, user: users.User) -> AsyncIterator[str]:
    cursor = await run_in_threadpool(start, source)
    yield "retry: 3000\n\n"  # how soon a browser reconnects after a drop
    last_sent = last_check = time.monotonic()
    while not source.closing.is_set():
        if await request.is_disconnected():
            return
        now = time.monotonic()
        if now - last_check >= RECHECK_S:
            last_check = now
            current = await run_in_threadpool(_logged_in_as, source, request)
            if current is None:
                yield _message("logout", {})
                return
            user = current
        for message in await run_in_threadpool(poll, source, user, cursor):
            last_sent = now
            yield message
        if now - last_sent >= KEEPALIVE_S:
            last_sent = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(source.poll_s)
