"""The Nightscout upload endpoint end to end, on a real gateway (broker, pipeline, API):
requests shaped exactly as xDrip+ and AndroidAPS build them (their sources: see
docs/devices.md) reach the store and the twin; a wrong secret stores nothing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.domain import Signal
from edge_twin.errors import ProvisioningError
from edge_twin.gateway import Gateway
from edge_twin.ingest import nightscout
from edge_twin.provisioning import issue_uploader
from edge_twin.store import Store, devices, quarantine, readings, treatments, uploaders, users
from tests.conftest import T0, api_user, serving_api, wait_until

pytestmark = pytest.mark.broker

PHONE = "phone-001"


def xdrip_time(t: float) -> str:
    """xDrip+'s dateString: yyyy-MM-dd'T'HH:mm:ss.SSSZ in the phone's zone (+0200 here)."""
    local = datetime.fromtimestamp(t, timezone(timedelta(hours=2)))
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}+0200"


def xdrip_sgv(t: float, sgv: int) -> dict[str, object]:
    """NightscoutUploader.populateV1APIBGEntry, field for field."""
    return {
        "device": "xDrip-DexcomG6",
        "date": int(t * 1000),
        "dateString": xdrip_time(t),
        "sgv": sgv,
        "delta": -2.345,
        "direction": "Flat",
        "type": "sgv",
        "filtered": sgv * 1000.0,
        "unfiltered": sgv * 1000.0,
        "rssi": 100,
        "noise": 1,
        "sysTime": xdrip_time(t),
    }


def aaps_time(t: float) -> str:
    """AndroidAPS's created_at: yyyy-MM-dd'T'HH:mm:ss.SSS'Z' in UTC."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Home:
    gateway: Gateway
    clock: ManualClock
    url: str
    secret: str
    cfg: Config

    def headers(self, secret: str | None = None) -> dict[str, str]:
        return {"api-secret": uploaders.api_secret(secret or self.secret)}


@contextmanager
def phone_home(broker: PrivateBroker, make_config: Callable[..., Config]) -> Iterator[Home]:
    cfg = make_config(broker)
    with Store(cfg.store.path) as store:
        devices.provision(store, PHONE, "pt-001", "cgm", T0 - 86400)
        secret = issue_uploader(store, cfg, PHONE, T0 - 86400, "test").secret
    clock = ManualClock(T0)
    with Gateway(cfg, clock) as gw:
        assert gw.api is not None
        yield Home(gw, clock, gw.api.url, secret, cfg)


def counts(cfg: Config) -> tuple[int, int, int]:
    with Store(cfg.store.path) as store:
        n = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        q = store.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        x = store.conn.execute("SELECT count(*) FROM treatments").fetchone()[0]
    return int(n), int(q), int(x)


def test_an_xdrip_upload_reaches_the_twin_once_and_its_extras_are_kept_aside(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    times = [T0 + 300.0 * i for i in range(12)]
    values = [140, 136, 131, 127, 122, 118, 113, 109, 104, 100, 96, 92]
    body = [xdrip_sgv(t, v) for t, v in zip(times, values, strict=True)]
    body.append(  # a finger-stick and a calibration ride in the same array
        {
            "device": "xDrip-DexcomG6",
            "type": "mbg",
            "date": int(times[5] * 1000),
            "dateString": xdrip_time(times[5]),
            "mbg": 118,
            "sysTime": xdrip_time(times[5]),
        }
    )
    body.append(
        {
            "device": "xDrip-DexcomG6",
            "type": "cal",
            "date": int(times[5] * 1000),
            "dateString": xdrip_time(times[5]),
            "slope": 887.3,
            "intercept": 30123.4,
            "scale": 1,
            "sysTime": xdrip_time(times[5]),
        }
    )
    with phone_home(broker, make_config) as home:
        home.clock.set(times[-1] + 30.0)
        with httpx.Client(base_url=home.url, headers=home.headers()) as phone:
            status = phone.get("/api/v1/status.json")
            assert status.status_code == 200
            assert status.json()["apiEnabled"] is True
            r = phone.post("/api/v1/entries", json=body)
            assert r.status_code == 200, r.text
            answered = r.json()
            # One item per record posted (Loop checks the count); refused ones say why.
            assert len(answered) == len(body)
            assert all(len(a["_id"]) == 24 for a in answered[:12])
            assert [a["edge_twin_rejected"].split(":")[0] for a in answered[12:]] == [
                "unknown_measurement",
                "unknown_measurement",
            ]
            assert r.headers["X-Edge-Twin-Rejected"] == "2"
            # Sent again (no answer reached the phone, say): stored once.
            again = phone.post("/api/v1/entries", json=body)
            assert again.status_code == 200
            battery = phone.post(
                "/api/v1/devicestatus",
                json={"device": "Google Pixel 7", "uploader": {"battery": 87, "type": "PHONE"}},
            )
            assert battery.status_code == 200
        with Store(home.cfg.store.path) as store:
            stored = readings.series(store, [PHONE], Signal.GLUCOSE, 0, 2e9)
            assert [(r.t, r.value) for r in stored] == list(zip(times, values, strict=True))
            assert {q.reason for q in quarantine.recent(store)} == {"unknown_measurement"}
            assert quarantine.count(store, "unknown_measurement") == 4  # twice 2
            device = devices.statuses(store).get(PHONE)
        assert device is not None
        assert device.battery_pct == 87
        care = api_user(home.cfg.store.path)
        wait_until(
            lambda: (
                "glucose"
                in httpx.get(f"{home.url}/patients/pt-001/state", headers=care).json()["signals"]
            ),
            what="the twin's glucose estimate",
        )
        state = httpx.get(f"{home.url}/patients/pt-001/state", headers=care).json()
        glucose = state["signals"]["glucose"]
        assert 80 < glucose["mean"] < 105  # falling through 92 mg/dL
        assert glucose["provenance"]["device_ids"] == [PHONE]


def test_treatments_as_aaps_and_xdrip_send_them_are_stored_once_and_plotted(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    t = T0 + 600.0
    aaps_bolus = {
        "eventType": "Meal Bolus",
        "insulin": 2.5,
        "created_at": aaps_time(t),
        "date": int(t * 1000),
        "type": "NORMAL",
        "notes": "",
        "isValid": True,
        "isSMB": False,
        "pumpId": 4102,
        "pumpType": "ACCU_CHEK_INSIGHT_BLUETOOTH",
        "pumpSerial": "33013206",
    }
    aaps_carbs = {
        "eventType": "Carb Correction",
        "carbs": 10.0,
        "notes": "",
        "created_at": aaps_time(t + 60),
        "isValid": True,
        "date": int((t + 60) * 1000),
    }
    aaps_sgv = {
        "device": "AAPS-DexcomG6",
        "date": int(t * 1000),
        "dateString": aaps_time(t),
        "isValid": True,
        "sgv": 123.0,
        "direction": "Flat",
        "type": "sgv",
    }
    xdrip_meal = {  # NightscoutUploader: PUT, one object, _id from the uuid
        "timestamp": int((t + 120) * 1000),
        "eventType": "<none>",
        "enteredBy": "xdrip",
        "uuid": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "carbs": 20,
        "insulin": 2.5,
        "created_at": datetime.fromtimestamp(t + 120, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sysTime": xdrip_time(t + 120),
        "_id": "3f2504e04f8911d39a0c0305",
    }
    with phone_home(broker, make_config) as home:
        home.clock.set(t + 300)
        with httpx.Client(base_url=home.url, headers=home.headers()) as phone:
            assert phone.post("/api/v1/entries", json=[aaps_sgv]).status_code == 200
            r = phone.post("/api/v1/treatments", json=[aaps_bolus, aaps_carbs])
            assert r.status_code == 200, r.text
            assert all("_id" in a for a in r.json())
            assert phone.put("/api/v1/treatments", json=xdrip_meal).status_code == 200
            assert phone.put("/api/v1/treatments", json=xdrip_meal).status_code == 200  # again
        with Store(home.cfg.store.path) as store:
            kept = treatments.between(store, "pt-001", 0, 2e9)
        assert [(x.t, x.kind.value, x.carbs_g, x.insulin_u, x.event_type) for x in kept] == [
            (t, "insulin", None, 2.5, "Meal Bolus"),
            (t + 60, "carbs", 10.0, None, "Carb Correction"),
            (t + 120, "carbs_insulin", 20.0, 2.5, "<none>"),
        ]
        assert kept[2].source_id == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
        care = api_user(home.cfg.store.path)
        page = httpx.get(f"{home.url}/patients/pt-001/view", headers=care).text
        assert page.count('data-marker="carbs"') == 2
        assert page.count('data-marker="insulin"') == 2
        assert "10 g" in page
        assert "2.5 U" in page


def test_a_wrong_secret_gets_401_and_stores_nothing(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    body = [xdrip_sgv(T0, 100)]
    with phone_home(broker, make_config) as home:
        before = counts(home.cfg)
        for headers in (home.headers("not-the-secret"), {}, {"api-secret": home.secret}):
            # (the secret itself is not accepted: Nightscout clients send its SHA-1)
            r = httpx.post(f"{home.url}/api/v1/entries", json=body, headers=headers)
            assert r.status_code == 401
            r = httpx.put(f"{home.url}/api/v1/treatments", json={}, headers=headers)
            assert r.status_code == 401
        # A user's login is not an uploader's.
        care = api_user(home.cfg.store.path)
        assert httpx.post(f"{home.url}/api/v1/entries", json=body, headers=care).status_code == 403
        # A revoked phone is refused from then on.
        with Store(home.cfg.store.path) as store:
            assert uploaders.revoke(store, PHONE, T0)
        r = httpx.post(f"{home.url}/api/v1/entries", json=body, headers=home.headers())
        assert r.status_code == 401
        assert counts(home.cfg) == before


def test_bodies_gzip_oversized_and_broken(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with phone_home(broker, make_config) as home:
        limit = home.cfg.ingest.max_upload_bytes
        home.clock.set(T0 + 60)
        with httpx.Client(base_url=home.url, headers=home.headers()) as phone:
            packed = gzip.compress(json.dumps([xdrip_sgv(T0, 111)]).encode())
            r = phone.post(
                "/api/v1/entries",
                content=packed,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
            assert r.status_code == 200, r.text
            before = counts(home.cfg)
            big = json.dumps([xdrip_sgv(T0 + i, 100) for i in range(limit // 200)]).encode()
            assert len(big) > limit
            assert phone.post("/api/v1/entries", content=big).status_code == 413
            bomb = gzip.compress(b"[" + b" " * (limit + 10) + b"]")
            r = phone.post("/api/v1/entries", content=bomb, headers={"Content-Encoding": "gzip"})
            assert r.status_code == 413
            assert counts(home.cfg) == before  # refused whole: the phone keeps them
            broken = phone.post("/api/v1/entries", content=b"{not json")
            assert broken.status_code == 400
            assert "malformed" in broken.json()["message"]
            sensor_error = phone.post("/api/v1/entries", json=[xdrip_sgv(T0 + 5, 10)])
            assert sensor_error.status_code == 200
            assert sensor_error.json()[0]["edge_twin_rejected"].startswith("bad_value")
        with Store(home.cfg.store.path) as store:
            reasons = quarantine.counts_by_reason(store)
        assert reasons == {"malformed": 1, "bad_value": 1}
        assert counts(home.cfg)[0] == before[0]


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"type": "sgv", "sgv": 100}, "bad_time"),
        ({"type": "sgv", "sgv": 100, "dateString": "2026-09-21T14:13:20"}, "bad_time"),
        ({"type": "sgv", "sgv": "100", "date": T0 * 1000}, "bad_value"),
        ({"type": "sgv", "sgv": 38, "date": T0 * 1000}, "bad_value"),
        ({"sgv": 100, "date": True}, "bad_time"),
        ({"type": "mbg", "mbg": 100, "date": T0 * 1000}, "unknown_measurement"),
        ("sgv", "malformed"),
    ],
)
def test_entry_rejections_have_one_reason_each(doc: object, reason: str) -> None:
    parsed = nightscout.entries(json.dumps([doc]).encode(), 2**28)
    assert [r.reason.value for r in parsed.rejections] == [reason]
    assert parsed.measurements == []


def test_an_sgv_of_39_is_low_not_an_error_and_date_wins_over_text() -> None:
    doc = {"type": "sgv", "sgv": 39, "date": T0 * 1000, "dateString": "2020-01-01T00:00:00Z"}
    parsed = nightscout.entries(json.dumps(doc).encode(), 2**28)
    assert [(m.t, m.value) for _, m in parsed.measurements] == [(T0, 39.0)]


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"eventType": "Meal Bolus", "insulin": 2}, "bad_time"),
        ({"created_at": "2026-09-21T14:13:20Z", "carbs": -5}, "out_of_range"),
        ({"created_at": "2026-09-21T14:13:20Z", "insulin": 250}, "out_of_range"),
        ({"created_at": "2026-09-21T14:13:20Z", "carbs": "lots"}, "bad_value"),
    ],
)
def test_treatment_rejections(doc: object, reason: str) -> None:
    parsed = nightscout.treatments(json.dumps(doc).encode(), 2**28)
    assert [r.reason.value for r in parsed.rejections] == [reason]


def test_ns_channels_over_mqtt_are_refused_and_only_a_cgm_phone_uploads(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with phone_home(broker, make_config) as home:
        home.clock.set(T0 + 60)
        # A device's broker credential cannot post treatments on the API's channel.
        sender = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        try:
            topic = f"{home.cfg.mqtt.topic_prefix}/dev/{PHONE}/ns-treatments"
            bolus = {"eventType": "Correction Bolus", "insulin": 40, "created_at": aaps_time(T0)}
            sender.publish(topic, json.dumps([bolus]), qos=1).wait_for_publish(5)
        finally:
            sender.disconnect()
            sender.loop_stop()
        with Store(home.cfg.store.path) as store:
            wait_until(lambda: quarantine.count(store, "wrong_topic") == 1, what="quarantine")
            assert treatments.between(store, "pt-001", 0, 2e9) == []
            devices.provision(store, "scale-9", "pt-001", "scale", T0)
            with pytest.raises(ProvisioningError, match="not provisioned as a cgm"):
                issue_uploader(store, home.cfg, "scale-9", T0, "test")


def test_an_edited_treatment_is_updated_and_uploads_are_in_the_access_log(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    meal = {"eventType": "Meal Bolus", "carbs": 40, "created_at": aaps_time(T0)}
    with phone_home(broker, make_config) as home:
        home.clock.set(T0 + 60)
        with httpx.Client(base_url=home.url, headers=home.headers()) as phone:
            assert phone.post("/api/v1/treatments", json=[meal]).status_code == 200
            assert phone.post("/api/v1/treatments", json=[{**meal, "carbs": 55}]).status_code == 200
        wrong = httpx.post(f"{home.url}/api/v1/entries", json=[], headers=home.headers("nope"))
        assert wrong.status_code == 401
        with Store(home.cfg.store.path) as store:
            (kept,) = treatments.between(store, "pt-001", 0, 2e9)
            log = [
                (a.username, a.role, a.route, a.patient_id, a.outcome)
                for a in users.access_log(store, "pt-001")
            ]
            refused = store.conn.execute(
                "SELECT username, role, outcome FROM access_log WHERE patient_id IS NULL"
            ).fetchall()
        assert kept.carbs_g == 55
        assert log.count((PHONE, "uploader", "/api/v1/treatments", "pt-001", "allowed")) == 2
        assert refused == [("?", "uploader", "refused")]


def test_junk_is_refused_whole_not_once_per_record(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    with phone_home(broker, make_config) as home:
        with httpx.Client(base_url=home.url, headers=home.headers()) as phone:
            r = phone.post("/api/v1/entries", json=[1] * 5000)
            assert r.status_code == 400
            assert "5000 records refused" in r.json()["message"]

            def chunks() -> Iterator[bytes]:  # no Content-Length: the streaming bound
                yield b"["
                for _ in range(home.cfg.ingest.max_upload_bytes // 1000 + 1):
                    yield b" " * 1000
                yield b"]"

            assert phone.post("/api/v1/entries", content=chunks()).status_code == 413
        with Store(home.cfg.store.path) as store:
            assert quarantine.counts_by_reason(store) == {"malformed": 1}


def test_uploads_are_stored_while_the_broker_is_away(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(broker)
    with Store(cfg.store.path) as store:
        devices.provision(store, PHONE, "pt-001", "cgm", T0)
        secret = issue_uploader(store, cfg, PHONE, T0, "test").secret
    broker.stop()
    clock = ManualClock(T0 + 60)
    with Gateway(cfg, clock, degrade=True) as gw:
        assert gw.api is not None
        headers = {"api-secret": uploaders.api_secret(secret)}
        r = httpx.post(f"{gw.api.url}/api/v1/entries", json=[xdrip_sgv(T0, 101)], headers=headers)
        assert r.status_code == 200, r.text
    assert [r.value for r in stored_glucose(cfg)] == [101.0]


def test_an_api_served_without_ingest_refuses_uploads_with_503(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config()
    with Store(cfg.store.path) as store:
        devices.provision(store, PHONE, "pt-001", "cgm", T0)
        secret = issue_uploader(store, cfg, PHONE, T0, "test").secret
    with serving_api(cfg) as url:
        headers = {"api-secret": uploaders.api_secret(secret)}
        r = httpx.post(f"{url}/api/v1/entries", json=[xdrip_sgv(T0, 101)], headers=headers)
    assert r.status_code == 503
    assert stored_glucose(cfg) == []


def stored_glucose(cfg: Config) -> list[readings.Reading]:
    with Store(cfg.store.path) as store:
        return readings.series(store, [PHONE], Signal.GLUCOSE, 0, 2e9)
