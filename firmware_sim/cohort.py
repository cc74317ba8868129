"""Writing a cohort to files: what the devices sent, and the truth beside it.

    out/cohort.json              the parameters that made it, and the truth's columns
    out/devices.jsonl            device_id, patient_id, device_type (provisioning)
    out/patients.jsonl           each patient's profile (conditions, baselines, habits)
    out/episodes.jsonl           labelled events: kind, patient_id, onset, peak, censored
    out/messages/pt-NNN.jsonl.gz every message of a patient in delivery order, in
                                 edge-twin's capture format ({"t", "topic", "payload" or
                                 "payload_b64"}); `edge-twin replay out/` merges them
    out/truth/pt-NNN.npy.gz      float32 [minute, signal]: the true state each minute

Patients are simulated and written one at a time per worker process (memory stays flat
for large cohorts).
Same parameters and seed -> byte-identical files: gzip headers carry no time or name, and
nothing depends on the wall clock.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from itertools import repeat
from pathlib import Path

import numpy as np

from firmware_sim.home import Home
from firmware_sim.messages import Message
from firmware_sim.physiology.body import SIGNALS

# A fixed default start, so a cohort does not depend on when it was generated.
DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _gzip(path: Path, data: bytes) -> None:
    # Level 1: most of the size reduction of level 9 at a fraction of its time here.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=1) as f,
    ):
        f.write(data)


def capture_line(m: Message) -> str:
    line: dict[str, object] = {"t": m.t, "topic": m.topic}
    try:
        line["payload"] = m.payload.decode()
    except UnicodeDecodeError:  # a corrupted payload: keep its exact bytes
        line["payload_b64"] = base64.b64encode(m.payload).decode()
    return json.dumps(line, separators=(",", ":"))


def _write_patient(home: Home, i: int, out: Path) -> tuple[str, list[str], dict[str, int]]:
    """Simulate patient ``i`` and write its files; returns its profile and episode lines
    (written by the caller in patient order) and its counts. Runs in a worker process."""
    patient = home.patient(i)
    messages = home.patient_messages(patient)
    pid = patient.patient_id
    text = "".join(capture_line(m) + "\n" for m in messages)
    _gzip(out / "messages" / f"{pid}.jsonl.gz", text.encode())
    truth = np.stack([patient.truth.signals[s] for s in SIGNALS], axis=1)
    buffer = io.BytesIO()
    np.save(buffer, truth.astype(np.float32), allow_pickle=False)
    _gzip(out / "truth" / f"{pid}.npy.gz", buffer.getvalue())
    profile = json.dumps({"patient_id": pid, **asdict(patient.profile)})
    episodes = [json.dumps(asdict(e)) for e in patient.episodes]
    counts = {
        "messages": len(messages),
        "records": sum(len(u.records) for ups in patient.uploads.values() for u in ups),
    }
    return profile, episodes, counts


def write_cohort(
    home: Home,
    out: Path,
    progress: Callable[[int], None] | None = None,
    jobs: int = 1,
) -> dict[str, int]:
    """Write ``home`` as a cohort; ``jobs`` worker processes simulate patients in
    parallel (each patient has its own random streams, so the files are the same for any
    number of jobs). ``progress(i)`` is called as patient ``i`` is written."""
    (out / "messages").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    counts = {"patients": 0, "messages": 0, "records": 0, "episodes": 0}
    with (out / "devices.jsonl").open("w", encoding="utf-8") as f:
        for d in home.devices:
            f.write(json.dumps(asdict(d)) + "\n")
    indices = range(home.n_patients)
    with (
        (out / "patients.jsonl").open("w", encoding="utf-8") as patients_file,
        (out / "episodes.jsonl").open("w", encoding="utf-8") as episodes_file,
        ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else nullcontext() as pool,
    ):
        results = (
            pool.map(_write_patient, repeat(home), indices, repeat(out))
            if pool is not None
            else (_write_patient(home, i, out) for i in indices)
        )
        for i, (profile, episodes, patient_counts) in enumerate(results):
            patients_file.write(profile + "\n")
            episodes_file.writelines(e + "\n" for e in episodes)
            counts["patients"] += 1
            counts["episodes"] += len(episodes)
            counts["messages"] += patient_counts["messages"]
            counts["records"] += patient_counts["records"]
            if progress is not None:
                progress(i)
    params = {
        "seed": home.seed,
        "patients": home.n_patients,
        "start": home.start,
        "hours": (home.end - home.start) / 3600.0,
        "kinds": list(home.kinds),
        "mix": asdict(home.mix),
        "cgm": asdict(home.cgm_spec),
        "transport": asdict(home.faults),
        "clock": asdict(home.clock),
        "truth_columns": list(SIGNALS),
        "truth_step_s": 60,
        **{f"n_{k}": v for k, v in counts.items()},
    }
    (out / "cohort.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    return counts


def read_truth(out: Path, patient_id: str) -> np.ndarray:
    """float32 [minute, signal] in the order of cohort.json's truth_columns."""
    with gzip.open(out / "truth" / f"{patient_id}.npy.gz", "rb") as f:
        array: np.ndarray = np.load(io.BytesIO(f.read()), allow_pickle=False)
    return array
