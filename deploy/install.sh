#!/usr/bin/env bash
# deploy/install.sh: from a blank Debian 12/13 or Raspberry Pi OS (arm64 or x86_64) to an
# installed, locked-down edge-twin gateway. Run as root from a checkout of edge-twin.
#
#   deploy/install.sh                    install; run again, nothing changes (idempotent)
#   deploy/install.sh --upgrade          this checkout becomes a new release: it must pass
#                                        its health check on a copy of the store first,
#                                        then after the switch, or the previous comes back
#   deploy/install.sh --rollback         make the previous release current again
#   deploy/install.sh --uninstall        remove the program and its units; the patients'
#                                        data, the config and the credentials stay
#   deploy/install.sh --uninstall --purge   remove all of it, and the service user
#
# Options: --root DIR installs under DIR (a throwaway root: tests; nothing is started or
# enabled), --user NAME (edge-twin), --gateway-id ID (this host's name), --python PATH
# (/usr/bin/python3), --mqtt-port N (1883, loopback), --tls-port N (8883), --tls-bind ADDR
# (every interface), --api-port N (8080, loopback). docs/field-guide.md explains each step.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root=""
user="edge-twin"
gateway_id=""
python="/usr/bin/python3"
mqtt_port=1883
tls_port=8883
tls_bind=""
api_port=8080
action="install"
purge=0

die() { echo "install.sh: $*" >&2; exit 1; }
say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$(realpath -m "$2")"; shift ;;
    --user) user="$2"; shift ;;
    --gateway-id) gateway_id="$2"; shift ;;
    --python) python="$2"; shift ;;
    --mqtt-port) mqtt_port="$2"; shift ;;
    --tls-port) tls_port="$2"; shift ;;
    --tls-bind) tls_bind="$2"; shift ;;
    --api-port) api_port="$2"; shift ;;
    --upgrade) action="upgrade" ;;
    --rollback) action="rollback" ;;
    --uninstall) action="uninstall" ;;
    --purge) purge=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo deploy/install.sh)"
[ "$root" = "/" ] && root=""

# Everything lives under these (prefixed by --root).
opt="$root/opt/edge-twin"
etc="$root/etc/edge-twin"
creds="$etc/credentials"
broker_dir="$etc/broker"
state="$root/var/lib/edge-twin"
units="$root/etc/systemd/system"
wrapper="$root/usr/local/bin/edge-twin"
dropin="$root/etc/mosquitto/conf.d/edge-twin.conf"
journald="$root/etc/systemd/journald.conf.d/edge-twin.conf"
config="$etc/edge-twin.toml"
unit_names=(edge-twin.service edge-twin-backup.service edge-twin-backup.timer
  edge-twin-broker-reload.path edge-twin-broker-reload.service
  edge-twin-broker-renew.service edge-twin-broker-renew.timer)

live_systemd() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

# --- the release: a virtualenv per source ------------------------------------------
# Only the tracked source goes in (no .venv, var/, caches), and its hash names the release:
# the same checkout installed twice is one release.
source_copy() {
  local into="$1"
  if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$here" && git ls-files -z --cached --others --exclude-standard | tar -cf - --null -T -) \
      | tar -xf - -C "$into"
  else
    tar -C "$here" --exclude=.venv --exclude=var --exclude=node_modules --exclude=.git \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=build -cf - . | tar -xf - -C "$into"
  fi
}

source_hash() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
}

build_release() {  # prints the release directory
  local scratch version hash rel
  scratch="$(mktemp -d)"
  source_copy "$scratch"
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$scratch/pyproject.toml" | head -1)"
  hash="$(source_hash "$scratch")"
  rel="$opt/releases/$version-$hash"
  if [ ! -f "$rel/COMPLETE" ]; then
    say "building release $version-$hash (a virtualenv with the package and its dependencies)" >&2
    rm -rf "$rel"
    mkdir -p "$opt/releases"
    "$python" -m venv "$rel" >&2
    if ! "$rel/bin/pip" install --quiet --disable-pip-version-check "$scratch" \
        > "$scratch.pip.log" 2>&1; then
      tail -20 "$scratch.pip.log" >&2
      rm -rf "$rel" "$scratch" "$scratch.pip.log"
      die "pip could not install the package (its last lines above)"
    fi
    rm -f "$scratch.pip.log"
    mkdir -p "$rel/share/doc/edge-twin" "$rel/share/edge-twin"
    cp -r "$scratch/docs/." "$rel/share/doc/edge-twin/"
    # Its units go with it: a rollback puts back the units of the release it returns to.
    cp -r "$scratch/deploy" "$rel/share/edge-twin/deploy"
    echo "$version-$hash" > "$rel/COMPLETE"
  fi
  rm -rf "$scratch"
  echo "$rel"
}

current_release() { if [ -L "$opt/current" ]; then readlink -f "$opt/current"; fi; }

switch_to() {  # atomically point current at $1 (and previous at what it was)
  local was
  was="$(current_release)"
  if [ -n "$was" ] && [ "$was" != "$1" ]; then ln -sfn "$was" "$opt/previous"; fi
  ln -sfn "$1" "$opt/current.new"
  mv -T "$opt/current.new" "$opt/current"
}

# --- as the service user, with the gateway's credential ---------------------------------
as_service() {  # as_service RELEASE ARGS...: edge-twin of that release, as the service
  local rel="$1"; shift
  (cd / && umask 077 && EDGE_TWIN_CONFIG="$config" EDGE_TWIN_MQTT_PASSWORD="$(cat "$creds/mqtt-password")" \
    runuser -u "$user" -- "$rel/bin/edge-twin" "$@")
}

healthy() {  # healthy RELEASE: its own check (config, store, model, broker), as the service
  as_service "$1" check
}

# --- pieces of the install ----------------------------------------------------------
system_packages() {
  local wanted=()
  dpkg -s mosquitto >/dev/null 2>&1 || wanted+=(mosquitto)
  "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || wanted+=(python3-venv)
  command -v runuser >/dev/null 2>&1 || wanted+=(util-linux)
  if [ "${#wanted[@]}" -gt 0 ]; then
    say "installing Debian packages: ${wanted[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}"
  fi
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "edge-twin needs Python >= 3.11; $python is $("$python" --version)"
  getent group mosquitto >/dev/null || die "the mosquitto package did not create its group"
}

service_user() {
  if ! getent passwd "$user" >/dev/null; then
    say "creating the service user $user"
    useradd --system --user-group --home-dir "$state" --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-twin gateway" "$user"
  fi
}

directories() {
  install -d -m 0755 -o root -g root "$opt" "$root/usr/local/bin" "$units" \
    "$(dirname "$dropin")" "$(dirname "$journald")"
  # The broker (user mosquitto) must pass through to broker/; the config file is 0640.
  install -d -m 0755 -o root -g root "$etc"
  install -d -m 0700 -o root -g root "$creds"
  # The CA and TLS files are root's, read by the broker (setgid: new files are group
  # mosquitto; the key 0640); the password file and ACL are the service user's to
  # rewrite (provisioning), in a directory of their own: root never writes where it
  # writes. Others may pass through broker/ (to auth/), not list it.
  install -d -m 2751 -o root -g mosquitto "$broker_dir"
  install -d -m 2750 -o "$user" -g mosquitto "$broker_dir/auth"
  install -d -m 0700 -o "$user" -g "$user" "$state"
}

secrets_and_config() {
  if [ ! -s "$creds/mqtt-password" ]; then
    say "generating the gateway's broker password ($creds/mqtt-password, root only)"
    (umask 077 && "$python" -c 'import secrets; print(secrets.token_urlsafe(32))' \
      > "$creds/mqtt-password")
  fi
  chmod 0600 "$creds/mqtt-password"
  if [ ! -f "$config" ]; then
    say "writing $config (yours to edit; docs/configuration.md)"
    (umask 027 && cat > "$config" <<EOF
# edge-twin gateway configuration, written once by deploy/install.sh: yours to edit
# (every setting: docs/configuration.md). Secrets are not here: the broker password is
# a credential of the service (LoadCredential=), root's file in $creds.
[gateway]
id = "${gateway_id:-$(hostname -s)}"

[mqtt]
host = "127.0.0.1"
port = $mqtt_port
username = "gateway"
password_file = "\${CREDENTIALS_DIRECTORY}/mqtt-password"

[store]
path = "$state/edge-twin.sqlite"

[assess]
model_dir = "$state/models"

[api]
host = "127.0.0.1"
port = $api_port

[broker]
dir = "$broker_dir"
ca_key = "$creds/ca.key"
tls_port = $tls_port
tls_bind = "$tls_bind"
EOF
    )
  fi
  chown root:"$user" "$config"
  chmod 0640 "$config"
}

wrapper_script() {
  local text
  text="$(cat <<EOF
#!/bin/sh
# edge-twin on an installed gateway (deploy/install.sh): always as the service user
# $user, with the gateway's configuration and its broker credential passed on, so that
# nothing the store or broker files hold is ever created by root.
set -e
export EDGE_TWIN_CONFIG="\${EDGE_TWIN_CONFIG:-$config}"
exe="$opt/current/bin/edge-twin"
if [ "\$(id -u)" = 0 ]; then
  if [ -z "\${EDGE_TWIN_MQTT_PASSWORD:-}" ] && [ -r "$creds/mqtt-password" ]; then
    EDGE_TWIN_MQTT_PASSWORD="\$(cat "$creds/mqtt-password")"
    export EDGE_TWIN_MQTT_PASSWORD
  fi
  # The broker's CA and certificate are root's.
  if [ "\${1:-}" = broker ] && [ "\${2:-}" = setup ]; then exec "\$exe" "\$@"; fi
  # (In this directory: a relative path means what it says, if $user may read it.)
  exec runuser -u "$user" -- "\$exe" "\$@"
fi
exec "\$exe" "\$@"
EOF
)"
  if [ ! -f "$wrapper" ] || [ "$(cat "$wrapper")" != "$text" ]; then
    printf '%s\n' "$text" > "$wrapper"
  fi
  chmod 0755 "$wrapper"
}

render_unit() {  # render_unit RELEASE NAME: the release's unit with this install's paths
  sed -e "s#/opt/edge-twin#$opt#g" -e "s#/etc/edge-twin#$etc#g" \
    -e "s#/var/lib/edge-twin#$state#g" -e "s#/usr/local/bin/edge-twin#$wrapper#g" \
    -e "s#^User=edge-twin#User=$user#" -e "s#^Group=edge-twin#Group=$user#" \
    "$1/share/edge-twin/deploy/systemd/$2"
}

install_if_changed() {  # install_if_changed TARGET MODE < content; true if it changed
  local target="$1" mode="$2" new
  new="$(mktemp)"
  cat > "$new"
  if [ -f "$target" ] && cmp -s "$new" "$target"; then rm -f "$new"; return 1; fi
  install -m "$mode" "$new" "$target"
  rm -f "$new"
}

journald_changed=0
system_units() {  # system_units RELEASE
  local name
  for name in "${unit_names[@]}"; do
    render_unit "$1" "$name" > "$units/.$name.new" || return 1
    install_if_changed "$units/$name" 0644 < "$units/.$name.new" || true
    rm -f "$units/.$name.new"
  done
  if install_if_changed "$journald" 0644 < "$1/share/edge-twin/deploy/journald/edge-twin.conf"
  then journald_changed=1; fi
}

broker_restart=0
broker_files() {  # broker_files RELEASE: CA, certificate, drop-in (root); passwd, ACL
  local rel="$1" done
  done="$(EDGE_TWIN_CONFIG="$config" EDGE_TWIN_MQTT_PASSWORD="$(cat "$creds/mqtt-password")" \
    "$rel/bin/edge-twin" broker setup --dropin "$dropin")" || return 1
  if [ -n "$done" ]; then printf '%s\n' "$done"; fi
  # mosquitto re-reads passwords, ACL and certificates on SIGHUP, but not its listeners.
  if grep -q "^wrote " <<< "$done"; then broker_restart=1; fi
  as_service "$rel" broker sync --by install.sh || return 1
}

start_services() {  # start_services RESTART(0|1)
  if ! live_systemd; then
    say "no running systemd here (or --root): units installed in $units, not started"
    return 0
  fi
  systemctl daemon-reload || return 1
  if [ "$journald_changed" = 1 ]; then systemctl restart systemd-journald.service || true; fi
  systemctl enable --now mosquitto.service edge-twin-broker-reload.path \
    edge-twin-backup.timer edge-twin-broker-renew.timer || return 1
  if [ "$broker_restart" = 1 ]; then systemctl restart mosquitto.service || return 1
  else systemctl reload-or-restart mosquitto.service || return 1; fi
  systemctl enable edge-twin.service || return 1
  if [ "$1" = 1 ]; then systemctl restart edge-twin.service
  else systemctl start edge-twin.service; fi
}

service_up() {  # systemd's view: active (READY sent) and still active 30 s later
  live_systemd || return 0
  local i
  for i in $(seq 90); do
    if systemctl is-active --quiet edge-twin.service; then
      sleep 30
      systemctl is-active --quiet edge-twin.service
      return
    fi
    sleep 1
  done
  return 1
}

store_path() {  # where the configuration puts the store (asked of the release)
  (cd / && EDGE_TWIN_CONFIG="$config" runuser -u "$user" -- "$1/bin/python" -c \
    'import os, pathlib
from edge_twin.config import load_config
print(load_config(pathlib.Path(os.environ["EDGE_TWIN_CONFIG"])).store.path)')
}

schema_of() {  # the migrations applied to the store, one line
  (cd / && runuser -u "$user" -- "$python" -c \
    'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(",".join(r[0] for r in c.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")))' \
    "$1")
}

# --- actions ------------------------------------------------------------------------
do_install() {
  system_packages
  service_user
  directories
  local rel was changed=0
  rel="$(build_release)"
  was="$(current_release)"
  if [ -z "$was" ]; then
    switch_to "$rel"; changed=1
  elif [ "$was" != "$rel" ]; then
    say "release $(basename "$was") is installed; this checkout is $(basename "$rel"):" \
      "use --upgrade to move to it (the installed one is checked and kept as it is)"
    rel="$was"
  fi
  wrapper_script
  secrets_and_config
  broker_files "$rel"
  as_service "$rel" migrate
  system_units "$rel"
  start_services "$changed"
  service_up || die "edge-twin.service did not start: journalctl -u edge-twin"
  say "installed $(basename "$rel"); check it with: edge-twin doctor"
}

activate() {  # activate RELEASE: everything after the switch, failing as a whole
  local rel="$1"
  broker_files "$rel" || return 1
  # Under systemd the service migrates the store when it starts (ExecStartPre); here,
  # without it, this does.
  if ! live_systemd; then as_service "$rel" migrate || return 1; fi
  system_units "$rel" || return 1
  start_services 1 || return 1
  service_up || return 1
  healthy "$rel" || return 1
}

do_upgrade() {
  [ -n "$(current_release)" ] || die "nothing installed yet: run without --upgrade first"
  system_packages
  local rel was backup store before trial
  was="$(current_release)"
  rel="$(build_release)"
  if [ "$rel" = "$was" ]; then say "$(basename "$rel") is already current"; return; fi
  # First on a copy of the store: the new release restores it, migrates and checks it.
  backup="$state/backups/pre-upgrade-$(basename "$rel").tar.gz"
  as_service "$was" backup --out "$backup"
  say "trying $(basename "$rel") on a copy of the store ($backup)"
  trial="$state/upgrade-trial"
  rm -rf "$trial"
  install -d -m 0700 -o "$user" -g "$user" "$trial"
  if ! (export EDGE_TWIN_STORE_PATH="$trial/store.sqlite" \
          EDGE_TWIN_ASSESS_MODEL_DIR="$trial/models" \
        && as_service "$rel" restore "$backup" && healthy "$rel"); then
    rm -rf "$trial" "$rel"
    die "$(basename "$rel") failed its check on a copy of the store: still on $(basename "$was")"
  fi
  rm -rf "$trial"
  store="$(store_path "$was")"
  before="$(schema_of "$store")"
  switch_to "$rel"
  wrapper_script
  if ! activate "$rel"; then
    say "$(basename "$rel") failed its health check: rolling back to $(basename "$was")"
    if live_systemd; then systemctl stop edge-twin.service || true; fi
    switch_to "$was"
    if [ "$(schema_of "$store")" != "$before" ]; then
      # The new release migrated the store: the previous one gets the store as it was
      # before the upgrade; the migrated one is kept beside it (what arrived since).
      local kept suffix
      kept="$store.failed-upgrade-$(date -u +%Y%m%dT%H%M%SZ)"
      for suffix in "" -wal -shm; do  # its journal goes with it: committed data
        if [ -e "$store$suffix" ]; then mv "$store$suffix" "$kept$suffix"; fi
      done
      as_service "$was" restore "$backup"
      say "the store before the upgrade is back; the migrated one is kept as $kept"
    fi
    broker_files "$was" || true
    system_units "$was"
    start_services 1 || true
    die "upgrade rolled back to $(basename "$was")"
  fi
  # Only the newest pre-upgrade archives are kept.
  ls -1t "$state"/backups/pre-upgrade-*.tar.gz 2>/dev/null | tail -n +3 | xargs -r rm -f
  say "upgraded to $(basename "$rel"); $(basename "$was") is kept (--rollback)"
}

do_rollback() {
  local previous=""
  if [ -L "$opt/previous" ]; then previous="$(readlink -f "$opt/previous")"; fi
  [ -n "$previous" ] && [ -f "$previous/COMPLETE" ] || die "no previous release to roll back to"
  switch_to "$previous"
  system_units "$previous"
  start_services 1
  say "rolled back to $(basename "$previous") (its store is the one in use: restore the" \
    "pre-upgrade backup in $state/backups if that release cannot read it)"
}

do_uninstall() {
  if live_systemd; then
    systemctl disable --now edge-twin.service edge-twin-backup.timer \
      edge-twin-broker-reload.path 2>/dev/null || true
  fi
  local name
  for name in "${unit_names[@]}"; do rm -f "$units/$name"; done
  rm -f "$wrapper" "$dropin" "$journald"
  rm -rf "$opt"
  if live_systemd; then
    systemctl daemon-reload
    systemctl try-restart mosquitto.service || true
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$etc" "$state"
    if getent passwd "$user" >/dev/null; then userdel "$user"; fi
    say "purged: program, units, configuration, credentials, data and the user $user"
  else
    say "removed the program and its units; kept $etc (configuration, credentials) and" \
      "$state (the patients' data): --uninstall --purge removes them"
  fi
}

case "$action" in
  install) do_install ;;
  upgrade) do_upgrade ;;
  rollback) do_rollback ;;
  uninstall) do_uninstall ;;
esac
