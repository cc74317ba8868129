"""The pages as their users use them, in Debian's Chromium driven by Playwright against a
gateway's API on a real store: log in per role, see the triage list, act on an alarm from
the dashboard, and be refused where the role does not allow."""

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge_twin.alert import AlarmEngine
from edge_twin.config import Config
from edge_twin.domain import Observation, Reading, Rejection, RejectReason, Signal
from edge_twin.estimate import TwinEstimator
from edge_twin.store import Store, alarms, devices, quarantine, readings
from tests import browser
from tests.conftest import PASSWORD, T0, api_user, serving_api

pytestmark = pytest.mark.browser
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


@pytest.fixture
def ward(make_config: Callable[..., Config]) -> Config:
    """Two patients; pt-002 has an open urgent low."""
    cfg = make_config(api={"port": 0})
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        devices.provision(store, "cgm-002", "pt-002", "cgm", T0)
        with store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-002", "cgm-002", Signal.GLUCOSE, T0 - 600 + 300 * k, v, T0)
                    for k, v in enumerate((60.0, 53.0, 48.0))
                ],
            )
        TwinEstimator(store, now=lambda: T0).catch_up()
        AlarmEngine(store, lambda: T0).observe(
            [Observation("pt-002", "urgent_low", T0, True, "glucose 48 mg/dL below 55", {})]
        )
    for role, name in (("care_team", "nurse-ann"), ("engineer", "eng-bo")):
        api_user(cfg.store.path, role, name)
    api_user(cfg.store.path, "patient", "pat-2", ("pt-002",))
    return cfg


def log_in(page: browser.Page, url: str, name: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_a_care_team_triages_and_acknowledges_from_the_dashboard(
    ward: Config, tmp_path: Path
) -> None:
    with serving_api(ward) as url, browser.page() as page:
        log_in(page, url, "nurse-ann")
        assert page.url == f"{url}/"
        patients = page.eval_on_selector_all(
            "section[data-patient]", "s => s.map(e => e.dataset.patient)"
        )
        assert patients == ["pt-002", "pt-001"]  # the urgent low first
        alarm = page.locator('li[data-alarm="urgent_low"]')
        assert "glucose 48 mg/dL below 55" in alarm.inner_text()
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        # Without a reason nothing is sent.
        alarm.locator("button[data-do=ack]").click()
        assert "a reason is required" in alarm.locator(".result").inner_text()
        alarm.locator("input[name=reason]").fill("gave 15 g of glucose")
        page.evaluate("window.kept = true")  # gone if the page were loaded again
        alarm.locator("button[data-do=ack]").click()
        acked = page.locator('li[data-alarm="urgent_low"][data-state="acknowledged"]')
        acked.wait_for(timeout=10_000)  # the page swapped its body in place
        assert page.evaluate("window.kept") is True
        assert "by nurse-ann" in acked.inner_text()
    assert shot.stat().st_size > 10_000
    with Store(ward.store.path) as store:
        (urgent,) = alarms.listing(store.conn, "pt-002")
        events = [(e.event, e.actor, e.reason) for e in alarms.events(store.conn, urgent.id)]
    assert events[-1] == ("acknowledged", "nurse-ann", "gave 15 g of glucose")


def test_an_engineer_sees_the_gateway_and_no_clinical_value(ward: Config) -> None:
    with Store(ward.store.path) as store:
        AlarmEngine(store, lambda: T0).observe(
            [Observation("pt-001", "battery_low", T0, True, "battery below 15%: cgm-001", {})]
        )
        with store.transaction() as conn:
            rejected = Rejection(RejectReason.UNKNOWN_DEVICE, "cgm-009 is not provisioned")
            quarantine.insert(
                conn,
                [quarantine.Rejected(T0, "et/v1/dev/cgm-009/readings", b"{}", None, [rejected])],
                quarantine.QuarantineLimits(),
            )
    with serving_api(ward) as url, browser.page() as page:
        log_in(page, url, "eng-bo")
        assert page.url == f"{url}/engineer"  # where an engineer lands
        text = page.locator("body").inner_text()
        assert page.locator('[data-device="cgm-001"]').count() == 1
        technical = page.locator("section[data-section=technical-alarms]").inner_text()
        assert "battery low" in technical
        assert "urgent low" not in text  # a clinical alarm is not theirs
        assert "mg/dL" not in text  # nor any glucose value
        assert "glucose 48" not in text
        assert "unknown_device" in page.locator("section[data-section=quarantine]").inner_text()
        if os.environ.get("EDGE_TWIN_DOCS_SCREENSHOTS"):
            page.screenshot(path=str(DOCS_IMG / "engineer.png"), full_page=True)
        answer = page.goto(f"{url}/")
        assert answer is not None
        assert answer.status == 403
        assert "pt-002" not in page.content()
        refused = page.goto(f"{url}/patients/pt-002/view")
        assert refused is not None
        assert refused.status == 403


def test_a_patient_sees_their_glucose_and_what_to_do_and_says_they_saw_the_alarm(
    ward: Config,
) -> None:
    with serving_api(ward) as url, browser.page() as page:
        log_in(page, url, "pat-2")
        assert page.url == f"{url}/patient"
        glucose = page.locator('section[data-signal="glucose"]').inner_text()
        value, trend = glucose.split()[:2]
        assert 44 <= float(value) <= 56  # the twin's glucose now, large
        assert trend in "\u21c8\u2191\u2197\u2192\u2198\u2193\u21ca"  # and its trend arrow
        alarm = page.locator('div[data-alarm="urgent_low"]')
        assert "Take 15-20 g of fast sugar" in alarm.inner_text()
        if os.environ.get("EDGE_TWIN_DOCS_SCREENSHOTS"):
            page.set_viewport_size({"width": 800, "height": 1000})
            page.screenshot(path=str(DOCS_IMG / "patient-home.png"), full_page=True)
        alarm.locator("button[data-do=ack]").click()
        page.locator('div[data-alarm="urgent_low"][data-state="acknowledged"]').wait_for(
            timeout=10_000
        )
        assert page.goto(f"{url}/").status == 403  # not the care team's dashboard
        assert page.goto(f"{url}/patients/pt-001/state").status == 403  # not theirs


def test_each_user_chooses_their_own_units_zone_and_clock(ward: Config) -> None:
    other = api_user(ward.store.path, "care_team", "dr-other")
    with serving_api(ward) as url, browser.page() as page:
        log_in(page, url, "nurse-ann")
        assert "mg/dL" in page.locator("section[data-patient=pt-002]").inner_text()
        page.goto(f"{url}/settings")
        page.select_option("#glucose_unit", "mmol/L")
        page.fill("#time_zone", "Mars/Olympus")
        page.click("button[type=submit]")
        page.locator(".result", has_text="not an IANA time zone").wait_for(timeout=5000)
        page.fill("#time_zone", "America/New_York")
        page.select_option("#clock_24h", "false")
        page.click("button[type=submit]")
        page.locator(".result", has_text="saved").wait_for(timeout=5000)
        page.goto(f"{url}/")
        mine = page.locator("section[data-patient=pt-002] tr[data-signal=glucose]").inner_text()
        assert "mmol/L" in mine
        assert "mg/dL" not in mine  # (an alarm's reason keeps the words it was raised with)
        assert " AM" in mine or " PM" in mine  # a 12-hour clock
        assert "America/New_York" in page.locator("body").inner_text()
        theirs = httpx.get(f"{url}/", headers=other).text  # the deployment's, unchanged
        assert "mg/dL" in theirs
        me = httpx.get(f"{url}/me", headers=other).json()
        assert me["display"]["effective"]["glucose_unit"] == "mg/dL"
