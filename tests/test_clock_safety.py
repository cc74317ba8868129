"""A gateway without a real-time clock: booted with its clock behind, it does not reject
the devices' readings as "from the future"; it holds them, says so (``/health``, a
technical alarm), and stores them once its clock is synchronised. And any quarantined
message can be decoded again once its cause is fixed (``edge-twin reprocess``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ClockTrust, ManualClock
from edge_twin.config import Config
from edge_twin.domain import DeviceType, ReadingFlag, RejectReason
from edge_twin.gateway import Gateway
from edge_twin.ingest import IngestWriter, RawMessage
from edge_twin.store import Store, alarms, devices, quarantine, readings
from firmware_sim import wire
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, api_user, cgm_home, provision_home, wait_until
from tests.test_cli import cli

HELD = RejectReason.CLOCK_UNSYNCHRONISED.value


class Ntp:
    """The kernel's NTP state, as the test decides it."""

    def __init__(self) -> None:
        self.synchronised = False

    def trust(self) -> ClockTrust:
        return ClockTrust(lambda: self.synchronised, recheck_s=0.0)


@pytest.mark.broker
def test_a_gateway_booted_an_hour_behind_loses_no_reading(
    broker: PrivateBroker, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(broker)
    home = cgm_home(patients=1, hours=3, seed=5)
    provision_home(cfg.store.path, home)
    care = api_user(cfg.store.path)
    senml = [m for m in home.messages() if m.topic.endswith("/senml")]
    taken = sum(len(p.cgm) for p in home.patients)
    clock = ManualClock(home.end - 3600.0)  # booted from the last saved time: 1 h behind
    ntp = Ntp()
    with (
        Gateway(cfg, clock, clock_trust=ntp.trust()) as gw,
        HomePublisher(broker.host, broker.port, home.devices) as pub,
    ):
        assert gw.ingest is not None
        assert gw.api is not None
        assert gw.store is not None
        store = gw.store
        pub.publish(senml)
        wait_until(lambda: gw.ingest.stats.messages >= len(senml), what="ingest")
        held = quarantine.count(store, HELD)
        # Everything taken within the last hour looks ahead of the clock (beyond 300 s).
        assert held == sum(1 for p in home.patients for t, *_ in p.cgm if t > clock.now() + 300)
        assert held >= 10
        assert quarantine.count(store, RejectReason.FUTURE_TIME.value) == 0
        clock.advance(10.0)  # the next technical check
        wait_until(
            lambda: (
                alarms.open_alarm(store.conn, "gateway", "gateway_clock_unsynchronised") is not None
            ),
            what="technical alarm",
        )
        health = httpx.get(f"{gw.api.url}/health", headers=care).json()
        assert health["status"] == "degraded"
        assert any("clock is not synchronised" in p for p in health["problems"])
        assert health["quarantined"][HELD] == held
        assert readings.count(store) == taken - held

        # NTP answers: the clock jumps forward and is trusted.
        clock.set(home.end + 60.0)
        ntp.synchronised = True
        wait_until(lambda: readings.count(store) == taken, what="held readings stored")
        wait_until(lambda: quarantine.count(store, HELD) == 0, what="quarantine emptied")
        clock.advance(10.0)
        wait_until(
            lambda: (
                alarms.open_alarm(store.conn, "gateway", "gateway_clock_unsynchronised") is None
            ),
            what="technical alarm cleared",
        )
        health = httpx.get(f"{gw.api.url}/health", headers=care).json()
        stored = readings.for_patient(store, home.patients[0].patient_id, None, 10_000)
    assert health["status"] == "ok", health["problems"]
    assert sum(health["quarantined"].values()) == 0
    # Released as arriving now: old readings are backfilled (no alarm on old data), the
    # last ten minutes' are live.
    released = [r for r in stored if r.t > home.end - 3600.0 + 300.0]
    assert len(released) == held
    recent = [r for r in released if r.t > home.end + 60.0 - cfg.ingest.backfill_after_s]
    assert recent
    assert all(not r.flags & ReadingFlag.BACKFILLED for r in recent)
    assert all(r.flags & ReadingFlag.BACKFILLED for r in released if r not in recent)


def _pack(device_id: str, records: list[tuple[float, float]]) -> bytes:
    return wire.senml_pack(device_id, [("glucose", "mg/dL", t, v, None) for t, v in records])


def _writer(cfg: Config, store: Store, synchronised: bool) -> IngestWriter:
    return IngestWriter(store, cfg, ClockTrust(lambda: synchronised, recheck_s=0.0))


def test_held_readings_survive_a_restart_and_wait_for_the_clock(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config()
    topic = wire.readings_topic("cgm-1")
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-1", "pt-1", DeviceType.CGM, T0)
        writer = _writer(cfg, store, synchronised=False)
        ahead = _pack("cgm-1", [(T0 + 3600.0, 120.0), (T0 + 3900.0, 125.0)])
        result = writer.commit([RawMessage(topic, ahead, T0)])
        assert [r.reason for r in result.rejections] == [RejectReason.CLOCK_UNSYNCHRONISED] * 2
        assert writer.holding
        assert writer.release_held(T0 + 10.0) is None  # the clock is still not trusted

    with Store(cfg.store.path) as store:  # a restart, the clock now synchronised
        writer = _writer(cfg, store, synchronised=True)
        assert writer.holding
        released = writer.release_held(T0 + 4000.0)
        assert released is not None
        assert released.readings_new == 2
        assert not writer.holding
        assert readings.count(store) == 2
        assert quarantine.count(store, HELD) == 0
        # A synchronised clock judges: far ahead is the device's clock, not the gateway's.
        future = writer.commit([RawMessage(topic, _pack("cgm-1", [(T0 + 9000.0, 99.0)]), T0)])
        assert [r.reason for r in future.rejections] == [RejectReason.FUTURE_TIME]


def test_reprocess_decodes_only_the_records_of_its_reason_again(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = make_config()
    with Store(cfg.store.path) as store:
        devices.provision(store, "cgm-1", "pt-1", DeviceType.CGM, T0)
        writer = _writer(cfg, store, synchronised=True)
        # Record 0 is fine, record 1 is out of range, record 2 ahead of a wrong clock.
        mixed = _pack("cgm-1", [(T0 - 60.0, 110.0), (T0 - 30.0, 5000.0), (T0 + 3600.0, 130.0)])
        stranger = _pack("cgm-9", [(T0 - 60.0, 100.0)])
        writer.commit(
            [
                RawMessage(wire.readings_topic("cgm-1"), mixed, T0),
                RawMessage(wire.readings_topic("cgm-9"), stranger, T0),
            ]
        )
        assert quarantine.counts_by_reason(store) == {
            "future_time": 1,
            "out_of_range": 1,
            "unknown_device": 1,
        }
        devices.provision(store, "cgm-9", "pt-9", DeviceType.CGM, T0)
    config_file = tmp_path / "gw.toml"
    config_file.write_text(f'[store]\npath = "{cfg.store.path}"\n')

    def reprocess(reason: str) -> dict[str, object]:
        done = cli("edge-twin", "reprocess", "--reason", reason, "-c", str(config_file), "--json")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    # The device is provisioned now: its message decodes.
    assert reprocess("unknown_device") == {
        "reason": "unknown_device",
        "rows": 1,
        "messages": 1,
        "readings_new": 1,
        "still_rejected": {},
    }
    # Decoded at the time of reprocessing: the record is in the past now, stored; the
    # record out of range keeps its own row, once; the good record is not stored twice.
    fixed = reprocess("future_time")
    assert fixed["readings_new"] == 1
    assert fixed["still_rejected"] == {}
    out_of_range = reprocess("out_of_range")
    assert out_of_range["still_rejected"] == {"out_of_range": 1}
    with Store(cfg.store.path) as store:
        assert quarantine.counts_by_reason(store) == {"out_of_range": 1}
        assert readings.count(store) == 3
    bad = cli("edge-twin", "reprocess", "--reason", "no-such", "-c", str(config_file), check=False)
    assert bad.returncode == 2
    assert "no-such" in bad.stderr
