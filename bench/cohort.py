"""Cohort generation speed: a simulated cohort written to files, as `firmware-sim cohort`.

    .venv/bin/python bench/cohort.py [--patients 100] [--days 90] [--jobs N]

Last line: one JSON object (seconds, patient-days per second, sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from firmware_sim.cohort import DEFAULT_START, write_cohort
from firmware_sim.home import Home


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-twin-cohort-") as tmp:
        t0 = time.perf_counter()
        home = Home(args.patients, DEFAULT_START, args.days * 24, seed=args.seed)
        counts = write_cohort(
            home, Path(tmp), lambda i: print(f"patient {i + 1}", file=sys.stderr), jobs=args.jobs
        )
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "patients": args.patients,
                "days": args.days,
                "jobs": args.jobs,
                "seconds": round(seconds, 1),
                "patient_days_per_s": round(args.patients * args.days / seconds, 1),
                "messages": counts["messages"],
                "readings": counts["records"],
                "episodes": counts["episodes"],
                "megabytes": round(size / 1e6, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
