"""Schemathesis over the gateway's own OpenAPI document, against a real uvicorn server on
a store with patients, readings, an alarm and a risk: whatever the generated request,
logged in as each role or not at all, no answer is a server error (5xx).

Valid and invalid requests (schemathesis's positive and negative modes), derandomized
(the same examples each run) and bounded per operation (EXAMPLES), so it
can run in CI. /events is left out: an event stream never ends by itself (tests/
test_live.py covers it), and logging out runs last (it ends the session it is called
with)."""

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from edge_twin.alert import AlarmEngine
from edge_twin.api import create_app
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.domain import Observation, Reading, Signal
from edge_twin.estimate import TwinEstimator
from edge_twin.store import Store, devices, readings
from tests.conftest import T0, api_user, serving_api

EXAMPLES = 30
NOT_FUZZED = {"/events"}
KNOWN = {"patient_id": "pt-001", "alarm_id": 1, "alarm_type": "low"}


@pytest.fixture
def lived_in(make_config: Callable[..., Config]) -> Config:
    cfg = make_config(api={"port": 0})
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        devices.provision(store, "scale-001", "pt-001", "scale", T0)
        with store.transaction() as conn:
            readings.insert(
                conn,
                [
                    Reading("pt-001", "cgm-001", Signal.GLUCOSE, T0 - 3000 + 300 * k, 90.0, T0)
                    for k in range(10)
                ]
                + [Reading("pt-001", "scale-001", Signal.WEIGHT, T0 - 3600, 81.5, T0)],
            )
        TwinEstimator(store, now=lambda: T0).catch_up()
        AlarmEngine(store, lambda: T0).observe(
            [Observation("pt-001", "low", T0, True, "glucose 62 below 70", {})]
        )
    return cfg


def test_no_generated_request_gets_a_server_error(lived_in: Config) -> None:
    db = lived_in.store.path
    people = {
        "anonymous": {},
        "care_team": api_user(db, "care_team", "dr-fuzz"),
        "patient": api_user(db, "patient", "pat-fuzz", ("pt-001",)),
        "engineer": api_user(db, "engineer", "eng-fuzz"),
    }
    spec = create_app(lived_in, ManualClock(T0)).openapi()
    schema = schemathesis.openapi.from_dict(spec)
    operations = sorted(
        (r.ok() for r in schema.get_all_operations()),
        key=lambda op: (op.path == "/logout", op.path, op.method),
    )
    fuzzed = [op for op in operations if op.path not in NOT_FUZZED]
    assert len(fuzzed) >= 25  # the document lists the API, not an empty page
    failures: list[str] = []
    calls: list[int] = []
    served: set[str] = set()  # the operations that answered 200 at least once
    with serving_api(lived_in) as url:
        for op in fuzzed:
            # Valid requests and invalid ones (wrong types, out of range, missing parts).
            # and, half the time, ids that exist (random ones almost never do).
            known = {k: v for k, v in KNOWN.items() if "{" + k + "}" in op.path}
            cases = st.one_of(
                op.as_strategy(GenerationMode.POSITIVE),
                op.as_strategy(GenerationMode.NEGATIVE),
                op.as_strategy(GenerationMode.POSITIVE, path_parameters=known),
            )

            @given(case=cases, who=st.sampled_from(sorted(people)))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def probe(case: schemathesis.Case, who: str) -> None:
                r = case.call(base_url=url, headers=people[who], timeout=30)
                calls.append(r.status_code)
                if r.status_code == 200:
                    served.add(f"{case.method} {case.path}")
                if r.status_code >= 500:
                    failures.append(f"{who} {case.method} {case.formatted_path} -> {r.status_code}")

            probe()
    assert failures == []
    assert len(calls) >= 10 * len(fuzzed)
    assert {200, 401, 403, 404, 422} <= set(calls)  # allowed, refused, checked: all reached
    for page in ("/patients/{patient_id}/view", "/patients/{patient_id}/state", "/"):
        assert f"GET {page}" in served  # drawn with data, not only refused
