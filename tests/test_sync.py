"""FHIR upstream sync against a real FHIR server (Medplum's router on Node, started by the
test: edge_twin_demo/fhir_server.py), with a fault proxy in front of it for the outages a
real upstream has: every resource conformant and accepted, nothing duplicated after a
crash mid-batch, nothing lost through an outage, refused resources parked, consent kept.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.communicationrequest import CommunicationRequest
from fhir.resources.R4B.device import Device as FhirDevice
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.riskassessment import RiskAssessment

from edge_twin.alert import AlarmEngine, AlertStage
from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock, SystemClock
from edge_twin.config import Config, SyncSection, load_config
from edge_twin.domain import (
    SIGNALS,
    Alarm,
    AlarmState,
    Contribution,
    DecompensationRisk,
    Device,
    DeviceType,
    ModelProvenance,
    Priority,
    Reading,
    Signal,
)
from edge_twin.domain import (
    Observation as Condition,
)
from edge_twin.errors import ConfigError, StoreError, UpstreamError, UpstreamRefused
from edge_twin.ingest import RawMessage, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, alarms, consumers, devices, readings, risks, upstream
from edge_twin.store.alarms import AlarmEvent
from edge_twin.store.upstream import READINGS_CONSUMER
from edge_twin.sync import FhirClient, FhirSync, SyncWorker, mapping
from edge_twin_demo.fhir_server import FhirTestServer
from firmware_sim.home import Home
from tests.conftest import T0, api_user, cgm_home, fed_gateway, provision_home, wait_until
from tests.fault_proxy import FaultProxy
from tests.token_server import TokenServer

HOURS = 30.0
VALIDATORS = {
    "Observation": Observation,
    "Patient": Patient,
    "Device": FhirDevice,
    "CommunicationRequest": CommunicationRequest,
    "Communication": Communication,
    "Flag": Flag,
    "RiskAssessment": RiskAssessment,
}


@pytest.fixture(scope="module")
def server() -> Iterator[FhirTestServer]:
    with FhirTestServer() as s:
        yield s


@pytest.fixture
def fhir(server: FhirTestServer) -> FhirTestServer:
    server.reset()
    return server


@pytest.fixture(scope="module")
def home_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two patients' home (CGM, wrist, cuff, scale) for HOURS, lived through the real
    ingest path once for the module; each test syncs a copy."""
    db = tmp_path_factory.mktemp("home") / "home.sqlite"
    home = Home(2, T0, HOURS, seed=5)
    provision_home(db, home)
    cfg = load_config(env={})
    cfg = replace(
        cfg,
        store=replace(cfg.store, path=db),
        assess=replace(cfg.assess, model_dir=db.parent / "models"),
    )
    messages = sorted(home.messages(), key=lambda m: m.t)
    with Store(db, "NORMAL") as store:
        clock = ManualClock(T0)
        replay(
            Pipeline(store, cfg, clock),
            [RawMessage(m.topic, m.payload, m.t) for m in messages],
            clock,
        )
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


@pytest.fixture
def lived(home_db: Path, db_path: Path) -> Callable[..., None]:
    def copy(consent: tuple[str, ...] = ("pt-001", "pt-002")) -> None:
        """The home's store at ``db_path``; the patients in ``consent`` agreed to sharing."""
        shutil.copyfile(home_db, db_path)
        with Store(db_path) as store:
            for pid in consent:
                upstream.set_consent(store, pid, True, T0, "test")

    return copy


def sync_cfg(url: str, **options: Any) -> SyncSection:
    return replace(load_config(env={}).sync, url=url, timeout_s=2.0, **options)


def drain(store: Store, url: str, now: float = T0 + 10 * 86400, **options: Any) -> FhirSync:
    """Sync until nothing is left (summaries due: ``now`` is long after the home's hours)."""
    client = FhirClient(sync_cfg(url, **options))
    with FhirSync(store, client, "gw-test", sync_cfg(url, **options), now=lambda: now) as sync:
        for _ in range(1000):
            if not sync.step():
                break
    client.close()
    return sync


def drive(sync: FhirSync) -> None:
    """Step until there is nothing left (or a step raises)."""
    for _ in range(1000):
        if not sync.step():
            return


def steps(sync: FhirSync, n: int = 3) -> None:
    """A few steps: a bundle's failure shows at the step after it was sent (pipelined)."""
    for _ in range(n):
        sync.step()


def stored_summary(db: Path) -> Counter[str]:
    """What the gateway holds that the care team must receive, in resource terms."""
    with Store(db) as store:
        rows = store.conn.execute(
            "SELECT r.patient_id, r.device_id, r.signal, r.t FROM readings r"
            " JOIN patients p ON p.patient_id = r.patient_id AND p.upstream_consent"
        ).fetchall()
    out: Counter[str] = Counter()
    bp: set[tuple[str, float]] = set()
    hours: set[tuple[str, str, float]] = set()
    for _pid, device, signal, t in rows:
        if device.startswith("wr-"):
            hours.add((device, signal, mapping.window_start(t)))
        elif signal in ("systolic", "diastolic"):
            bp.add((device, t))
        else:
            out[mapping.CODES[Signal(signal)].loinc] += 1
    out[mapping.BP_PANEL.loinc] += len(bp)
    for _device, signal, _start in hours:
        out[mapping.CODES[Signal(signal)].loinc + "/summary"] += 1
    return +out


def on_server(fhir: FhirTestServer) -> Counter[str]:
    out: Counter[str] = Counter()
    for obs in fhir.all("Observation"):
        code = obs["code"]["coding"][0]["code"]
        out[code + ("/summary" if "valueSampledData" in obs else "")] += 1
    return out


def high_glucose(bundle: dict[str, Any]) -> str | None:
    """A server's business rule: it takes no glucose above 150 mg/dL (422)."""
    for e in bundle["entry"]:
        q = e["resource"].get("valueQuantity", {})
        if q.get("code") == "mg/dL" and q["value"] > 150:
            return "this server takes no glucose above 150 mg/dL"
    return None


def high_glucose_readings(store: Store) -> int:
    return int(
        store.conn.execute(
            "SELECT count(*) FROM readings WHERE signal = 'glucose' AND value > 150"
        ).fetchone()[0]
    )


def identifiers(fhir: FhirTestServer, kind: str = "Observation") -> Counter[str]:
    return Counter(r["identifier"][0]["value"] for r in fhir.all(kind))


# --- mapping ---------------------------------------------------------------------------


def test_every_signal_has_a_fhir_coding() -> None:
    assert set(mapping.CODES) == set(SIGNALS)


def test_every_resource_the_gateway_emits_validates_as_r4() -> None:
    d = Device("cgm-1", "pt-1", DeviceType.CGM)
    r = Reading("pt-1", "cgm-1", Signal.GLUCOSE, T0, 123.4, T0 + 5)
    cuff = Device("bp-1", "pt-1", DeviceType.BP_CUFF)
    sys_ = Reading("pt-1", "bp-1", Signal.SYSTOLIC, T0, 141.0, T0)
    dia = Reading("pt-1", "bp-1", Signal.DIASTOLIC, T0, 88.0, T0)
    wrist = Device("wr-1", "pt-1", DeviceType.WRIST)
    hr = [(T0 + 60 * k, 70.0 + k) for k in range(5)]
    resources = [
        mapping.patient("pt-1", mapping.patient_system("", "gw")),
        mapping.device(d),
        mapping.reading_observation(r, d, "urn:uuid:gw"),
        mapping.blood_pressure(sys_, dia, cuff, "urn:uuid:gw"),
        mapping.blood_pressure(sys_, None, cuff, "urn:uuid:gw"),
        mapping.summary(
            "pt-1", wrist, Signal.HEART_RATE, mapping.window_start(T0), hr, "urn:uuid:gw"
        ),
    ]
    alarm = Alarm(
        7,
        "pt-1",
        "decompensation_risk",
        Priority.MEDIUM,
        False,
        AlarmState.ACTIVE,
        T0,
        T0,
        True,
        "risk 0.41 >= 0.30",
        {"probability": 0.41, "threshold": 0.3},
        ("/x",),
    )
    raised = AlarmEvent(11, 7, T0, T0 + 1, "raised", "gateway", "risk 0.41", AlarmState.ACTIVE)
    acked = AlarmEvent(
        12, 7, T0 + 60, T0 + 61, "acknowledged", "nurse-1", "", AlarmState.ACKNOWLEDGED
    )
    risk = DecompensationRisk(
        "pt-1",
        T0,
        14.0,
        0.41,
        0.3,
        "medium",
        ("weight_slope_7d beyond training",),
        (Contribution("weight_slope_7d", 0.3, 0.0, 0.12),),
        (("weight_slope_7d", 0.3), ("hr_mean_7d", None)),
        ModelProvenance("hf-risk", "1.2.0", "ab" * 32, T0 - 28 * 86400, T0, ("weight",)),
    )
    resources += [
        mapping.alarm_request("gw", alarm, raised, "urn:uuid:gw"),
        mapping.alarm_communication("gw", alarm, raised, "urn:uuid:gw"),
        mapping.alarm_communication("gw", alarm, acked, "urn:uuid:gw"),
        mapping.high_risk_flag("gw", alarm, raised, "urn:uuid:gw"),
        mapping.risk_assessment(risk, ["urn:uuid:1"], "urn:uuid:gw"),
    ]
    for resource in resources:
        VALIDATORS[resource["resourceType"]].model_validate(resource)
    assert resources[-5]["priority"] == "urgent"  # IEC 60601-1-8 medium
    assert resources[-3]["sender"] == {"display": "nurse-1"}
    obs = resources[2]
    assert obs["effectiveDateTime"] == "2026-09-21T14:13:20.000Z"  # the device's own time
    assert obs["valueQuantity"] == {
        "value": 123.4,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    # The identifier depends on what was measured, not on who sends it or when.
    again = mapping.reading_observation(replace(r, received_at=T0 + 999), d, "urn:uuid:other")
    assert again["identifier"] == obs["identifier"]
    absent = resources[4]["component"][1]
    assert "valueQuantity" not in absent
    assert absent["dataAbsentReason"]


# --- against the server ----------------------------------------------------------------


def test_a_home_reaches_the_server_conformant_and_complete(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with Store(db_path) as store:
        sync = drain(store, fhir.url)
        assert upstream.parked(store.conn) == []
        assert consumers.backlog(store.conn, READINGS_CONSUMER) == 0
        assert upstream.pending_windows(store.conn) == 0
    assert sync.accepted > 0
    assert on_server(fhir) == stored_summary(db_path)
    for kind in VALIDATORS:
        for resource in fhir.all(kind):
            VALIDATORS[kind].model_validate(resource)  # what the server holds is R4 too
    assert fhir.count("Patient") == 2
    # Every Observation references its patient and device by the server's ids.
    patients = {p["id"]: p["identifier"][0]["value"] for p in fhir.all("Patient")}
    for obs in fhir.all("Observation"):
        assert obs["subject"]["reference"].removeprefix("Patient/") in patients
        assert obs["device"]["reference"].startswith("Device/")
    # Wrist streams went up as hourly SampledData, not one resource per sample.
    summaries = [o for o in fhir.all("Observation") if "valueSampledData" in o]
    assert summaries
    assert all(len(o["valueSampledData"]["data"].split()) == 60 for o in summaries)


def test_resending_after_a_crash_mid_batch_duplicates_nothing(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with Store(db_path) as store:
        drain(store, fhir.url)
        first = identifiers(fhir)
        # The server accepted everything, then the gateway died before its position moved
        # (and before its windows were cleared): it sends it all again.
        store.conn.execute(
            "UPDATE consumers SET position = 0 WHERE name = ?", (READINGS_CONSUMER.name,)
        )
        drain(store, fhir.url)
    assert identifiers(fhir) == first
    assert max(first.values()) == 1
    assert identifiers(fhir, "Patient") == Counter({"pt-001": 1, "pt-002": 1})


def test_a_patient_without_consent_never_leaves_the_gateway(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived(consent=("pt-002",))
    with Store(db_path) as store:
        drain(store, fhir.url)
    assert identifiers(fhir, "Patient") == Counter({"pt-002": 1})
    assert fhir.all("Observation")
    assert on_server(fhir) == stored_summary(db_path)


def test_an_outage_of_every_kind_ends_with_exactly_what_the_gateway_stored(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with FaultProxy(fhir.url) as proxy, Store(db_path) as store:
        cfg = sync_cfg(proxy.url, batch_max=20)
        client = FhirClient(cfg)
        with FhirSync(store, client, "gw-test", cfg, now=lambda: T0 + 10 * 86400) as sync:
            sync.step()
            for mode in ("reset", "503", "429", "slow", "redirect"):
                proxy.mode = mode
                with pytest.raises(UpstreamError) as caught:
                    steps(sync)
                if mode == "429":
                    assert caught.value.retry_after_s == 1.0
                assert not isinstance(caught.value, UpstreamRefused)  # nothing parked, retried
            proxy.mode = "pass"
            while sync.step():
                pass
        client.close()
        assert upstream.parked(store.conn) == []
    assert on_server(fhir) == stored_summary(db_path)
    assert max(identifiers(fhir).values()) == 1


def test_a_refused_resource_is_parked_with_its_reason_and_the_rest_goes_on(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()

    with FaultProxy(fhir.url) as proxy, Store(db_path) as store:
        proxy.refuse = high_glucose
        drain(store, proxy.url, batch_max=50)
        parked = upstream.parked(store.conn)
        high = high_glucose_readings(store)
        assert high > 0
        assert len(parked) == high
        assert {p.status for p in parked} == {422}
        assert "no glucose above 150" in parked[0].outcome
        assert json.loads(parked[0].resource)["valueQuantity"]["value"] > 150
        # Everything else arrived.
        expected = stored_summary(db_path)
        expected[mapping.CODES[Signal.GLUCOSE].loinc] -= high
        assert on_server(fhir) == expected
        # The server's rule is lifted: retry-parked sends them.
        proxy.refuse = None
        client = FhirClient(sync_cfg(fhir.url))
        with FhirSync(store, client, "gw-test", sync_cfg(fhir.url)) as sync:
            accepted, refused = sync.retry_parked()
        client.close()
        assert (accepted, refused) == (high, 0)
        assert upstream.parked(store.conn) == []
    assert on_server(fhir) == stored_summary(db_path)


def test_a_server_refusing_the_gateways_own_resources_is_an_outage_not_parking(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()

    def no_devices(bundle: dict[str, Any]) -> str | None:
        kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
        return "Device is not allowed here" if "Device" in kinds else None

    with FaultProxy(fhir.url) as proxy, Store(db_path) as store:
        proxy.refuse = no_devices
        client = FhirClient(sync_cfg(proxy.url))
        with (
            FhirSync(store, client, "gw-test", sync_cfg(proxy.url)) as sync,
            pytest.raises(UpstreamError, match="refuses the gateway's Patient/Device"),
        ):
            steps(sync)
        client.close()
        assert upstream.parked(store.conn) == []
        assert consumers.position(store.conn, READINGS_CONSUMER) == 0


def test_bearer_token_is_sent_and_a_wrong_one_is_an_outage(
    db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with FhirTestServer(token="s3cret") as fhir, Store(db_path) as store:
        bad = FhirClient(sync_cfg(fhir.url, token="wrong"))
        with (
            FhirSync(store, bad, "gw-test", sync_cfg(fhir.url)) as sync,
            pytest.raises(UpstreamError, match="401"),
        ):
            steps(sync)
        bad.close()
        drain(store, fhir.url, token="s3cret")
        assert fhir.count("Patient") == 2


def test_sync_trouble_raises_a_technical_alarm_that_clears_when_data_flows(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived(consent=("pt-001",))

    def upstream_alarms(store: Store) -> list[Alarm]:
        listed = alarms.listing(store.conn, None, False)
        return [a for a in listed if a.alarm_type == "upstream_sync_failing"]

    with Store(db_path) as store:
        oldest = store.conn.execute(
            "SELECT min(received_at) FROM readings WHERE patient_id = 'pt-001'"
        ).fetchone()[0]
        stage = AlertStage(store, AlarmEngine(store, lambda: oldest), 900.0, 3600.0)
        stage.tick(oldest + 1800)  # waiting half an hour: nothing yet
        assert upstream_alarms(store) == []
        stage.tick(oldest + 2 * 3600)
        (alarm,) = upstream_alarms(store)
        assert alarm.patient_id == "pt-001"  # pt-002 did not consent: nothing waits for them
        assert alarm.technical
        assert alarm.state is AlarmState.ACTIVE
        assert "care team is not receiving this patient's data since" in alarm.reason
        drain(store, fhir.url)
        stage.tick(oldest + 3 * 3600)
        (alarm,) = upstream_alarms(store)
        assert alarm.state is AlarmState.RESOLVED


@pytest.mark.broker
def test_a_running_gateway_syncs_what_it_ingests_and_reports_it(
    fhir: FhirTestServer,
    broker: PrivateBroker,
    db_path: Path,
    make_config: Callable[..., Config],
) -> None:
    home = cgm_home(1, 2.0, seed=3)
    provision_home(db_path, home)
    with Store(db_path) as store:
        upstream.set_consent(store, "pt-001", True, T0, "test")
    cfg = make_config(broker, sync={"url": fhir.url, "timeout_s": 5.0})
    engineer = api_user(db_path, "engineer", "eng-bo")
    care = api_user(db_path, "care_team", "dr-cy")
    with fed_gateway(broker, cfg, home, SystemClock()) as gw:
        with Store(db_path) as store:
            stored = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        wait_until(lambda: fhir.count("Observation") == stored, 30, "the server to hold it all")
        assert gw.api is not None
        health = httpx.get(f"{gw.api.url}/health", headers=engineer).json()
        assert health["sync"]["backlog"] == 0
        assert health["status"] == "ok"
        assert "patients" not in health["sync"]  # no patient ids in /health
        assert "patients" not in httpx.get(f"{gw.api.url}/sync", headers=engineer).json()
        sync = httpx.get(f"{gw.api.url}/sync", headers=care).json()  # per patient: theirs
        assert sync["patients"][0]["consent"] is True
        assert sync["worker_alive"] is True
        assert "fhir-readings" in {c["name"] for c in health["consumers"]}
        assert gw.status()["sync_worker_alive"] is True


@pytest.mark.broker
def test_a_gateway_whose_upstream_is_down_records_the_failure_and_runs_on(
    broker: PrivateBroker, db_path: Path, make_config: Callable[..., Config]
) -> None:
    home = cgm_home(1, 1.0, seed=3)
    provision_home(db_path, home)
    with Store(db_path) as store:
        upstream.set_consent(store, "pt-001", True, T0, "test")
    with FaultProxy("http://127.0.0.1:9/fhir") as proxy:
        proxy.mode = "503"
        cfg = make_config(broker, sync={"url": proxy.url, "timeout_s": 2.0})
        engineer = api_user(db_path, "engineer", "eng-bo")
        with fed_gateway(broker, cfg, home, SystemClock()) as gw:
            wait_until(lambda: proxy.faults >= 1, 10, "a sync attempt")
            assert gw.api is not None
            url = f"{gw.api.url}/sync"
            wait_until(
                lambda: httpx.get(url, headers=engineer).json()["failures"] >= 1,
                10,
                "the failure recorded",
            )
            status = httpx.get(url, headers=engineer).json()
            assert "503" in status["last_error"]
            assert status["backlog"] > 0
            assert gw.status()["sync_worker_alive"] is True


def test_alarms_and_risks_reach_the_server_as_the_gateway_believed_them(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with Store(db_path) as store:
        drain(store, fhir.url)
        conn = store.conn
        raised = alarms.listing(conn, None, False, 10_000)
        history = {a.id: alarms.events(conn, a.id) for a in raised}
        stored_risks = {
            (r.patient_id, mapping.instant(r.t)): r for _, _, r in risks.after(conn, 0, 10**6)
        }
    assert raised, "the home raised no alarm: the test would prove nothing"
    assert stored_risks, "the home has no risk assessment: the test would prove nothing"
    patients = {p["id"]: p["identifier"][0]["value"] for p in fhir.all("Patient")}

    def patient_of(resource: dict[str, Any]) -> str:
        return patients[resource["subject"]["reference"].removeprefix("Patient/")]

    requests = {r["identifier"][0]["value"]: r for r in fhir.all("CommunicationRequest")}
    assert len(requests) == len(raised)
    for a in raised:
        r = requests[mapping.alarm_url("gw-test", a)]
        final = history[a.id][-1].state.value
        assert r["status"] == {"resolved": "completed", "paused": "on-hold"}.get(final, "active")
        assert r["priority"] == mapping.REQUEST_PRIORITY[a.priority.value]
        assert r["reasonCode"][0]["text"] == a.reason
        if a.patient_id != mapping.GATEWAY_PATIENT:
            assert patient_of(r) == a.patient_id
    # Every audit event, once, as a Communication based on its alarm's request.
    sent = fhir.all("Communication")
    assert len(sent) == sum(len(events) for events in history.values())
    assert {c["basedOn"][0]["identifier"]["value"] for c in sent} <= requests.keys()
    on_server = fhir.all("RiskAssessment")
    assert len(on_server) == len(stored_risks)
    observations = identifiers(fhir)
    for ra in on_server:
        stored = stored_risks[(patient_of(ra), ra["occurrenceDateTime"])]
        assert ra["prediction"][0]["probabilityDecimal"] == round(stored.probability, 4)
        assert ra["method"]["coding"][0]["version"] == stored.provenance.version
        assert ra["basis"], "a risk names the observations it used"
        for ref in ra["basis"]:
            assert observations[ref["identifier"]["value"]] == 1  # and they are on the server


def test_a_high_risk_state_is_a_flag_upstream_while_it_lasts(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    t = T0 + HOURS * 3600

    def risk(at: float, present: bool) -> Condition:
        return Condition(
            "pt-001", "decompensation_risk", at, present, f"risk at {at}", {"probability": 0.4}
        )

    with Store(db_path) as store:
        engine = AlarmEngine(store, lambda: t)
        engine.observe([risk(t, True)])
        drain(store, fhir.url)
        (flag,) = fhir.all("Flag")
        assert flag["status"] == "active"
        assert "end" not in flag["period"]
        engine.observe([risk(t + 3600, False)])
        drain(store, fhir.url)
    (flag,) = fhir.all("Flag")  # the same flag, updated
    assert flag["status"] == "inactive"
    assert flag["period"]["end"] == mapping.instant(t + 3600)


def _rsa_key_pair(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "gateway-key.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public


@pytest.mark.parametrize("proof", ["client_secret", "jwt_assertion"])
def test_oauth2_client_credentials_get_the_token_and_renew_it(
    proof: str, db_path: Path, tmp_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    key_file, public = _rsa_key_pair(tmp_path)
    tokens = TokenServer(
        "t0k3n",
        "gateway-7",
        secret="s3cret" if proof == "client_secret" else None,
        public_key=public if proof == "jwt_assertion" else None,
        expires_in=60,  # renewed at every request (a minute's margin)
    )
    with FhirTestServer(token="t0k3n") as fhir, tokens, Store(db_path) as store:
        options: dict[str, Any] = {"token_url": tokens.url, "client_id": "gateway-7"}
        if proof == "client_secret":
            options["client_secret"] = "s3cret"
        else:
            options.update(private_key_file=str(key_file), key_id="k1", scope="system/*.write")
        drain(store, fhir.url, **options)
        assert tokens.refused == []
        assert tokens.issued > 1  # renewed before it expired
        assert fhir.count("Patient") == 2
        # A wrong proof is refused by the token endpoint: an outage, nothing parked.
        wrong = {**options, "client_secret": "nope"} if proof == "client_secret" else options
        if proof == "jwt_assertion":
            other, _ = _rsa_key_pair(tmp_path / "other")
            wrong = {**options, "private_key_file": str(other)}
        store.conn.execute("UPDATE consumers SET position = 0 WHERE name LIKE 'fhir-%'")
        client = FhirClient(sync_cfg(fhir.url, **wrong))
        with (
            FhirSync(store, client, "gw-test", sync_cfg(fhir.url)) as sync,
            pytest.raises(UpstreamError, match="token endpoint"),
        ):
            steps(sync)
        client.close()
        assert tokens.refused


def test_oauth2_without_a_proof_of_identity_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"client_secret or sync\.private_key_file"):
        FhirClient(sync_cfg("https://fhir.example.org", token_url="https://x/token", client_id="a"))


def test_retention_deletes_only_what_the_upstream_confirmed(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived(consent=("pt-001",))
    later = T0 + 40 * 86400

    def count(store: Store, pid: str) -> int:
        return int(
            store.conn.execute(
                "SELECT count(*) FROM readings WHERE patient_id = ?", (pid,)
            ).fetchone()[0]
        )

    with Store(db_path) as store:
        kept = {pid: count(store, pid) for pid in ("pt-001", "pt-002")}
        cfg = sync_cfg(fhir.url, retain_days=35.0)
        client = FhirClient(cfg)
        with FhirSync(store, client, "gw-test", cfg, now=lambda: later) as sync:
            assert sync.purge() == 0  # nothing confirmed yet: nothing goes
            assert {pid: count(store, pid) for pid in kept} == kept
            while sync.step():
                pass
            cfg_soon = sync_cfg(fhir.url, retain_days=35.0)
            with FhirSync(store, client, "gw-test", cfg_soon, now=lambda: T0 + 86400) as early:
                assert early.purge() == 0  # confirmed, but not 35 days old yet
            purged = sync.purge()
        client.close()
        assert count(store, "pt-001") <= 1  # the newest reading of the store stays
        assert purged == kept["pt-001"] - count(store, "pt-001")
        assert count(store, "pt-002") == kept["pt-002"]  # never sent: never purged
    # The server still holds what was deleted locally.
    assert fhir.count("Observation") > 0


def test_a_retention_shorter_than_the_risk_models_history_is_refused(db_path: Path) -> None:
    with pytest.raises(ConfigError, match="too short"):
        SyncWorker(db_path, sync_cfg("https://fhir.example.org", retain_days=7.0), "gw")


def test_retention_keeps_the_newest_reading_so_ids_never_go_back(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with Store(db_path) as store:
        newest = readings.max_id(store)
        cfg = sync_cfg(fhir.url, retain_days=35.0)
        client = FhirClient(cfg)
        with FhirSync(store, client, "gw-test", cfg, now=lambda: T0 + 40 * 86400) as sync:
            while sync.step():
                pass
            sync.purge()
        client.close()
        assert readings.count(store) == 1
        assert readings.max_id(store) == newest
        with store.transaction() as conn:
            readings.insert(
                conn, [Reading("pt-001", "cgm-001", Signal.GLUCOSE, T0 + 9e5, 99.0, T0)]
            )
        assert readings.max_id(store) == newest + 1  # consumers will read it


def test_consent_given_late_or_withdrawn_sends_nothing_stored_without_it(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived(consent=())  # a day and more stored before anyone consented
    with Store(db_path) as store:
        newest = store.conn.execute("SELECT max(received_at) FROM readings").fetchone()[0]
        upstream.set_consent(store, "pt-001", True, newest + 1, "nurse")
        drain(store, fhir.url)
        assert fhir.count("Observation") == 0  # everything arrived before the consent
        # New data after the consent goes up.
        with store.transaction() as conn:
            readings.insert(
                conn,
                [Reading("pt-001", "cgm-001", Signal.GLUCOSE, newest + 60, 101.0, newest + 61)],
            )
        drain(store, fhir.url)
        assert on_server(fhir) == Counter({mapping.CODES[Signal.GLUCOSE].loinc: 1})
        # A wrist hour marked while consenting, then consent withdrawn: not sent.
        with store.transaction() as conn:
            readings.insert(
                conn,
                [Reading("pt-001", "wr-001", Signal.HEART_RATE, newest + 90, 70.0, newest + 91)],
            )
        drain(store, fhir.url, now=newest - 3600)  # marked, not due yet
        assert upstream.pending_windows(store.conn) == 1
        upstream.set_consent(store, "pt-001", False, newest + 120, "patient")
        drain(store, fhir.url)
        assert upstream.pending_windows(store.conn) == 0
    assert on_server(fhir) == Counter({mapping.CODES[Signal.GLUCOSE].loinc: 1})


def test_a_commit_that_fails_mid_pipeline_loses_nothing(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()

    with FaultProxy(fhir.url) as proxy, Store(db_path) as store:
        proxy.refuse = high_glucose
        # The disk fills up as the first refusal is parked (a real SQLite error).
        store.conn.execute(
            "CREATE TRIGGER full BEFORE INSERT ON sync_parked BEGIN"
            " SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        cfg = sync_cfg(proxy.url, batch_max=20)
        client = FhirClient(cfg)
        with FhirSync(store, client, "gw-test", cfg, now=lambda: T0 + 10 * 86400) as sync:
            with pytest.raises(StoreError):
                drive(sync)
            store.conn.execute("DROP TRIGGER full")
            while sync.step():
                pass
        client.close()
        parked = upstream.parked(store.conn, 10_000)
        high = high_glucose_readings(store)
        assert len(parked) == high > 0  # every refusal is parked, none skipped
    expected = stored_summary(db_path)
    expected[mapping.CODES[Signal.GLUCOSE].loinc] -= high
    assert on_server(fhir) == expected  # and everything else arrived


def test_an_unprovisioned_wrist_keeps_its_hours_and_its_type(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()
    with Store(db_path) as store:
        devices.unprovision(store, "wr-001")  # before any of it was sent
        drain(store, fhir.url)
    assert on_server(fhir) == stored_summary(db_path)  # still hourly SampledData
    wrist = [d for d in fhir.all("Device") if d["identifier"][0]["value"] == "wr-001"]
    assert [d["type"]["text"] for d in wrist] == ["wrist"]


def test_a_parked_update_is_superseded_by_a_newer_accepted_one(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived()

    def no_open_requests(bundle: dict[str, Any]) -> str | None:
        for e in bundle["entry"]:
            r = e["resource"]
            if r["resourceType"] == "CommunicationRequest" and r["status"] == "active":
                return "open requests go through the triage desk"
        return None

    t = T0 + HOURS * 3600
    with FaultProxy(fhir.url) as proxy, Store(db_path) as store:
        engine = AlarmEngine(store, lambda: t)
        engine.observe([Condition("pt-001", "decompensation_risk", t, True, "risk high", {})])
        alarm = alarms.open_alarm(store.conn, "pt-001", "decompensation_risk")
        assert alarm is not None
        mine = f"{mapping.URI}|{mapping.alarm_url('gw-test', alarm)}"
        proxy.refuse = no_open_requests
        drain(store, proxy.url)
        assert mine in {p.identifier for p in upstream.parked(store.conn)}
        engine.observe([Condition("pt-001", "decompensation_risk", t + 60, False, "clear", {})])
        drain(store, proxy.url)
        # The resolved state went up: the parked open one is superseded, not resent.
        assert mine not in {p.identifier for p in upstream.parked(store.conn)}
    (request,) = [
        r
        for r in fhir.all("CommunicationRequest")
        if r["category"][0]["coding"][0]["code"] == "decompensation_risk"
    ]
    assert request["status"] == "completed"


def test_retention_keeps_the_readings_of_parked_resources(
    fhir: FhirTestServer, db_path: Path, lived: Callable[..., None]
) -> None:
    lived(consent=("pt-001",))

    def no_weight(bundle: dict[str, Any]) -> str | None:
        for e in bundle["entry"]:
            if e["resource"].get("valueQuantity", {}).get("code") == "kg":
                return "no weights here"
        return None

    with FaultProxy(fhir.url) as proxy, Store(db_path) as store:
        proxy.refuse = no_weight
        cfg = sync_cfg(proxy.url, retain_days=35.0)
        client = FhirClient(cfg)
        with FhirSync(store, client, "gw-test", cfg, now=lambda: T0 + 40 * 86400) as sync:
            while sync.step():
                pass
            sync.purge()
        client.close()
        (parked,) = upstream.parked(store.conn)
        kept = store.conn.execute("SELECT signal FROM readings WHERE patient_id = 'pt-001'")
        assert "weight" in {r[0] for r in kept}  # the only copy of a refused reading stays
        assert parked.resource_type == "Observation"
