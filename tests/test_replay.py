"""Cohort files and replay: recorded messages through the same decode -> store -> twin
path as live."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_twin.config import load_config
from edge_twin.ingest.replay import provision_from, read_capture, replay
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, quarantine, readings, twin_state
from firmware_sim.cohort import DEFAULT_START, read_truth, write_cohort
from firmware_sim.home import Home
from firmware_sim.physiology.body import SIGNALS
from tests.conftest import cgm_home

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
        pipeline = Pipeline(store, cfg)
        provision_from(tmp_path / "cohort" / "devices.jsonl", pipeline, DEFAULT_START)
        first = replay(pipeline, read_capture(tmp_path / "cohort"), batch=100)
        again = replay(pipeline, read_capture(tmp_path / "cohort"), batch=100)
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
        summary = replay(Pipeline(store, load_config(env={})), read_capture(capture))
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
