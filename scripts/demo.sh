#!/usr/bin/env bash
# One command: install everything, then run a simulated home through the whole pipeline.
# Extra arguments go to `edge-twin-demo` (see `.venv/bin/edge-twin-demo --help`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh"
exec "$here/.venv/bin/edge-twin-demo" "$@"
