"""Cohort files and replay: recorded messages through the same decode -> store -> twin
path as live."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.replay import live_and_replayed
from edge_twin.clock import ManualClock
from edge_twin.config import load_config
from edge_twin.ingest import RawMessage
from edge_twin.ingest.replay import (
    IDLE_SPAN_S,
    IDLE_STEP_S,
    REPLAY_TOPIC,
    provision_from,
    read_capture,
    replay,
)
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, alarms, devices, quarantine, readings, twin_state
from firmware_sim import wire
from firmware_sim.cohort import DEFAULT_START, read_truth, write_cohort
from firmware_sim.home import Home
from firmware_sim.physiology.body import SIGNALS
from tests.conftest import T0, cgm_home

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


def _everything(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with Store(db) as store:
        tables = [
            r[0]
            for r in store.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '%sqlite%'"
            )
        ]
        return {t: store.conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}


def test_a_capture_replayed_again_by_the_cli_changes_nothing(tmp_path: Path) -> None:
    # Every device kind, battery and firmware reports, faults: technical alarms happen.
    write_cohort(Home(3, DEFAULT_START, 24, seed=4), tmp_path / "cohort")
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "r.sqlite"), "PATH": str(BIN)}
    run = [str(BIN / "edge-twin"), "replay", str(tmp_path / "cohort")]
    subprocess.run(run, check=True, capture_output=True, env=env)
    first = _everything(tmp_path / "r.sqlite")
    subprocess.run(run, check=True, capture_output=True, env=env)
    again = _everything(tmp_path / "r.sqlite")
    assert first["alarms"], "a day of three homes raises alarms"
    for table in first:
        if table != "consumers":  # their updated_at is when they last looked
            assert again[table] == first[table], table


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


@pytest.mark.broker
def test_replay_raises_the_alarms_live_ingest_raised_at_the_same_times(tmp_path: Path) -> None:
    # Lows and highs over a day for two patients, with the simulator's delivery faults,
    # lived by a gateway on a real broker, then replayed (bench/replay.py's check).
    live, replayed = live_and_replayed(cgm_home(2, 24, seed=21), tmp_path)
    stored, _, raised, _ = live
    assert len(stored) > 500
    assert len(raised) >= 2, "a day with alarms to compare"
    for name, a, b in zip(("readings", "twin", "alarms", "events"), live, replayed, strict=True):
        assert a == b, f"replay's {name} differ from live ingest's"


def test_replay_runs_the_idle_checks_through_a_quiet_spell(db_path: Path) -> None:
    # A CGM that falls silent for 40 min: live, the stale check fires 15 min after its last
    # reading; replay must too, not only when the next message comes.
    times = [T0 + 300 * i for i in range(12)] + [T0 + 3300 + 2400 + 300 * i for i in range(6)]
    capture = [
        RawMessage(
            wire.readings_topic("cgm-001"),
            wire.senml_pack("cgm-001", [("glucose", "mg/dL", t, 120.0, n)]),
            t + 5,
        )
        for n, t in enumerate(times)
    ]
    with Store(db_path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        clock = ManualClock(T0)
        replay(Pipeline(store, load_config(env={}), clock), capture, clock)
        stale = [
            a
            for a in alarms.listing(store.conn, "pt-001", open_only=False, limit=100)
            if a.alarm_type == "signal_stale"
        ]
    assert len(stale) == 1
    silent_from = T0 + 3300  # the last reading before the gap (device time)
    assert silent_from + 900 <= stale[0].raised_at <= silent_from + 900 + 60
    assert stale[0].state.value == "resolved"  # data came back


def test_idle_work_through_a_long_silence_is_bounded(db_path: Path) -> None:
    # A month without data: the idle checks run through the first two days of it (the
    # longest timer), then replay moves straight to the next arrival.
    def msg(t: float, value: float, seq: int) -> RawMessage:
        payload = wire.senml_pack("cgm-001", [("glucose", "mg/dL", t, value, seq)])
        return RawMessage(wire.readings_topic("cgm-001"), payload, t + 5)

    class Counting(Pipeline):
        idles = 0

        def on_idle(self, technical: bool = True) -> None:
            Counting.idles += 1
            super().on_idle(technical)

    with Store(db_path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        clock = ManualClock(T0)
        sink = Counting(store, load_config(env={}), clock)
        replay(sink, [msg(T0, 120.0, 1), msg(T0 + 30 * 86400, 118.0, 2)], clock)
    assert Counting.idles <= IDLE_SPAN_S / IDLE_STEP_S + 3


def test_a_capture_time_that_is_not_epoch_seconds_is_quarantined(
    tmp_path: Path, db_path: Path
) -> None:
    capture = tmp_path / "capture.jsonl"
    ok = {"t": T0, "topic": "et/v1/dev/cgm-001/senml", "payload": "[]"}
    capture.write_text(
        "\n".join(json.dumps({**ok, "t": t}) for t in (T0 * 1000, "Infinity", T0)) + "\n"
    )
    reasons = [m.topic for m in read_capture(capture)]
    assert reasons == [REPLAY_TOPIC, REPLAY_TOPIC, "et/v1/dev/cgm-001/senml"]
