#!/usr/bin/env bash
# Installs everything edge-twin needs on a fresh Debian / Raspberry Pi OS machine:
# the Debian packages (mosquitto, python3-venv), then a virtualenv in .venv with the
# project and, with --dev, its test and lint tools. Safe to run again: each step is
# skipped when what it installs is already there.
#
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    runtime + test/lint tools + Chromium for the page tests
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

extras=""
for arg in "$@"; do
  case "$arg" in
    --dev) extras="[dev]" ;;
    *) echo "setup.sh: unknown option '$arg' (use --dev)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else echo "setup.sh: need root or sudo to install Debian packages: $*" >&2; exit 1; fi
}

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup.sh: $python not found; install Python >= 3.11 first (apt-get install python3)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: edge-twin needs Python >= 3.11, found $("$python" --version)" >&2
  exit 1
fi

# --- Debian packages --------------------------------------------------------
apt_wanted=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_wanted+=(mosquitto)
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_wanted+=(python3-venv)
# The demo and the tests run a real FHIR server (tools/fhir-server: Medplum's, on Node).
command -v node >/dev/null 2>&1 || apt_wanted+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_wanted+=(npm)
# The tests drive the dashboard in a real (headless) Chromium.
if [ -n "$extras" ] && ! command -v chromium >/dev/null 2>&1; then apt_wanted+=(chromium); fi
if [ "${#apt_wanted[@]}" -gt 0 ]; then
  say "installing Debian packages: ${apt_wanted[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${apt_wanted[@]}" >/dev/null
fi
# The Debian package enables a system-wide broker on port 1883. edge-twin's demo and tests
# start their own private broker on a free loopback port, so the system one is left alone.

# --- Python virtualenv --------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.edge-twin-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing edge-twin${extras} into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extras}"
  touch "$stamp"
fi
# --- The FHIR test server's Node packages (pinned by its package-lock.json) ------
fhir=tools/fhir-server
if [ ! -f "$fhir/node_modules/.edge-twin-installed" ] \
   || [ "$fhir/package-lock.json" -nt "$fhir/node_modules/.edge-twin-installed" ]; then
  say "installing the FHIR test server's packages ($fhir)"
  # Medplum 5 declares Node >= 22; server.js runs on Node 20 (see its header).
  npm ci --prefix "$fhir" --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null
  touch "$fhir/node_modules/.edge-twin-installed"
fi
say "ready: $(.venv/bin/edge-twin --version)"
