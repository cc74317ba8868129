"""Cohort files and replay: recorded messages through the same decode -> store -> twin
path as live."""

import json
import subprocess
import sys
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import Config, load_config
from edge_twin.gateway import Gateway
from edge_twin.ingest.replay import provision_from, read_capture, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, quarantine, readings, twin_state
from firmware_sim.cohort import DEFAULT_START, read_truth, write_cohort
from firmware_sim.home import Home
from firmware_sim.physiology.body import SIGNALS
from firmware_sim.publisher import HomePublisher
from tests.conftest import T0, cgm_home, provision_home, wait_until

BIN = Path(sys.executable).parent


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_cohort_files_are_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    write_cohort(Home(3, DEFAULT_START, 48, seed=5), tmp_path / "a")
    write_cohort(Home(3, DEFAULT_START, 48, seed=5), tmp_path / "b")
    write_cohort(Home(3, DEFAULT_START, 48, seed=6), tmp_path / "c")
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert set(a) >= {"cohort.json", "devices.jsonl", "patients.jsonl", "episodes.jsonl"}
    assert "messages/pt-001.jsonl.gz" in a
    assert "truth/pt-003.npy.gz" in a
    assert a == b
    assert a["messages/pt-001.jsonl.gz"] != c["messages/pt-001.jsonl.gz"]


def test_truth_file_is_the_simulated_truth(tmp_path: Path) -> None:
    home = Home(2, DEFAULT_START, 24, seed=8)
    write_cohort(home, tmp_path)
    truth = read_truth(tmp_path, "pt-002")
    expected = np.stack([home.patient(1).truth.signals[s] for s in SIGNALS], axis=1)
    assert truth.shape == (24 * 60, len(SIGNALS))
    assert np.allclose(truth, expected.astype(np.float32), equal_nan=True)
    params = json.loads((tmp_path / "cohort.json").read_text())
    assert params["truth_columns"] == list(SIGNALS)


def test_replay_stores_estimates_and_is_idempotent(tmp_path: Path, db_path: Path) -> None:
    home = cgm_home(2, 12, seed=9, start=DEFAULT_START)
    write_cohort(home, tmp_path / "cohort")
    cfg = load_config(env={})
    with Store(db_path) as store:
        provision_from(tmp_path / "cohort" / "devices.jsonl", store, DEFAULT_START)
        clock = ManualClock(DEFAULT_START)
        pipeline = Pipeline(store, cfg, clock)
        first = replay(pipeline, read_capture(tmp_path / "cohort"), clock)
        again = replay(pipeline, read_capture(tmp_path / "cohort"), clock)
        samples = sum(len(p.cgm) for p in home.patients)
        assert first.readings_new == samples
        assert first.rejected == 0
        assert (again.readings_new, again.readings_duplicate) == (0, samples)
        states = twin_state.load(store)
        assert [s.n_measurements for s in states] == [len(p.cgm) for p in home.patients]
        assert readings.count(store) == samples


def test_replay_merges_a_cohort_in_time_order(tmp_path: Path) -> None:
    write_cohort(Home(3, DEFAULT_START, 12, seed=2), tmp_path)
    times = [m.received_at for m in read_capture(tmp_path)]
    assert times == sorted(times)
    assert len(times) == json.loads((tmp_path / "cohort.json").read_text())["n_messages"]


def test_replay_quarantines_bad_lines_instead_of_skipping_them(
    tmp_path: Path, db_path: Path
) -> None:
    capture = tmp_path / "capture.jsonl"
    good = {"t": DEFAULT_START, "topic": "et/v1/dev/cgm-001/senml", "payload": "[]"}
    capture.write_bytes(b"not json at all\n" + json.dumps(good).encode() + b"\n" + b'{"t": 1}\n')
    with Store(db_path) as store:
        clock = ManualClock(DEFAULT_START)
        pipeline = Pipeline(store, load_config(env={}), clock)
        summary = replay(pipeline, read_capture(capture), clock)
        rows = quarantine.recent(store)
    assert summary.messages == 3
    assert summary.rejected == 3
    assert sorted(q.reason for q in rows) == ["unknown_device", "wrong_topic", "wrong_topic"]
    assert b"not json at all" in [q.payload for q in rows]


def test_cohort_and_replay_cli(tmp_path: Path) -> None:
    subprocess.run(
        [
            str(BIN / "firmware-sim"),
            "cohort",
            "--out",
            str(tmp_path / "c"),
            "--patients",
            "2",
            "--hours",
            "6",
        ],
        check=True,
        capture_output=True,
    )
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "r.sqlite"), "PATH": str(BIN)}
    proc = subprocess.run(
        [str(BIN / "edge-twin"), "replay", str(tmp_path / "c")],  # devices.jsonl found beside
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    records = json.loads((tmp_path / "c" / "cohort.json").read_text())["n_records"]
    assert f"readings new {records}," in proc.stdout  # every reading of a clean cohort
    assert "quarantined 0" in proc.stdout


def _clinical_history(db: Path) -> tuple[list[tuple[object, ...]], ...]:
    """What the twin and the clinical alarms made of the data, without row ids."""
    with Store(db) as store:
        q = store.conn.execute
        stored = q(
            "SELECT device_id, signal, t, value, seq, received_at, flags FROM readings"
            " ORDER BY device_id, signal, t"
        ).fetchall()
        twin = q("SELECT * FROM twin_state ORDER BY patient_id, signal").fetchall()
        raised = q(
            "SELECT patient_id, alarm_type, priority, state, raised_at, updated_at, reason,"
            ' "values", evidence, resolved_at FROM alarms WHERE technical = 0'
            " ORDER BY raised_at, patient_id, alarm_type"
        ).fetchall()
        events = q(
            "SELECT a.patient_id, a.alarm_type, e.event, e.at, e.recorded_at, e.actor,"
            " e.reason, e.state FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id"
            " WHERE a.technical = 0 ORDER BY e.at, a.patient_id, a.alarm_type, e.id"
        ).fetchall()
    return stored, twin, raised, events


@pytest.mark.broker
def test_replay_raises_the_alarms_live_ingest_raised_at_the_same_times(
    broker: PrivateBroker, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    # Lows and highs over a day for two patients, with the simulator's delivery faults.
    home = cgm_home(2, 24, seed=21)
    messages = sorted(home.messages(), key=lambda m: m.t)
    live_cfg = make_config(broker)
    provision_home(live_cfg.store.path, home)
    clock = ManualClock(T0)
    with (
        Gateway(live_cfg, clock, serve_api=False) as gw,
        HomePublisher(broker.host, broker.port, home.devices) as pub,
    ):
        pipeline = gw.pipeline
        assert pipeline is not None
        for n, m in enumerate(messages, start=1):  # live, one message at a time
            clock.advance_to(m.t)
            pub.send(m)
            pub.flush()
            wait_until(lambda n=n: pipeline.settled(n), what="stored, estimated, alarms")
    capture = tmp_path / "capture.jsonl"
    capture.write_text(
        "".join(
            json.dumps({"t": m.t, "topic": m.topic, "payload_b64": b64encode(m.payload).decode()})
            + "\n"
            for m in messages
        )
    )
    replayed = tmp_path / "replayed.sqlite"
    provision_home(replayed, home)
    with Store(replayed, "NORMAL") as store:
        replay_clock = ManualClock(T0)
        replay(Pipeline(store, live_cfg, replay_clock), read_capture(capture), replay_clock)
    live = _clinical_history(live_cfg.store.path)
    again = _clinical_history(replayed)
    stored, _, raised, _ = live
    assert len(stored) > 500
    assert len(raised) >= 2, "a day with alarms to compare"
    for name, a, b in zip(("readings", "twin", "alarms", "events"), live, again, strict=True):
        assert a == b, f"replay's {name} differ from live ingest's"
