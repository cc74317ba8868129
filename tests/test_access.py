"""Access control on a real uvicorn server: every route has a rule (derived from the
app's routes, so a new endpoint without one fails here), 401 without a login, 403 across
every role boundary, the acting identity from the login (never from the body), the
access log, sessions and one-time links."""

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from edge_twin.alert import AlarmEngine
from edge_twin.api import create_app
from edge_twin.api.access import PUBLIC_PREFIXES, RULES
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.domain import Observation
from edge_twin.store import Store, alarms, devices, uploaders, users
from tests.conftest import PASSWORD, T0, api_user, login_link, serving_api

CONCRETE = {"patient_id": "pt-001", "alarm_id": "1", "alarm_type": "low"}


@pytest.fixture
def home(make_config: Callable[..., Config]) -> Config:
    """Two patients, a low alarm of pt-001's."""
    cfg = make_config(api={"port": 0})
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        devices.provision(store, "cgm-002", "pt-002", "cgm", T0)
        AlarmEngine(store, lambda: T0).observe(
            [Observation("pt-001", "low", T0, True, "glucose 62 below 70", {})]
        )
    return cfg


# Who may call what, written out here from docs/access.md (not read from the rule table
# it checks): P = the patient (pt-001's own user), O = another patient (pt-002's),
# C = a care team of pt-001 only, A = a care team of every patient, E = an engineer,
# U = a phone uploading for pt-001 by its api-secret (no user login), "*" = anyone, logged
# in or not.
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/health/live"): "*",
    ("GET", "/login"): "*",
    ("POST", "/login"): "*",
    ("GET", "/login/link"): "*",
    ("POST", "/logout"): "POCAE",
    ("GET", "/docs"): "POCAE",
    ("GET", "/docs/oauth2-redirect"): "POCAE",
    ("GET", "/redoc"): "POCAE",
    ("GET", "/openapi.json"): "POCAE",
    ("GET", "/me"): "POCAE",
    ("PUT", "/me/display"): "POCAE",
    ("GET", "/settings"): "POCAE",
    ("GET", "/health"): "CAE",
    ("GET", "/sync"): "CAE",
    ("GET", "/devices"): "CAE",
    ("GET", "/model"): "CAE",
    ("GET", "/quarantine"): "E",
    ("GET", "/engineer"): "E",
    ("GET", "/"): "CA",
    ("GET", "/patient"): "PO",  # each their own
    ("GET", "/patients"): "POCA",
    ("GET", "/events"): "POCA",
    ("GET", "/alarms"): "POCA",
    ("GET", "/alarms/{alarm_id}"): "PCA",  # pt-001's alarm
    ("POST", "/alarms/{alarm_id}/acknowledge"): "PCA",
    ("GET", "/patients/{patient_id}/view"): "PCA",
    ("GET", "/patients/{patient_id}/state"): "PCA",
    ("GET", "/patients/{patient_id}/readings"): "PCA",
    ("GET", "/patients/{patient_id}/risk"): "PCA",
    ("GET", "/patients/{patient_id}/forecast-skill"): "PCA",
    ("GET", "/patients/{patient_id}/alarm-settings"): "PCA",
    ("GET", "/patients/{patient_id}/alarm-audit"): "PCA",
    ("PUT", "/patients/{patient_id}/alarm-settings"): "CA",
    ("POST", "/patients/{patient_id}/alarms/{alarm_type}/pause"): "CA",
    ("GET", "/api/v1/status.json"): "U",
    ("GET", "/api/v1/status"): "U",
    ("GET", "/api/v1/verifyauth"): "U",
    ("GET", "/api/v1/experiments/test"): "U",
    ("POST", "/api/v1/entries"): "U",
    ("POST", "/api/v1/entries.json"): "U",
    ("POST", "/api/v1/treatments"): "U",
    ("POST", "/api/v1/treatments.json"): "U",
    ("PUT", "/api/v1/treatments"): "U",
    ("POST", "/api/v1/devicestatus"): "U",
    ("POST", "/api/v1/devicestatus.json"): "U",
}


def routes(cfg: Config) -> list[tuple[str, str]]:
    """Every route the app serves (API routes and plain ones), but the docs' assets."""
    app = create_app(cfg, ManualClock(T0))
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path.startswith(PUBLIC_PREFIXES), f"an unruled mount {route.path}"
        elif isinstance(route, Route | APIRoute):
            methods = sorted(route.methods or ())
            found += [(m, route.path) for m in methods if m != "HEAD"]
    return found


def test_every_route_has_an_access_rule_and_an_expectation(home: Config) -> None:
    served = routes(home)
    assert [r for r in served if r not in RULES] == [], "routes without an access rule"
    assert sorted(served) == sorted(EXPECTED), "routes this test does not know"


def phone(db: Path) -> dict[str, str]:
    """A phone of pt-001's with an upload secret, and the header Nightscout clients send."""
    with Store(db) as store:
        devices.provision(store, "phone-001", "pt-001", "cgm", T0)
        uploaders.issue(store, "phone-001", "phone-secret", T0)
    return {"api-secret": uploaders.api_secret("phone-secret")}


def call(http: httpx.Client, url: str, method: str, path: str) -> int:
    for key, value in CONCRETE.items():
        path = path.replace("{" + key + "}", value)
    body = {} if method == "PUT" else {"minutes": 10, "reason": "test"}
    # Streamed: the status is known from the head (an event stream never ends by itself).
    with http.stream(method, url + path, json=body if method != "GET" else None) as r:
        return r.status_code


def test_no_login_no_answer_and_each_role_only_its_own(home: Config) -> None:
    db = home.store.path
    people = {
        "P": api_user(db, "patient", "pat-1", ("pt-001",)),
        "O": api_user(db, "patient", "pat-2", ("pt-002",)),
        "C": api_user(db, "care_team", "dr-one", ("pt-001",), all_patients=False),
        "A": api_user(db, "care_team", "dr-all", all_patients=True),
        "E": api_user(db, "engineer", "eng-b"),
        "U": phone(db),
    }
    with serving_api(home) as url, httpx.Client() as anonymous:
        for method, path in routes(home):
            who_may = EXPECTED[(method, path)]
            status = call(anonymous, url, method, path)
            if who_may != "*":
                assert status == 401, ("anonymous", method, path, status)
            for who, headers in people.items():
                with httpx.Client(headers=headers) as http:
                    status = call(http, url, method, path)
                if who_may == "*":
                    assert status != 403, (who, method, path, status)
                elif who in who_may:
                    # 503: an upload to an API served without ingest (nothing stored)
                    no_ingest = who == "U" and method != "GET" and status == 503
                    assert status < 500 or no_ingest, (who, method, path, status)
                    assert status not in (401, 403), (who, method, path, status)
                elif who == "U":  # no user login: the user routes do not know it
                    assert status == 401, (who, method, path, status)
                else:
                    # 404 for an alarm the user may not see (alarm ids reveal nothing)
                    assert status in (403, 404), (who, method, path, status)


def test_lists_hold_only_what_the_user_may_see(home: Config) -> None:
    mine = api_user(home.store.path, "patient", "pat-2", ("pt-002",))
    care = api_user(home.store.path, "care_team", "dr-c", ("pt-002",), all_patients=False)
    with serving_api(home) as url:
        for headers in (mine, care):
            listed = httpx.get(f"{url}/patients", headers=headers).json()
            assert [p["patient_id"] for p in listed] == ["pt-002"]
            assert httpx.get(f"{url}/alarms", headers=headers).json() == []  # pt-001's low
            assert httpx.get(f"{url}/alarms/1", headers=headers).status_code == 404
            refused = httpx.post(f"{url}/alarms/1/acknowledge", json={}, headers=headers)
            assert refused.status_code == 404


def test_the_acting_identity_is_the_login_not_the_body(home: Config) -> None:
    care = api_user(home.store.path, "care_team", "dr-a")
    with serving_api(home) as url:
        r = httpx.post(f"{url}/alarms/1/acknowledge", json={"by": "someone-else"}, headers=care)
        assert r.status_code == 200
    with Store(home.store.path) as store:
        (_raised, acked) = alarms.events(store.conn, 1)
        assert acked.actor == "dr-a"
        log = users.access_log(store, "pt-001")
    assert ("dr-a", "POST", "/alarms/{alarm_id}/acknowledge", "allowed") in {
        (a.username, a.method, a.route, a.outcome) for a in log
    }


def test_the_pre_emptive_pause_attack_is_refused_and_audited(home: Config) -> None:
    care = api_user(home.store.path, "care_team", "mallory")
    with serving_api(home) as url:
        r = httpx.post(
            f"{url}/patients/pt-002/alarms/urgent_low/pause",
            json={"by": "dr-house", "minutes": 1440},
            headers=care,
        )
        assert r.status_code == 422
    with Store(home.store.path) as store:
        (entry,) = alarms.audit_log(store.conn, "pt-002")
    assert (entry.actor, entry.outcome, entry.alarm_type) == ("mallory", "refused", "urgent_low")


def test_login_sessions_links_and_disabling(home: Config, tmp_path: Path) -> None:
    with Store(home.store.path) as store:
        users.add(store, "dr-d", users.Role.CARE_TEAM, PASSWORD, T0, all_patients=True)
    with serving_api(home) as url:
        wrong = httpx.post(f"{url}/login", json={"username": "dr-d", "password": "nope-nope"})
        assert wrong.status_code == 401
        ok = httpx.post(f"{url}/login", json={"username": "dr-d", "password": PASSWORD})
        token = ok.json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/patients", headers=bearer).status_code == 200
        # The form logs in a browser: a session cookie, then the dashboard.
        with httpx.Client(base_url=url) as browser:
            form = browser.post("/login", data={"username": "dr-d", "password": PASSWORD})
            assert form.status_code == 303
            cookie = browser.cookies.get("edge_twin_session")
            assert cookie
            assert 'data-patient="pt-001"' in browser.get("/").text
            browser.post("/logout")
        assert httpx.get(f"{url}/", cookies={"edge_twin_session": cookie}).status_code == 401
        # A one-time link works once.
        link = login_link(home.store.path, "care_team", "dr-e")
        first = httpx.get(url + link)
        assert first.status_code == 303
        assert httpx.get(url + link).status_code == 401
        # Disabled: the session ends at once.
        with Store(home.store.path) as store:
            users.disable(store, "dr-d")
        assert httpx.get(f"{url}/patients", headers=bearer).status_code == 401
    with Store(home.store.path) as store:
        stored = store.conn.execute("SELECT password_hash FROM users").fetchall()
    assert all(PASSWORD not in row[0] and row[0].startswith("scrypt$") for row in stored)
