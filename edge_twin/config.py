"""Configuration: one TOML file plus ``EDGE_TWIN_<SECTION>_<KEY>`` environment overrides.

Validated once, at start, by ``load_config``. Every problem is reported together, each
with the setting's name, what was wrong and how to fix it, so a field engineer fixes the
file in one pass. See ``docs/configuration.md`` for every setting.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_twin.domain import SIGNALS, Signal
from edge_twin.errors import ConfigError

ENV_PREFIX = "EDGE_TWIN_"


def _rule(
    default: Any, lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = ()
) -> Any:
    """A setting with its default and the bounds it is validated against."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices})


@dataclass(frozen=True)
class GatewaySection:
    id: str = "gateway-1"


@dataclass(frozen=True)
class MqttSection:
    host: str = "127.0.0.1"
    port: int = _rule(1883, 1, 65535)
    client_id: str = "edge-twin-gateway"
    username: str = ""
    password: str = ""
    # Read the password from this file when mqtt.password is empty; ${VAR} is expanded,
    # so a systemd unit's LoadCredential= is "${CREDENTIALS_DIRECTORY}/mqtt-password".
    password_file: str = ""
    keepalive_s: int = _rule(30, 5, 3600)
    # How long the broker keeps our session (and queues QoS 1 messages) while we are down.
    session_expiry_s: int = _rule(7 * 24 * 3600, 0, 4294967295)
    topic_prefix: str = "et/v1"


@dataclass(frozen=True)
class StoreSection:
    path: Path = Path("var/edge-twin.sqlite")
    # FULL: a commit survives power loss (required: we acknowledge only after commit).
    synchronous: str = _rule("FULL", choices=("FULL", "NORMAL"))


@dataclass(frozen=True)
class IngestSection:
    # A batch is committed (and its messages acknowledged) at this size or age.
    batch_max: int = _rule(1000, 1, 100_000)
    batch_max_ms: int = _rule(50, 1, 10_000)
    max_payload_bytes: int = _rule(65_536, 64, 1_048_576)
    # A Nightscout upload (a phone's backlog: a day of CGM is ~300 entries, ~90 KB) larger
    # than this is refused with 413 and not stored: the phone keeps it and sends less.
    max_upload_bytes: int = _rule(1_048_576, 1024, 16_777_216)
    # A reading that arrives this long after it was taken is "backfilled": never alarmed on.
    backfill_after_s: float = _rule(600.0, 1, 86_400)
    # Device clocks ahead of the gateway by more than this are rejected as FUTURE_TIME.
    future_tolerance_s: float = _rule(300.0, 0, 86_400)
    # A device whose clock is off by more than this (either way) has its readings flagged.
    clock_skew_tolerance_s: float = _rule(120.0, 1, 86_400)
    # While the kernel says the clock is not NTP-synchronised, readings ahead of it are
    # held (not rejected as future_time) and applied once it is. False: always judge.
    hold_until_clock_synced: bool = True
    # The quarantine's bounds (store/quarantine.py): a message refused for its size keeps
    # its first bytes only; a device's rejected messages beyond a rate are counted, not
    # stored (and raise device_flooding); a device's quarantine keeps its newest bytes up
    # to a quota; rows older than the retention go (held readings excepted).
    quarantine_keep_bytes: int = _rule(4096, 256, 1_048_576)
    quarantine_per_device_per_min: int = _rule(60, 1, 100_000)
    quarantine_device_max_bytes: int = _rule(4 * 2**20, 65_536, 2**30)
    quarantine_retain_days: float = _rule(30.0, 1, 3650)


DEFAULT_STALE_AFTER_S: dict[str, float] = {s: spec.stale_after_s for s, spec in SIGNALS.items()}


@dataclass(frozen=True)
class EstimateSection:
    stale_after_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_STALE_AFTER_S))


@dataclass(frozen=True)
class AssessSection:
    # Installed risk models (edge-twin model install/rollback); empty: the shipped model.
    model_dir: Path = Path("var/models")
    # A patient's decompensation risk is recomputed at most this often (event time).
    risk_every_s: float = _rule(3600.0, 60, 7 * 86400)


@dataclass(frozen=True)
class AlertSection:
    # The care team's on-call endpoint: every alarm event is POSTed there (empty: off).
    webhook_url: str = ""
    webhook_timeout_s: float = _rule(5.0, 0.1, 60)
    # The HMAC-SHA256 key the webhook's requests are signed with, shared with the receiver
    # (a file the service can read, e.g. /etc/edge-twin/webhook-secret, 0640
    # root:edge-twin); required with webhook_url.
    webhook_secret_file: str = ""
    # An alarm delivery channel failing this long raises alarm_delivery_failing.
    delivery_alarm_after_s: float = _rule(120.0, 10, 86_400)
    # No lasting link to the MQTT broker this long (wall seconds) raises
    # gateway_broker_unreachable: longer than a broker's restart, far shorter than the
    # 15 min after which a silent CGM raises signal_stale.
    broker_alarm_after_s: float = _rule(60.0, 1, 3600)
    # Publish alarm events over MQTT and take acknowledge/pause commands there.
    mqtt: bool = True


@dataclass(frozen=True)
class SyncSection:
    # The FHIR R4 server's base URL (empty: no upstream sync).
    url: str = ""
    # Authentication: a static bearer token, or OAuth2 client credentials at token_url,
    # the client authenticated by its secret or, SMART Backend Services style, by a JWT
    # signed with its private key (PEM file; RS384 or ES384; key_id names the public key
    # the server knows).
    token: str = ""
    token_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    private_key_file: str = ""
    key_id: str = ""
    jwt_alg: str = _rule("RS384", choices=("RS384", "ES384"))
    scope: str = ""
    # The identifier system of the gateway's patient ids upstream (e.g. the hospital's MRN
    # system when they are MRNs); empty: urn:edge-twin:gateway:<gateway.id>:patient.
    patient_system: str = ""
    # A private CA's certificate file for the server's TLS (verification is always on).
    ca_file: str = ""
    timeout_s: float = _rule(30.0, 1, 600)
    # Resources per transaction Bundle.
    batch_max: int = _rule(100, 1, 1000)
    # The care team is told (a technical alarm) when a patient's oldest unsent data is
    # older than this, or something of theirs was refused.
    alarm_after_s: float = _rule(3600.0, 60, 30 * 86400)
    # A wrist stream's hourly summary goes up this long after its hour ends.
    summary_grace_s: float = _rule(600.0, 0, 86400)
    # Readings the upstream has confirmed are deleted from the gateway this many days
    # after they arrived (0: kept for good). At least 35 days: the risk model reads 29.
    retain_days: float = _rule(0.0, 0, 3650)


@dataclass(frozen=True)
class ApiSection:
    host: str = "127.0.0.1"
    port: int = _rule(8080, 0, 65535)  # 0: any free port
    # Host names (comma-separated) the API answers besides loopback and api.host, e.g.
    # "gateway.local,192.168.1.20" when it listens on the home LAN; others get 400.
    allowed_hosts: str = ""
    # A login lasts this long (the session cookie, or a session's bearer token).
    session_hours: float = _rule(12.0, 0.1, 24 * 30)
    # Mark the session cookie Secure: set when the API is served over TLS by a proxy in
    # front of it (with api.tls_cert the gateway serves TLS itself, and marks it anyway).
    secure_cookies: bool = False
    # TLS served by the gateway: a PEM certificate (chain) and its private key; both or
    # neither (empty: plain HTTP, for loopback or behind a TLS proxy).
    tls_cert: str = ""
    tls_key: str = ""
    # How the pages show times and glucose: an IANA time zone, and mg/dL or mmol/L.
    time_zone: str = "UTC"
    glucose_unit: str = _rule("mg/dL", choices=("mg/dL", "mmol/L"))


@dataclass(frozen=True)
class BrokerSection:
    """The gateway's own mosquitto, as `edge-twin broker` and `edge-twin provision`
    manage it (deploy/install.sh sets it up). Empty ``dir``: credentials and ACL are
    managed by hand."""

    # passwd, acl, ca.crt, server.crt and server.key of the broker's drop-in.
    dir: str = ""
    # The gateway CA's private key (root only): needed to issue the server certificate.
    ca_key: str = ""
    # The TLS listener devices use (all interfaces); plain MQTT stays on loopback.
    tls_port: int = _rule(8883, 1, 65535)
    # The TLS listener's address (empty: every interface).
    tls_bind: str = ""
    # The name devices connect to (default: this host's name + ".local", mDNS).
    device_host: str = ""
    # More names or IP addresses for the server certificate, comma-separated.
    cert_names: str = ""
    # PBKDF2-SHA512 iterations of the broker's password hashes (mosquitto_passwd: 101).
    # The passwords are random (192 bits): no count makes guessing them feasible or not;
    # the count costs the broker, single-threaded, time at every connection.
    hash_iterations: int = _rule(20_000, 1_000, 10_000_000)
    # The largest MQTT packet the broker accepts (a SenML pack, its topic and headers).
    max_packet_bytes: int = _rule(131_072, 4096, 16_777_216)


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    store: StoreSection = field(default_factory=StoreSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    estimate: EstimateSection = field(default_factory=EstimateSection)
    assess: AssessSection = field(default_factory=AssessSection)
    alert: AlertSection = field(default_factory=AlertSection)
    api: ApiSection = field(default_factory=ApiSection)
    sync: SyncSection = field(default_factory=SyncSection)
    broker: BrokerSection = field(default_factory=BrokerSection)


_SECTIONS: dict[str, type] = {
    "gateway": GatewaySection,
    "mqtt": MqttSection,
    "store": StoreSection,
    "ingest": IngestSection,
    "estimate": EstimateSection,
    "assess": AssessSection,
    "alert": AlertSection,
    "api": ApiSection,
    "sync": SyncSection,
    "broker": BrokerSection,
}


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply environment overrides, validate everything.

    Raises ``ConfigError`` listing every problem found.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    problems: list[str] = []
    _apply_env(raw, env, problems)
    config = _build(raw, problems, source=str(path) if path else "defaults")
    if bool(config.api.tls_cert) != bool(config.api.tls_key):
        problems.append("api.tls_cert and api.tls_key go together: set both or neither")
    config = _read_password_file(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def _read_password_file(config: Config) -> Config:
    """mqtt.password from mqtt.password_file when it can be read. When it cannot, only
    what connects to the broker fails (``mqtt_password``): the other commands (users,
    backup, provisioning) do not need the gateway's broker credential."""
    mqtt = config.mqtt
    if mqtt.password or not mqtt.password_file:
        return config
    try:
        return replace(config, mqtt=replace(mqtt, password=mqtt_password(mqtt)))
    except ConfigError:
        return config


WEBHOOK_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def redacted(url: str) -> str:
    """The URL as logs may show it: scheme and host, no path, query or credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/..."


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the webhook, or None: http(s) only, and https off the box
    (alarms carry patient data)."""
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return "alert.webhook_url has a port that is not a number"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"alert.webhook_url {redacted(url)} must be an http:// or https:// URL"
    if parts.scheme == "http" and parts.hostname not in WEBHOOK_LOOPBACK:
        return (
            f"alert.webhook_url {redacted(url)} must use https:// (plain http is allowed on"
            " loopback only: alarms carry patient data)"
        )
    return None


def mqtt_password(mqtt: MqttSection) -> str:
    """The gateway's broker password: mqtt.password, or read from mqtt.password_file
    (raises ConfigError, saying why, when it cannot be read)."""
    if mqtt.password or not mqtt.password_file:
        return mqtt.password
    path = Path(os.path.expandvars(mqtt.password_file))
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"mqtt.password_file: cannot read {path} ({exc.strerror}); on an installed gateway"
            " run edge-twin as root (its wrapper passes the credential on) or as the service"
        ) from None


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        section, _, name = rest.partition("_")
        if section not in _SECTIONS or not name:
            # Not ours to judge (e.g. EDGE_TWIN_CONFIG names the file).
            continue
        if section == "estimate" and name.startswith("stale_after_s_"):
            raw.setdefault(section, {}).setdefault("stale_after_s", {})[
                name[len("stale_after_s_") :]
            ] = value
        else:
            raw.setdefault(section, {})[name] = value


def _build(raw: dict[str, Any], problems: list[str], source: str) -> Config:
    built: dict[str, Any] = {}
    for name, section_cls in _SECTIONS.items():
        values = raw.pop(name, {})
        if not isinstance(values, dict):
            problems.append(f"[{name}] must be a table of settings")
            continue
        built[name] = _build_section(name, section_cls, values, problems)
    for unknown in raw:
        hint = _did_you_mean(unknown, list(_SECTIONS))
        problems.append(f"unknown section [{unknown}] in {source}{hint}")
    return Config(**built)


def _build_section(name: str, cls: type, values: dict[str, Any], problems: list[str]) -> Any:
    default = cls()
    known = {f.name: f for f in fields(cls)}
    updates: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{name}.{key}"
        if key not in known:
            hint = _did_you_mean(key, list(known))
            problems.append(f"unknown setting {where}{hint}")
            continue
        current = getattr(default, key)
        try:
            updates[key] = _coerce(where, current, value, known[key].metadata)
        except ValueError as exc:
            env_name = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
            problems.append(f"{where}: {exc} (set it in the [{name}] table or {env_name})")
    return replace(default, **updates)


def _coerce(where: str, current: Any, value: Any, rule: Mapping[str, Any]) -> Any:
    if isinstance(current, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError("must be a table of signal = seconds")
        merged = dict(current)
        for signal, seconds in value.items():
            if signal not in {s.value for s in Signal}:
                raise ValueError(
                    f"unknown signal {signal!r}; use one of {', '.join(s.value for s in Signal)}"
                )
            merged[signal] = _number(float, seconds, lo=1, hi=None)
        return merged
    if isinstance(current, bool):
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if isinstance(current, int | float):
        return _number(type(current), value, lo=rule.get("lo"), hi=rule.get("hi"))
    if isinstance(current, Path):
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty path")
        return Path(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be a string")
    choices = rule.get("choices") or ()
    if choices and value.upper() not in choices:
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
    return value.upper() if choices else value


def _number(kind: type, value: Any, lo: float | None, hi: float | None) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{value!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        span = f"from {lo:g} to {hi:g}" if hi is not None else f">= {lo:g}"
        raise ValueError(f"{value!r} is out of range: use a value {span}")
    return number


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(options)})"
