"""Decompensation risk in the running gateway: readings through the real broker -> twin ->
ONNX risk with provenance -> API and dashboard."""

import itertools
from collections.abc import Callable

import httpx
import pytest

from edge_twin.assess.risk_model import load_model, shipped_dir
from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock, to_iso
from edge_twin.config import Config
from edge_twin.store import Store, risks
from firmware_sim.home import Home
from firmware_sim.physiology.profile import CohortMix
from tests.conftest import T0, api_user, fed_gateway, provision_home, wait_until

pytestmark = pytest.mark.broker

DAY = 86400.0


def test_risk_is_assessed_from_the_twin_with_provenance(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(broker, assess={"risk_every_s": 6 * 3600.0})
    start = (T0 // DAY) * DAY
    home = Home(
        1,
        start,
        5 * 24,
        seed=77,
        mix=CohortMix(heart_failure=1.0, diabetes=0.0),
        kinds=("wrist", "bp_cuff", "scale"),
    )
    provision_home(cfg.store.path, home)
    shipped = load_model(shipped_dir()).card
    care = api_user(cfg.store.path)
    with fed_gateway(broker, cfg, home, ManualClock(home.end)) as gw:
        assert gw.api is not None
        assert gw.pipeline is not None
        wait_until(lambda: not gw.pipeline.estimator.lag(), what="twin caught up")
        with Store(cfg.store.path) as store:
            wait_until(lambda: bool(risks.latest(store, "pt-001")), what="a risk")
            history = risks.latest(store, "pt-001", 100)
        api = httpx.get(f"{gw.api.url}/patients/pt-001/risk", headers=care).json()
        page = httpx.get(f"{gw.api.url}/", headers=care).text
        model = httpx.get(f"{gw.api.url}/model", headers=care).json()

    newest = history[0]
    # event time: assessments at device times, at least risk_every_s apart
    times = sorted(r.t for r in history)
    assert all(b - a >= 6 * 3600.0 for a, b in itertools.pairwise(times))
    assert start < times[0]
    assert times[-1] <= home.end
    assert 0.0 <= newest.probability <= 1.0
    assert newest.provenance.sha256 == shipped.sha256
    assert newest.provenance.version == shipped.version
    assert set(newest.provenance.inputs) >= {"heart_rate", "resp_rate", "spo2"}
    # five days of data: no four-week norm yet, so features are unknown and confidence low
    assert newest.confidence == "low"
    assert any("unknown" in reason for reason in newest.confidence_reasons)
    # the API shows what the store holds (an assessment may have landed in between)
    with Store(cfg.store.path) as store:
        same = [r for r in risks.latest(store, "pt-001", 100) if to_iso(r.t) == api[0]["at"]]
    assert api[0]["probability"] == pytest.approx(same[0].probability, abs=1e-4)
    assert api[0]["provenance"]["model"] == "decompensation"
    assert 'data-risk="hf_decompensation"' in page
    assert model["sha256"] == shipped.sha256
    assert {d["feature"] for d in model["drift"]} >= {"weight_change_3d", "hr_vs_norm"}
