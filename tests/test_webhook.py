"""Alarm delivery to the care team's webhook cannot be fooled or stopped: any failure of
an attempt is retried, redirects are not followed, only a 2xx counts, an event refused
for good is set aside without blocking the rest, a failing channel raises a technical
alarm, requests are signed, and the URL's secrets stay out of the logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from edge_twin.alert import (
    WEBHOOK_CONSUMER,
    AlarmEngine,
    AlertStage,
    Redelivery,
    WebhookSender,
    redeliver_dead_letters,
)
from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import AlertSection, Config
from edge_twin.domain import AlarmState, Observation
from edge_twin.errors import ConfigError
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, consumers
from tests.conftest import T0, api_user, wait_until
from tests.misbehaving_endpoint import MisbehavingEndpoint

SECRET = b"0123456789abcdef0123456789abcdef"
FAST = (0.05, 0.2)  # back-off: the tests' patience, not the field's


@pytest.fixture
def endpoint() -> Iterator[MisbehavingEndpoint]:
    e = MisbehavingEndpoint(timeout_hold_s=3.0)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def alert(tmp_path: Path, endpoint: MisbehavingEndpoint) -> AlertSection:
    secret = tmp_path / "webhook-secret"
    secret.write_bytes(SECRET + b"\n")
    return AlertSection(
        webhook_url=endpoint.url, webhook_timeout_s=2.0, webhook_secret_file=str(secret)
    )


def raise_alarms(db: Path, patients: int) -> list[int]:
    """One battery_low alarm raised per patient: one event each, in order."""
    with Store(db) as store:
        engine = AlarmEngine(store, lambda: T0)
        consumers_start(store)
        observations = [
            Observation(f"pt-{i:03d}", "battery_low", T0, True, "battery 9%")
            for i in range(patients)
        ]
        return engine.observe(observations)


def consumers_start(store: Store) -> None:
    with store.transaction() as conn:
        consumers.register(conn, WEBHOOK_CONSUMER)


def position(db: Path) -> int:
    with Store(db) as store:
        return consumers.position(store.conn, WEBHOOK_CONSUMER)


def delivered(endpoint: MisbehavingEndpoint) -> list[int]:
    """The event ids of the POSTs, in order of arrival."""
    return [int(r.headers["x-edge-twin-event"].split(":")[1]) for r in endpoint.posts()]


def sender(db: Path, alert: AlertSection) -> WebhookSender:
    return WebhookSender(str(db), alert, "gw-1", wall=lambda: T0, backoff_s=FAST)


def deliver_all(
    db: Path, alert: AlertSection, patients: int, answers: list[str], endpoint: MisbehavingEndpoint
) -> list[int]:
    """Raise an alarm per patient and let a sender handle every event, the endpoint
    answering ``answers`` in turn; the event ids."""
    events = raise_alarms(db, patients)
    endpoint.script(answers)
    s = sender(db, alert)
    s.start()
    try:
        wait_until(lambda: position(db) == events[-1], 20, "every event handled")
    finally:
        s.stop()
    return events


def test_replies_that_are_not_http_or_cut_short_are_retried_and_nothing_is_lost(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    events = raise_alarms(db_path, 2)
    endpoint.script(["garbage", "500", "timeout", "429", "401", "404"])
    s = sender(db_path, alert)
    s.start()
    try:
        wait_until(lambda: position(db_path) == events[-1], 20, "both events delivered")
        assert s._thread.is_alive()  # no reply killed the thread
    finally:
        s.stop()
    # The first event was tried seven times (six failures, then the 204), then the second.
    assert delivered(endpoint) == [events[0]] * 7 + [events[1]]
    assert s.failures == 6
    assert s.sent == 2
    with Store(db_path) as store:
        (status,) = [c for c in consumers.statuses(store.conn) if c.name == "alarm-webhook"]
    assert status.failures == 0  # delivered since: the failures are history


def test_an_endpoint_that_fails_now_and_then_is_not_slowed_to_the_longest_back_off(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    """Every other post fails: each failure waits the first back-off, since the posts
    before it went through. (Before, the back-off doubled on every failure until all
    was sent: 1, 2, 4 ... 300 s while most alarms were delivered.)"""
    events = raise_alarms(db_path, 10)
    endpoint.script(["ok", "500"] * 10)
    s = WebhookSender(str(db_path), alert, "gw-1", wall=lambda: T0, backoff_s=(0.2, 60.0))
    started = time.monotonic()
    s.start()
    try:
        wait_until(lambda: position(db_path) == events[-1], 30, "every event delivered")
    finally:
        s.stop()
    # Nine failures at 0.2 s each; doubling, the last ones alone would wait 25-51 s.
    assert time.monotonic() - started < 8.0
    assert (s.sent, s.failures) == (10, 9)


def test_a_2xx_whose_body_is_cut_short_is_delivered_once(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    (event,) = raise_alarms(db_path, 1)
    endpoint.script(["incomplete"])  # 200, Content-Length 100, 5 bytes, closed
    s = sender(db_path, alert)
    s.start()
    try:
        wait_until(lambda: position(db_path) == event, 20, "delivered")
    finally:
        s.stop()
    assert delivered(endpoint) == [event]  # the receiver said 200: not sent again


def test_a_redirect_is_not_followed_and_is_not_a_delivery(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    (event,) = raise_alarms(db_path, 1)
    endpoint.default = "redirect"
    s = sender(db_path, alert)
    s.start()
    try:
        wait_until(lambda: s.failures >= 3, 20, "redirects answered")
        assert position(db_path) == 0
        with Store(db_path) as store:
            (status,) = [c for c in consumers.statuses(store.conn) if c.name == "alarm-webhook"]
        assert status.last_error == "HTTP 301"
        endpoint.default = "ok"
        wait_until(lambda: position(db_path) == event, 20, "delivered once it answers 2xx")
    finally:
        s.stop()
    assert {r.method for r in endpoint.requests} == {"POST"}  # never re-sent as a GET
    assert not any(r.path == "/moved" for r in endpoint.requests)


def test_an_event_refused_for_good_is_set_aside_and_the_rest_flow_on(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    events = deliver_all(db_path, alert, 3, ["422", "ok", "400"], endpoint)
    assert delivered(endpoint) == events  # each tried once: a 4xx is not retried
    with Store(db_path) as store:
        dead = consumers.dead_letters(store.conn)
    assert sorted((d.entry_id, d.reason) for d in dead) == [
        (events[0], "HTTP 422"),
        (events[2], "HTTP 400"),
    ]


def test_requests_are_signed_and_the_url_stays_out_of_the_logs(
    db_path: Path,
    alert: AlertSection,
    endpoint: MisbehavingEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (event,) = raise_alarms(db_path, 1)
    endpoint.script(["500", "422"])
    s = sender(db_path, alert)
    with caplog.at_level(logging.DEBUG):
        s.start()
        try:
            wait_until(lambda: position(db_path) == event, 20, "handled")
        finally:
            s.stop()
    first = endpoint.posts()[0]
    t, v1 = (part.split("=", 1)[1] for part in first.headers["x-edge-twin-signature"].split(","))
    expected = hmac.new(SECRET, f"{t}.".encode() + first.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    assert int(t) == int(T0)
    assert json.loads(first.body)["event_id"] == first.headers["x-edge-twin-event"]
    assert "T0KEN" not in caplog.text
    assert SECRET.decode() not in caplog.text
    assert "HTTP 500" in caplog.text
    assert "HTTP 422" in caplog.text


def test_the_webhook_needs_https_off_the_box_and_a_secret(
    tmp_path: Path, alert: AlertSection, db_path: Path
) -> None:
    with pytest.raises(ConfigError, match="must use https://"):
        WebhookSender(str(db_path), replace(alert, webhook_url="http://oncall.example.org/h"), "g")
    with pytest.raises(ConfigError, match="port that is not a number"):
        WebhookSender(str(db_path), replace(alert, webhook_url="https://h:abc/"), "g")
    with pytest.raises(ConfigError, match="webhook_secret_file is required"):
        WebhookSender(str(db_path), replace(alert, webhook_secret_file=""), "gw-1")
    short = tmp_path / "short"
    short.write_text("tiny")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        WebhookSender(str(db_path), replace(alert, webhook_secret_file=str(short)), "gw-1")


@pytest.mark.broker
def test_a_gateway_whose_webhook_cannot_run_still_ingests_and_says_why(
    broker: PrivateBroker, make_config: Callable[..., Config], db_path: Path
) -> None:
    # Every other command still loads this configuration (edge-twin migrate, doctor, ...).
    cfg = make_config(broker, alert={"webhook_url": "http://oncall.example.org/hook"})
    with Gateway(cfg, ManualClock(T0)) as gw:
        assert gw.api is not None
        assert gw.ingest is not None
        assert gw.ingest.connected
        health = httpx.get(
            f"{gw.api.url}/health", headers=api_user(db_path, "engineer", "eng-w"), timeout=5
        ).json()
    assert health["status"] == "degraded"
    assert any("alarm webhook is not running" in p and "https://" in p for p in health["problems"])
    assert not any("example.org/hook" in p for p in health["problems"])  # the URL's path


def test_a_channel_that_cannot_deliver_raises_alarm_delivery_failing(db_path: Path) -> None:
    events = raise_alarms(db_path, 1)
    with Store(db_path) as store:
        now = [T0]
        engine = AlarmEngine(store, lambda: now[0])
        stage = AlertStage(store, engine, stale_glucose_s=900.0)
        stage.watch_delivery(("alarm-webhook",), after_s=120.0)
        now[0] = T0 + 60
        stage.tick(now[0])
        assert not alarms.listing(store.conn, "gateway", open_only=True)
        now[0] = T0 + 200  # the event has waited 200 s
        stage.tick(now[0])
        (failing,) = alarms.listing(store.conn, "gateway", open_only=True)
        assert failing.alarm_type == "alarm_delivery_failing"
        assert "alarm-webhook: events waiting for 3 min" in failing.reason
        with store.transaction() as conn:  # delivered at last
            consumers.advance(conn, WEBHOOK_CONSUMER, events[-1], now[0])
            delivered_too = alarms.events_after(conn, events[-1], 10)
            if delivered_too:
                consumers.advance(conn, WEBHOOK_CONSUMER, delivered_too[-1].id, now[0])
        now[0] = T0 + 300
        stage.tick(now[0])
        assert not alarms.listing(store.conn, "gateway")  # resolved once delivered
        (resolved,) = alarms.listing(store.conn, "gateway", open_only=False)
        assert resolved.state is AlarmState.RESOLVED
        # An event the receiver refused for good raises it again, for a day.
        with store.transaction() as conn:
            consumers.dead_letter(conn, WEBHOOK_CONSUMER, events[-1], "HTTP 422", now[0])
        now[0] = T0 + 400
        stage.tick(now[0])
        (again,) = alarms.listing(store.conn, "gateway")
        assert "1 events refused for good" in again.reason


@pytest.mark.parametrize(
    ("channel", "said"),
    [(True, "queued for the care team's on-call webhook"), (False, "no care-team channel")],
)
def test_an_escalation_says_whether_anyone_was_told(
    db_path: Path, channel: bool, said: str
) -> None:
    with Store(db_path) as store:
        engine = AlarmEngine(store, lambda: T0, care_team_channel=channel)
        engine.observe([Observation("pt-001", "urgent_low", T0, True, "glucose 48 mg/dL")])
        (escalated,) = engine.escalate(T0 + 16 * 60)
        reason = store.conn.execute(
            "SELECT reason FROM alarm_events WHERE id = ?", (escalated,)
        ).fetchone()[0]
    assert said in reason


def test_escalation_runs_on_the_gateway_clock_not_the_devices(db_path: Path) -> None:
    wall = [T0]
    with Store(db_path) as store:
        engine = AlarmEngine(store, lambda: wall[0])
        # A CGM whose clock runs 30 min slow: its reading's time is half an hour back.
        engine.observe([Observation("pt-001", "urgent_low", T0 - 1800, True, "glucose 48")])
        assert engine.escalate(T0 + 60) == []  # sounding for a minute, not 31
        assert engine.escalate(T0 + 14 * 60) == []
        (escalated,) = engine.escalate(T0 + 15 * 60)
        reason = store.conn.execute(
            "SELECT reason FROM alarm_events WHERE id = ?", (escalated,)
        ).fetchone()[0]
    assert reason.startswith("unacknowledged for 15 min")


def dead_letters(db: Path) -> list[tuple[int, str]]:
    with Store(db) as store:
        return sorted((d.entry_id, d.reason) for d in consumers.dead_letters(store.conn))


def test_dead_letters_are_sent_again_once_the_receiver_is_fixed(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    """Before: an event refused for good stayed set aside for ever, with no way to send it
    once the receiver was fixed. Sent again beside the live sender, which goes on."""
    events = raise_alarms(db_path, 4)
    endpoint.script(["422", "ok", "422", "422"])
    s = sender(db_path, alert)
    s.start()
    try:
        wait_until(lambda: position(db_path) == events[-1], 20, "every event handled")
        assert [e for e, _ in dead_letters(db_path)] == [events[0], events[2], events[3]]
        tried = len(endpoint.posts())

        # The receiver still fails: the first failure that is not for good stops it.
        endpoint.script(["500"])
        with Store(db_path) as store:
            stopped = redeliver_dead_letters(store, alert, "gw-1", wall=lambda: T0 + 60)
        assert stopped == Redelivery(0, 0, 0, 3, "HTTP 500")
        assert len(dead_letters(db_path)) == 3  # nothing lost

        # Fixed, but for one event it still refuses: that one stays, with the new answer;
        # meanwhile a new alarm goes out through the live sender.
        endpoint.script(["ok", "400", "ok"])
        with Store(db_path) as store:
            done = redeliver_dead_letters(store, alert, "gw-1", wall=lambda: T0 + 120)
            (live,) = AlarmEngine(store, lambda: T0 + 130).observe(
                [Observation("pt-100", "battery_low", T0 + 130, True, "battery 8%")]
            )
        wait_until(lambda: position(db_path) == live, 20, "the new alarm delivered")
    finally:
        s.stop()
    assert done == Redelivery(2, 1, 0, 0)
    assert dead_letters(db_path) == [(events[2], "HTTP 400")]
    with Store(db_path) as store:  # alarm_delivery_failing counts it for a day from now
        assert consumers.dead_letter_count(store.conn, since=T0 + 120) == 1
    again = [p for p in endpoint.posts()[tried:] if json.loads(p.body).get("redelivered")]
    assert [int(p.headers["x-edge-twin-event"].split(":")[1]) for p in again] == [
        events[0],
        events[0],
        events[2],
        events[3],
    ]
    last = again[-1]  # signed at the time it was sent, identified as before
    t, v1 = (part.split("=", 1)[1] for part in last.headers["x-edge-twin-signature"].split(","))
    assert int(t) == int(T0 + 120)
    assert hmac.compare_digest(
        v1, hmac.new(SECRET, f"{t}.".encode() + last.body, hashlib.sha256).hexdigest()
    )
    assert last.headers["x-edge-twin-event"] == f"gw-1:{events[3]}"
    assert not any(json.loads(p.body).get("redelivered") for p in endpoint.posts()[:tried])


def test_the_cli_lists_and_redelivers_dead_letters(
    db_path: Path, alert: AlertSection, endpoint: MisbehavingEndpoint
) -> None:
    events = deliver_all(db_path, alert, 2, ["422", "ok"], endpoint)
    env = {
        **os.environ,
        "EDGE_TWIN_STORE_PATH": str(db_path),
        "EDGE_TWIN_ALERT_WEBHOOK_URL": alert.webhook_url,
        "EDGE_TWIN_ALERT_WEBHOOK_SECRET_FILE": alert.webhook_secret_file,
    }
    bin_dir = Path(sys.executable).parent

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / "edge-twin"), "alarms", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    listed = run("dead-letters")
    assert listed.returncode == 0, listed.stderr
    (line,) = [json.loads(x) for x in listed.stdout.splitlines()]
    assert (line["event_id"], line["type"], line["reason"]) == (
        events[0],
        "battery_low",
        "HTTP 422",
    )
    endpoint.script(["500"])
    failed = run("redeliver", "--json")
    assert failed.returncode == 75  # EX_TEMPFAIL: try again later
    assert json.loads(failed.stdout)["why"] == "HTTP 500"
    assert "stopped: HTTP 500; 1 kept" in failed.stderr
    sent = run("redeliver")
    assert sent.returncode == 0, sent.stderr
    assert "1 delivered, 0 refused again" in sent.stdout
    assert run("dead-letters").stdout == ""
