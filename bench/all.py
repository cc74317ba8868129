"""Every benchmark, one after another, and docs/benchmarks.md written from what they printed.

First the machine's ceilings, measured in this run (bench/ceilings.py: SQLite commits,
JSON parsing, filterpy, onnxruntime; MQTT's, raw paho through mosquitto, is measured by
bench/ingest.py beside the gateway); then each benchmark in turn (never two at once:
they would measure each other), its last line read as its figures. The page holds the
machine, the date, each command with its wall time and its figures, and the ratios of
the gateway's figures to the ceilings of the same run.

``--quick`` runs each with small arguments (about 15 min here: a check that all of them
run and a rough picture); by default each runs with its own defaults, the figures
docs/performance.md discusses (about an hour and a half here).

    .venv/bin/python bench/all.py [--quick] [--only ingest sync ...] [--out docs/benchmarks.md]
Last line: one JSON object (every benchmark's figures, by name).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (name, full arguments, quick arguments): the order runs the cheap ones first.
BENCHES: list[tuple[str, list[str], list[str]]] = [
    ("ceilings", [], ["--quick"]),
    ("cohort", [], ["--patients", "10", "--days", "7"]),
    ("ingest", [], ["--messages", "10000", "--packs", "2000", "--repeat", "1"]),
    ("estimate", [], ["--patients", "4", "--days", "7"]),
    ("risk", [], ["--patients", "30", "--days", "60", "--repeats", "50"]),
    ("alerts", [], ["--patients", "10", "--days", "3", "--low-patients", "8"]),
    ("replay", [], ["--patients", "2", "--days", "7", "--live-hours", "6"]),
    ("sync", [], ["--patients", "3", "--hours", "24", "--repeat", "1"]),
    ("api", [], ["--patients", "2", "--days", "14", "--requests", "20"]),
    ("footprint", [], ["--patients", "4", "--hours", "2", "--idle-s", "20"]),
    ("external", [], ["--patients", "6", "--days", "2"]),
    ("faults", [], ["--trials", "10", "--patients", "2", "--hours", "3"]),
    ("soak", [], ["--patients", "4", "--days", "1", "--restart-every-s", "30"]),
]


def machine() -> dict[str, Any]:
    def first(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return "unknown"
        return out.strip().splitlines()[0] if out.strip() else "unknown"

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": first(["sh", "-c", "mosquitto -h 2>&1 | head -1"]),
        "node": first(["node", "--version"]),
    }


def run(name: str, args: list[str]) -> tuple[dict[str, Any], float]:
    cmd = [sys.executable, f"bench/{name}.py", *args]
    print(f"== {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench/{name}.py failed ({proc.returncode}): see above")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures, seconds


def flat(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if isinstance(value, dict):
            out += flat(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def ratios(found: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(what, the gateway's figure against the ceiling of the same run, ratio)."""
    c = found.get("ceilings", {})
    out: list[tuple[str, str, str]] = []

    def add(what: str, ours: float | None, ceiling: float | None, unit: str) -> None:
        if ours is None or ceiling is None or not ceiling:
            return
        out.append((what, f"{ours:,.4g} {unit} / {ceiling:,.4g} {unit}", f"{ours / ceiling:.3f}"))

    ingest = found.get("ingest", {})
    for kind in ("single", "pack"):
        gw, raw = ingest.get(f"gateway_{kind}_rps"), ingest.get(f"raw_{kind}_rps")
        if gw is not None and raw is not None and f"ratio_{kind}" in ingest:
            # ingest's own ratio: the median of its runs' ratios (runs interleaved).
            out.append(
                (
                    f"ingest, {kind} (durable, vs raw paho in the same run; median of runs)",
                    f"{gw:,} readings/s / {raw:,} readings/s",
                    f"{ingest[f'ratio_{kind}']:.3f}",
                )
            )
    sync = found.get("sync", {})
    add("FHIR sync vs a bare poster", sync.get("gateway_rps"), sync.get("raw_rps"), "res/s")
    risk = found.get("risk", {})
    # Lower is better for times: the ratio says how many ceilings one assessment costs.
    add(
        "risk: one feature row assessed (the model on the row and on one row per feature"
        " for the contributions, confidence, provenance) vs one bare onnxruntime row",
        risk.get("p50_infer_us"),
        c.get("onnx_one_row_us"),
        "us",
    )
    replay = found.get("replay", {})
    add(
        "replay: readings/s vs filterpy's bare predict+update rate",
        replay.get("readings_per_s"),
        c.get("filterpy_updates_per_s"),
        "/s",
    )
    return out


def page(found: dict[str, dict[str, Any]], took: dict[str, float], quick: bool) -> str:
    m = machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `.venv/bin/python bench/all.py"
        + (" --quick" if quick else "")
        + "` on "
        + datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        + ": every benchmark of `bench/` run one after another on this machine, with the"
        " machine's ceilings measured in the same run. What each measures and why:"
        " docs/performance.md; faults and the soak: docs/reliability.md."
        + (
            " **Quick run**: small arguments (a check that each runs and a rough"
            " picture); the full run is the command without `--quick`."
            if quick
            else ""
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {cell(v)} |" for k, v in m.items()],
        "",
        "## Against the ceilings of the same run",
        "",
        "| what | ours / ceiling | ratio |",
        "|---|---|---|",
        *[f"| {a} | {b} | {r} |" for a, b, r in ratios(found)],
        "",
    ]
    for name, args_full, args_quick in BENCHES:
        if name not in found:
            continue
        args = args_quick if quick else args_full
        lines += [
            f"## `{name}`",
            "",
            f"`.venv/bin/python bench/{name}.py{' ' + ' '.join(args) if args else ''}`"
            f" ({took[name]:,.0f} s)",
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {cell(v)} |" for k, v in flat(found[name])],
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small arguments")
    parser.add_argument("--only", nargs="+", choices=[b[0] for b in BENCHES], help="just these")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    found: dict[str, dict[str, Any]] = {}
    took: dict[str, float] = {}
    for name, full, quick in BENCHES:
        if args.only and name not in args.only and name != "ceilings":
            continue
        found[name], took[name] = run(name, quick if args.quick else full)
        # Written after each: a long run that fails late keeps what it measured.
        args.out.write_text(page(found, took, args.quick))
    print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
