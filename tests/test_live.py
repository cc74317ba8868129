"""Live updates: the event stream (/events) tells each user of their own patients' alarms
and readings only, ends with the login and with the server; in Chromium, an alarm raised
by a CGM's readings through the real broker appears on an open dashboard without a
reload, and the patient's page draws the glucose with its forecast cone."""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edge_twin.alert import AlarmEngine
from edge_twin.api import events
from edge_twin.broker import PrivateBroker
from edge_twin.config import Config
from edge_twin.domain import Observation, Reading, Signal
from edge_twin.store import Store, devices, readings, users
from tests import browser
from tests.conftest import T0, api_user, login_link, serving_api
from tests.test_alarms import cgm_gateway, series, steady

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


@pytest.fixture
def two(make_config: Callable[..., Config]) -> Config:
    cfg = make_config(api={"port": 0})
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        devices.provision(store, "cgm-002", "pt-002", "cgm", T0)
    return cfg


def opened(r: httpx.Response) -> Iterator[str]:
    """The stream's lines, once it has taken its starting point (its first line, the
    reconnection delay, comes after): what happens next is news to it."""
    lines = r.iter_lines()
    assert next(lines).startswith("retry:")
    return lines


def messages(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a text/event-stream, as they come."""
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            yield kind, line[6:]
            kind = ""


def raise_low(cfg: Config, patient: str) -> None:
    with Store(cfg.store.path) as store:
        AlarmEngine(store, lambda: T0).observe(
            [Observation(patient, "low", T0, True, "glucose 62 below 70", {})]
        )


def test_a_stream_carries_only_the_users_own_patients(two: Config) -> None:
    mine = api_user(two.store.path, "care_team", "dr-one", ("pt-001",), all_patients=False)
    with serving_api(two) as url, httpx.stream("GET", f"{url}/events", headers=mine) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = opened(r)
        raise_low(two, "pt-002")  # not theirs: never sent
        raise_low(two, "pt-001")
        with Store(two.store.path) as store, store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-002", "cgm-002", Signal.GLUCOSE, T0, 100.0, T0),
                    Reading("pt-001", "cgm-001", Signal.GLUCOSE, T0, 90.0, T0),
                ],
            )
        got = []
        for kind, data in messages(lines):
            got.append((kind, data))
            if kind == "readings":
                break
    assert got[0][0] == "alarm"
    assert '"patient_id":"pt-001"' in got[0][1]
    assert '"event":"raised"' in got[0][1]
    assert "pt-002" not in str(got)
    assert got[-1] == ("readings", '{"patients":["pt-001"]}')
    assert "62" not in str(got)  # no values: a page fetches itself again


def test_a_stream_ends_with_the_login_and_with_the_server(
    two: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "RECHECK_S", 0.5)
    auth = api_user(two.store.path, "care_team", "dr-gone")
    other = api_user(two.store.path, "patient", "pat-1", ("pt-001",))
    ended: list[str] = []
    with serving_api(two) as url:
        with httpx.stream("GET", f"{url}/events", headers=auth) as r:
            lines = opened(r)
            with Store(two.store.path) as store:
                users.disable(store, "dr-gone")
            ended += [kind for kind, _ in messages(lines)]  # returns when the server ends it
        assert ended == ["logout"]
        listening = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{url}/events", headers=other, timeout=30) as r:
                lines = opened(r)
                listening.set()
                ended.extend(kind for kind, _ in messages(lines))
                ended.append("closed")

        reader = threading.Thread(target=listen)
        reader.start()
        assert listening.wait(timeout=10)  # the stream is open when the server stops
    reader.join(timeout=10)  # the server stopped: the stream ended, it did not hang
    assert not reader.is_alive()
    assert ended[-1] == "closed"


@pytest.mark.broker
@pytest.mark.browser
def test_an_alarm_arrives_live_and_the_glucose_plot_has_its_cone(
    broker: PrivateBroker, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    with cgm_gateway(broker, make_config) as home, browser.page() as page:
        home.play(series(T0, steady(24)))
        page.set_viewport_size({"width": 1100, "height": 900})
        page.goto(home.api + login_link(home.cfg.store.path))
        page.locator("#live.live-on").wait_for(timeout=10_000)  # the stream is open
        assert page.locator("li[data-alarm]").count() == 0
        page.evaluate("window.kept = true")  # gone if the page were loaded again
        # a physiological fall, -2 mg/dL/min, to 45: predicted, then urgent
        falling = [120 - 10 * i for i in range(1, 8)]
        home.play(series(T0 + 24 * 300, [*falling, 46, 45], first_seq=25))
        page.locator('li[data-alarm="urgent_low"]').wait_for(timeout=15_000)
        assert page.evaluate("window.kept") is True  # arrived without a reload
        page.goto(f"{home.api}/patients/pt-001/view?hours=3")
        glucose = page.locator('svg[data-chart="glucose"]')
        assert glucose.locator("polygon.cone").count() == 1  # the forecast cone
        assert glucose.locator("polyline.estimate").count() >= 1
        assert glucose.locator("circle.reading").count() >= 30
        assert glucose.locator('path[data-marker="alarm"]').count() >= 2
        trail = page.locator('section[data-section="audit"]').inner_text()
        assert "urgent low" in trail
        assert "predicted low" in trail
        shot = tmp_path / "patient.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("EDGE_TWIN_DOCS_SCREENSHOTS"):
            page.screenshot(path=str(DOCS_IMG / "patient-glucose.png"), full_page=False)
    assert shot.stat().st_size > 20_000
