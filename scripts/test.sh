#!/usr/bin/env bash
# One command: install everything, then run the linters, the type checker and the tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ingest).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/setup.sh --dev
echo "[test] ruff"; .venv/bin/ruff check edge_twin edge_twin_demo firmware_sim models validation ble_bridge tests bench
echo "[test] ruff format"; .venv/bin/ruff format --check edge_twin edge_twin_demo firmware_sim models validation ble_bridge tests bench
echo "[test] mypy"; .venv/bin/mypy
echo "[test] pytest"; exec .venv/bin/python -m pytest "$@"
