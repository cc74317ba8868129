"""The machine's ceilings for the gateway's hot operations, to set its figures against
(bench/all.py measures them in the same run as the benchmarks).

- SQLite (WAL, ``synchronous=FULL`` as the gateway's store): rows of a reading's shape
  committed one per transaction, and in transactions of 100;
- ``json.loads`` of a one-reading SenML message (~120 bytes);
- filterpy: a 2-state predict + update with its functions, as the twin calls them (the
  glucose model's size);
- onnxruntime: one row through the shipped decompensation model, a bare session.

Medians of ``--repeat`` timed runs. (MQTT's ceiling, raw paho through mosquitto, is
measured by bench/ingest.py beside the gateway in its own run.)

    .venv/bin/python bench/ceilings.py [--quick] [--repeat 5]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MESSAGE = (
    b'[{"bn":"urn:dev:id:cgm-0001:","bt":1790000000.0,"n":"glucose","u":"mg/dL",'
    b'"v":123.0,"seq":4711}]'
)


def per_op_us(op: Callable[[], object], n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(n):
            op()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def sqlite_rows_per_s(batch: int, rows: int, repeat: int) -> float:
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeat):
            conn = sqlite3.connect(Path(tmp) / f"c{k}.sqlite", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE r (id INTEGER PRIMARY KEY, patient_id TEXT, device_id TEXT,"
                " signal TEXT, t REAL, value REAL, seq INTEGER, UNIQUE (device_id, signal, t))"
            )
            started = time.perf_counter()
            for first in range(0, rows, batch):
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO r (patient_id, device_id, signal, t, value, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        ("pt-1", "cgm-1", "glucose", float(i), 120.0, i)
                        for i in range(first, first + batch)
                    ],
                )
                conn.execute("COMMIT")
            rates.append(rows / (time.perf_counter() - started))
            conn.close()
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer operations per run")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    scale = 5 if args.quick else 1

    import numpy as np
    import onnxruntime as ort
    from filterpy.kalman import predict, update

    from edge_twin.assess.model_card import MODEL_NAME
    from edge_twin.assess.risk_model import shipped_dir

    single = sqlite_rows_per_s(1, 2000 // scale, args.repeat)
    batched = sqlite_rows_per_s(100, 100_000 // scale, args.repeat)
    loads_us = per_op_us(lambda: json.loads(MESSAGE), 200_000 // scale, args.repeat)

    x, p = np.array([120.0, 0.0]), np.eye(2) * 100.0
    f, q = np.array([[1.0, 300.0], [0.0, 1.0]]), np.eye(2) * 0.01
    h, r = np.array([[1.0, 0.0]]), np.array([[25.0]])
    z = np.array([120.0])

    def step() -> None:
        xp, pp = predict(x, p, f, q)
        update(xp, pp, z, r, h)

    kalman_us = per_op_us(step, 20_000 // scale, args.repeat)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(shipped_dir() / f"{MODEL_NAME}.onnx"), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    width = session.get_inputs()[0].shape[1]
    row = np.zeros((1, int(width)), dtype=np.float32)
    onnx_us = per_op_us(lambda: session.run(None, {name: row}), 5000 // scale, args.repeat)

    results = {
        "sqlite_full_single_rows_per_s": round(single),
        "sqlite_full_batch100_rows_per_s": round(batched),
        "json_loads_us": round(loads_us, 2),
        "filterpy_update_us": round(kalman_us, 2),
        "filterpy_updates_per_s": round(1e6 / kalman_us),
        "onnx_one_row_us": round(onnx_us, 2),
        "repeat": args.repeat,
        "sqlite": sqlite3.sqlite_version,
        "onnxruntime": ort.__version__,
    }
    print(
        f"SQLite FULL: {single:,.0f} rows/s one per transaction, {batched:,.0f} in 100s;"
        f" json.loads {loads_us:.2f} us; filterpy predict+update {kalman_us:.1f} us;"
        f" onnxruntime one row {onnx_us:.1f} us",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
