"""The care-team dashboard, rendered by a real Chromium against a live gateway."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.store import Store, devices
from tests import browser
from tests.conftest import T0, cgm_home, fed_gateway, login_link, provision_home

pytestmark = [pytest.mark.broker, pytest.mark.browser]
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def test_dashboard_shows_each_patient_with_uncertainty_and_staleness(
    broker: PrivateBroker, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = make_config(broker)
    home = cgm_home(patients=2, hours=2, seed=4)
    provision_home(cfg.store.path, home)
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-999", "pt-999", "cgm", T0)  # a patient with no data
    clock = ManualClock(home.end)
    with fed_gateway(broker, cfg, home, clock) as gw:
        assert gw.api is not None

        def page() -> str:  # each Chromium run is a fresh profile: it logs in each time
            return gw.api.url + login_link(cfg.store.path)  # type: ignore[union-attr]

        fresh = browser.dom(page())
        shot = browser.screenshot(page(), tmp_path / "dashboard.png")
        if os.environ.get("EDGE_TWIN_DOCS_SCREENSHOTS"):  # docs/ pictures, taken by this test
            browser.screenshot(page(), DOCS_IMG / "dashboard.png")
        clock.advance(16 * 60)  # 16 min without a CGM reading: past glucose's 15 min
        stale = browser.dom(page())
        refused = browser.dom(f"{gw.api.url}/")  # not logged in

    for patient in ("pt-001", "pt-002"):
        assert f'data-patient="{patient}"' in fresh
    assert fresh.count('class="fresh"') == 2
    assert "STALE" not in fresh
    assert "no readings yet" in fresh  # pt-999
    assert "glucose-damped-trend" in fresh  # provenance is on the page
    assert stale.count('class="stale"') == 2
    assert shot.stat().st_size > 10_000  # a rendered page, not an error stub
    assert "pt-001" not in refused
    assert "log in first" in refused
