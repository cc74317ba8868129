"""Writing a cohort to files: what the devices sent, and the truth beside it.

    out/devices.jsonl    one device a line: device_id, patient_id, device_type
    out/messages.jsonl   every message in delivery order, in edge-twin's capture format
                         ({"t", "topic", "payload" or "payload_b64"}): `edge-twin replay`
                         reads it
    out/truth.csv        t,patient_id,signal,value: the true physiological state per minute
    out/episodes.jsonl   labelled events (kind, patient_id, onset, peak)
    out/cohort.json      the parameters that made it

Same parameters and seed -> byte-identical files (no wall-clock time is written).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path

from firmware_sim.home import Home

# A fixed default start, so a cohort does not depend on when it was generated.
DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def write_cohort(home: Home, out: Path, seed: int) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "devices.jsonl").open("w", encoding="utf-8") as f:
        for d in home.devices:
            f.write(json.dumps(asdict(d)) + "\n")
    messages = home.messages()
    with (out / "messages.jsonl").open("w", encoding="utf-8") as f:
        for m in messages:
            line: dict[str, object] = {"t": m.t, "topic": m.topic}
            try:
                line["payload"] = m.payload.decode()
            except UnicodeDecodeError:  # a corrupted payload: keep its exact bytes
                line["payload_b64"] = base64.b64encode(m.payload).decode()
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    truth_rows = 0
    with (out / "truth.csv").open("w", encoding="utf-8") as f:
        f.write("t,patient_id,signal,value\n")
        for p in home.patients:
            for minute, value in enumerate(p.glucose_truth):
                f.write(f"{home.start + minute * 60:.0f},{p.patient_id},glucose,{value:.2f}\n")
                truth_rows += 1
    episodes = 0
    with (out / "episodes.jsonl").open("w", encoding="utf-8") as f:
        for p in home.patients:
            for e in p.episodes:
                f.write(json.dumps({"patient_id": p.patient_id, **asdict(e)}) + "\n")
                episodes += 1
    params = {
        "seed": seed,
        "patients": len(home.patients),
        "start": home.start,
        "hours": (home.end - home.start) / 3600.0,
        "cgm": asdict(home.cgm_spec),
        "transport": asdict(home.faults),
        "clock": asdict(home.clock),
    }
    (out / "cohort.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    return {"messages": len(messages), "truth_rows": truth_rows, "episodes": episodes}
