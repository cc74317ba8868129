"""Replay: recorded messages through the same decode -> store -> twin path as live."""

import json
import subprocess
import sys
from pathlib import Path

from edge_twin.config import load_config
from edge_twin.ingest.replay import provision_from, read_capture, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, quarantine, readings, twin_state
from firmware_sim.cohort import DEFAULT_START, write_cohort
from firmware_sim.home import Home

BIN = Path(sys.executable).parent


def test_cohort_files_are_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_cohort(Home(2, DEFAULT_START, 24, seed=5), a, 5)
    write_cohort(Home(2, DEFAULT_START, 24, seed=5), b, 5)
    write_cohort(Home(2, DEFAULT_START, 24, seed=6), c, 6)
    for name in ("devices.jsonl", "messages.jsonl", "truth.csv", "episodes.jsonl", "cohort.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "messages.jsonl").read_bytes() != (c / "messages.jsonl").read_bytes()


def test_replay_stores_estimates_and_is_idempotent(tmp_path: Path, db_path: Path) -> None:
    home = Home(2, DEFAULT_START, 12, seed=9)
    write_cohort(home, tmp_path / "cohort", 9)
    cfg = load_config(env={})
    with Store(db_path) as store:
        pipeline = Pipeline(store, cfg)
        provision_from(tmp_path / "cohort" / "devices.jsonl", pipeline, DEFAULT_START)
        first = replay(pipeline, read_capture(tmp_path / "cohort" / "messages.jsonl"), batch=100)
        again = replay(pipeline, read_capture(tmp_path / "cohort" / "messages.jsonl"), batch=100)
        samples = sum(len(p.cgm) for p in home.patients)
        assert first.readings_new == samples
        assert first.rejected == 0
        assert (again.readings_new, again.readings_duplicate) == (0, samples)
        states = twin_state.load(store)
        assert [s.n_measurements for s in states] == [len(p.cgm) for p in home.patients]
        assert readings.count(store) == samples


def test_replay_quarantines_bad_lines_instead_of_skipping_them(
    tmp_path: Path, db_path: Path
) -> None:
    capture = tmp_path / "capture.jsonl"
    good = {"t": DEFAULT_START, "topic": "et/v1/dev/cgm-001/senml", "payload": "[]"}
    capture.write_bytes(b"not json at all\n" + json.dumps(good).encode() + b"\n" + b'{"t": 1}\n')
    with Store(db_path) as store:
        summary = replay(Pipeline(store, load_config(env={})), read_capture(capture))
        rows = quarantine.recent(store)
    assert summary.messages == 3
    assert summary.rejected == 3
    assert sorted(q.reason for q in rows) == ["unknown_device", "wrong_topic", "wrong_topic"]
    assert b"not json at all" in [q.payload for q in rows]


def test_replay_cli(tmp_path: Path) -> None:
    subprocess.run(
        [
            str(BIN / "firmware-sim"),
            "cohort",
            "--out",
            str(tmp_path / "c"),
            "--patients",
            "1",
            "--hours",
            "6",
        ],
        check=True,
        capture_output=True,
    )
    env = {"EDGE_TWIN_STORE_PATH": str(tmp_path / "r.sqlite"), "PATH": str(BIN)}
    proc = subprocess.run(
        [
            str(BIN / "edge-twin"),
            "replay",
            str(tmp_path / "c" / "messages.jsonl"),
            "--devices",
            str(tmp_path / "c" / "devices.jsonl"),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert "readings new 72" in proc.stdout  # 6 h of 5-min CGM samples
