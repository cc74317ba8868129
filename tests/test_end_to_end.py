"""The thin vertical slice, for real: firmware_sim publishes over a private mosquitto ->
the gateway ingests and stores -> the Kalman twin updates -> the HTTP API returns it."""

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge_twin.broker import PrivateBroker, free_port
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.domain import ReadingFlag
from edge_twin.gateway import Gateway
from edge_twin.store import Store, readings
from firmware_sim import wire
from firmware_sim.messages import Message
from firmware_sim.publisher import HomePublisher
from firmware_sim.transport import TransportFaults
from tests.conftest import T0, api_user, cgm_home, fed_gateway, provision_home, wait_until

pytestmark = pytest.mark.broker


def test_simulated_cgm_reaches_the_state_api(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(broker)
    home = cgm_home(patients=2, hours=3, seed=11)
    provision_home(cfg.store.path, home)
    care = api_user(cfg.store.path)
    with fed_gateway(broker, cfg, home, ManualClock(home.end)) as gw:
        assert gw.api is not None
        patient = home.patients[0]
        url = gw.api.url
        state = httpx.get(f"{url}/patients/{patient.patient_id}/state", headers=care).json()
        health = httpx.get(f"{url}/health", headers=care).json()
        page = httpx.get(f"{url}/", headers=care).text
        missing = httpx.get(f"{url}/patients/nobody/state", headers=care)

    glucose = state["signals"]["glucose"]
    truth_now = float(patient.glucose_truth[-1])
    assert glucose["provenance"]["n_measurements"] == len(patient.cgm)
    assert glucose["provenance"]["device_ids"] == ["cgm-001"]
    assert abs(glucose["mean"] - truth_now) < 3 * glucose["sd"] + 15
    lo, hi = glucose["interval95"]
    assert lo < glucose["mean"] < hi
    assert {f["horizon_min"] for f in glucose["forecasts"]} >= {30.0, 60.0}
    assert 0.0 <= glucose["risks"][0]["probability"] <= 1.0
    assert glucose["stale"] is False
    assert health["readings"] == sum(len(p.cgm) for p in home.patients)
    assert health["ingest"]["rejected"] == 0
    assert 'data-patient="pt-001"' in page
    assert 'data-signal="glucose"' in page
    assert missing.status_code == 404


def test_messages_sent_while_the_gateway_is_down_arrive_after_restart(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(broker, api={"port": 0})
    home = cgm_home(patients=1, hours=4, seed=3)
    provision_home(cfg.store.path, home)
    clock = ManualClock(home.end)
    senml = [m for m in home.messages() if m.topic.endswith("/senml")]
    first, rest = senml[:10], senml[10:]
    with HomePublisher(broker.host, broker.port, home.devices) as pub:
        with Gateway(cfg, clock, serve_api=False) as gw:
            pub.publish(first)
            assert gw.ingest is not None
            wait_until(lambda: gw.ingest.stats.messages == len(first), what="first part")
        # The gateway is down: its persistent session makes the broker queue these.
        pub.publish(rest)
        with Gateway(cfg, clock, serve_api=False) as gw:
            assert gw.ingest is not None
            wait_until(lambda: gw.ingest.stats.messages == len(rest), what="queued part")
    with Store(cfg.store.path) as store:
        assert readings.count(store) == len(senml)


def test_bad_messages_through_the_broker_land_in_quarantine(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(broker)
    home = cgm_home(patients=1, hours=1, seed=5)
    provision_home(cfg.store.path, home)
    ghost = home.devices[0].__class__("ghost-1", "pt-001", "cgm")
    bad = [
        Message(T0, "cgm-001", wire.readings_topic("cgm-001"), b"{not json"),
        Message(
            T0,
            "cgm-001",
            wire.readings_topic("cgm-001"),
            wire.senml_pack("cgm-001", [("glucose", "mg/dL", T0, 900.0, 1)]),
        ),
    ]
    with Gateway(cfg, ManualClock(home.end)) as gw:
        with HomePublisher(broker.host, broker.port, home.devices) as pub:
            pub.publish(bad)
        with HomePublisher(broker.host, broker.port, [ghost]) as intruder:
            intruder.publish(
                [
                    Message(
                        T0,
                        "ghost-1",
                        wire.readings_topic("ghost-1"),
                        wire.senml_pack("ghost-1", [("glucose", "mg/dL", T0, 100.0, 1)]),
                    )
                ]
            )
        assert gw.ingest is not None
        assert gw.api is not None
        wait_until(lambda: gw.ingest.stats.rejected == 3, what="3 rejections")
        engineer = api_user(cfg.store.path, "engineer", "eng-bo")
        listed = httpx.get(f"{gw.api.url}/quarantine", headers=engineer).json()
    assert sorted(q["reason"] for q in listed) == ["malformed", "out_of_range", "unknown_device"]
    assert {q["topic"] for q in listed} == {
        wire.readings_topic("cgm-001"),
        wire.readings_topic("ghost-1"),
    }


def test_a_faulty_home_ends_as_one_row_per_reading(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    """Duplicates, reordering, backfill bursts and corrupt payloads from the simulator."""
    cfg = make_config(broker)
    faults = TransportFaults(p_duplicate=0.2, p_reorder=0.2, offline_per_day=4.0, p_malformed=0.05)
    home = cgm_home(patients=2, hours=24, seed=17, faults=faults)
    provision_home(cfg.store.path, home)
    messages = home.messages()
    intact = {
        (m.device_id, json.loads(m.payload)[0]["bt"])
        for m in messages
        if m.topic.endswith("/senml") and _is_reading(m.payload)
    }
    corrupt = [m for m in messages if m.topic.endswith("/senml") and not _is_reading(m.payload)]
    clock = ManualClock(home.end)
    with fed_gateway(broker, cfg, home, clock, messages, serve_api=False) as gw:
        assert gw.ingest is not None
        stats = gw.ingest.stats.snapshot()
    with Store(cfg.store.path) as store:
        rows = readings.after(store, 0, 100_000)
    assert {(r.device_id, r.t) for r in rows} == intact
    assert len(rows) == len(intact)  # one row per reading, duplicates and all
    assert stats["readings_duplicate"] > 0
    assert sum(stats["rejected_by_reason"].values()) == len(corrupt) > 0  # type: ignore[attr-defined]
    assert any(ReadingFlag.LATE in r.flags for r in rows)
    assert any(ReadingFlag.BACKFILLED in r.flags for r in rows)


def _is_reading(payload: bytes) -> bool:
    try:
        return isinstance(json.loads(payload)[0]["v"], float | int)
    except (ValueError, UnicodeDecodeError, KeyError, IndexError):
        return False


def test_a_backlog_drains_in_bounded_batches(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    """Back after a day offline: the queue drains in commits of at most batch_max
    messages, so the gateway's memory does not grow with the backlog."""
    cfg = make_config(broker, ingest={"batch_max": 64})
    home = cgm_home(patients=4, hours=24, seed=23)
    provision_home(cfg.store.path, home)
    messages = home.messages()
    with Gateway(cfg, ManualClock(home.end), serve_api=False):
        pass  # the session exists; the gateway goes away
    with HomePublisher(broker.host, broker.port, home.devices) as pub:
        pub.publish(messages)
    samples = sum(len(p.cgm) for p in home.patients)
    with Gateway(cfg, ManualClock(home.end), serve_api=False) as gw:
        assert gw.ingest is not None
        wait_until(lambda: gw.ingest.stats.readings_new == samples, 30, "drain")
        stats = gw.ingest.stats.snapshot()
        assert gw.pipeline is not None
        wait_until(lambda: not gw.pipeline.estimator.lag(), 30, "twin catch-up")
    assert stats["largest_batch"] == 64
    assert stats["batches"] >= len(messages) // 64
    with Store(cfg.store.path) as store:
        assert readings.count(store) == samples


def test_the_gateway_serves_its_store_while_the_broker_is_away_then_ingests(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    # A field engineer's worst morning: the broker is down when the gateway starts.
    port = free_port()
    cfg = make_config(mqtt={"host": "127.0.0.1", "port": port, "client_id": "gw-degraded"})
    home = cgm_home(patients=1, hours=1, seed=5)
    provision_home(cfg.store.path, home)
    engineer = api_user(cfg.store.path, "engineer", "eng-bo")
    care = api_user(cfg.store.path)
    with Gateway(cfg, ManualClock(home.end), degrade=True) as gw:
        assert gw.api is not None
        health = httpx.get(f"{gw.api.url}/health", headers=engineer).json()
        assert health["status"] == "degraded"
        assert f"not connected to the broker at 127.0.0.1:{port}" in health["problems"][0]
        page = httpx.get(f"{gw.api.url}/", headers=care).text
        assert "Data may not be current" in page  # the care team is told too
        assert "not connected to its MQTT broker" in page
        with PrivateBroker(data_dir=tmp_path / "mosquitto", port=port) as broker:
            assert gw.ingest is not None
            wait_until(lambda: gw.ingest.connected, 30, "ingest connected once the broker is up")
            with HomePublisher(broker.host, broker.port, home.devices) as pub:
                pub.publish(home.messages())
            expected = len(home.patients[0].cgm)
            wait_until(lambda: gw.ingest.stats.readings_new == expected, 20, "the readings")
            health = httpx.get(f"{gw.api.url}/health", headers=engineer).json()
            assert health["status"] == "ok"
            assert "Data may not be current" not in httpx.get(f"{gw.api.url}/", headers=care).text
