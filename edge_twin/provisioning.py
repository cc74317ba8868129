"""Putting a patient's devices and displays on the gateway, in one flow, audited.

``edge-twin provision`` binds the device to its patient, records consent and alarm
thresholds when given, and gives the device its own broker credential: a random password
(192 bits, shown once, as text and as a QR code) whose PBKDF2 hash goes into the store;
the broker's password file and ACL are then written from the store (``broker.dir``), so a
device can write only its own topics and a display read only its patients' alarms. The
broker re-reads them on SIGHUP (deploy/: a path unit does it when the files change).
Rotating gives a new password (the old one stops at the reload); revoking removes the
user. Every step lands in the provisioning log (``edge-twin provision-log``).

Deployment, once (``edge-twin broker setup``, as root): the gateway's CA, the broker's
TLS server certificate (renewed 30 days before it expires) and mosquitto's drop-in.
"""

from __future__ import annotations

import datetime as dt
import getpass
import io
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import qrcode

from edge_twin import pki
from edge_twin.alert import AlarmEngine
from edge_twin.broker import (
    BrokerFiles,
    acl_rules,
    field_config,
    hash_password,
    new_secret,
    password_lines,
    verify_password,
    write_private,
)
from edge_twin.config import Config
from edge_twin.domain import Device, DeviceType
from edge_twin.errors import ProvisioningError
from edge_twin.store import Store, credentials, devices, displays, uploaders, upstream
from edge_twin.store.credentials import Kind


def actor() -> str:
    """Who is at the keyboard: the user behind sudo, else the process's user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def broker_files(cfg: Config) -> BrokerFiles | None:
    return BrokerFiles(Path(cfg.broker.dir)) if cfg.broker.dir else None


def gateway_user(cfg: Config) -> str:
    return cfg.mqtt.username or "gateway"


def device_host(cfg: Config) -> str:
    return cfg.broker.device_host or f"{socket.gethostname()}.local"


@dataclass(frozen=True, slots=True)
class Access:
    """What must be entered on a device (or display): shown once, never stored."""

    username: str
    password: str
    host: str
    port: int
    ca_sha256: str  # the gateway CA's fingerprint: the device trusts this CA only
    ca_cert: str  # where the CA's certificate is, to copy onto the device

    @property
    def uri(self) -> str:
        return (
            f"mqtts://{quote(self.username, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/?ca_sha256={self.ca_sha256}"
        )


def qr(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for a terminal."""
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def write_broker_files(store: Store, cfg: Config) -> BrokerFiles:
    """The broker's password file and ACL, from the store."""
    files = broker_files(cfg)
    if files is None:
        raise ProvisioningError(
            "broker.dir is not set: this gateway's broker credentials are managed by hand"
            " (deploy/install.sh sets broker.dir)"
        )
    if not files.auth.is_dir():
        raise ProvisioningError(f"{files.auth} does not exist: run edge-twin broker setup first")
    hashes = credentials.active_hashes(store)
    shown = {d.name: d.patients for d in displays.listing(store) if not d.disabled}
    write_private(files.passwd, password_lines(hashes))
    write_private(files.acl, acl_rules(cfg.mqtt.topic_prefix, gateway_user(cfg), shown))
    return files


def _issue(store: Store, cfg: Config, username: str, kind: Kind, at: float, by: str) -> Access:
    rotating = credentials.hash_of(store, username) is not None
    password = new_secret()
    hashed = hash_password(password, cfg.broker.hash_iterations)
    action = "credential rotated" if rotating else "credential issued"
    credentials.issue(store, username, kind, hashed, at, by, action)
    files = write_broker_files(store, cfg)
    fingerprint = pki.fingerprint(files.ca_cert) if files.ca_cert.exists() else ""
    return Access(
        username, password, device_host(cfg), cfg.broker.tls_port, fingerprint, str(files.ca_cert)
    )


@dataclass(frozen=True, slots=True)
class Provisioned:
    device: Device
    access: Access | None  # None: no new credential (see ``credential_kept``)
    credential_kept: bool = False  # the device had one: re-running never rotates it


def provision_device(
    store: Store,
    cfg: Config,
    device_id: str,
    patient_id: str,
    device_type: str,
    at: float,
    by: str,
    consent: bool | None = None,
    thresholds: dict[str, object] | None = None,
) -> Provisioned:
    """Bind the device, record consent and thresholds if given, and issue its broker
    credential when the gateway manages its broker (else none: made by hand). The binding
    is checked first: a typo cannot give a credential for another patient's device.
    Provisioning a device again (to add consent or thresholds) keeps its credential:
    ``rotate`` gives a new one."""
    device = devices.provision(store, device_id, patient_id, device_type, at)
    credentials.log(store, at, by, "device provisioned", device_id, f"{device_type} {patient_id}")
    if consent is not None:
        upstream.set_consent(store, patient_id, consent, at, by)
    if thresholds:
        AlarmEngine(store, lambda: at).set_settings(patient_id, thresholds, by, at)
    if broker_files(cfg) is None:
        return Provisioned(device, None)
    if credentials.hash_of(store, device_id) is not None:
        return Provisioned(device, None, credential_kept=True)
    return Provisioned(device, _issue(store, cfg, device_id, Kind.DEVICE, at, by))


def unprovision_device(store: Store, cfg: Config, device_id: str, at: float, by: str) -> None:
    """Unbind the device and revoke its credential: its later messages are refused by
    the broker (and quarantined as unknown_device if they came through anyway)."""
    devices.unprovision(store, device_id)
    credentials.log(store, at, by, "device unprovisioned", device_id)
    if credentials.revoke(store, device_id, at, by) and broker_files(cfg) is not None:
        write_broker_files(store, cfg)


def add_display(
    store: Store, cfg: Config, name: str, patients: list[str], at: float, by: str
) -> tuple[displays.Display, Access | None]:
    display = displays.add(store, name, patients, at)
    credentials.log(store, at, by, "display added", name, " ".join(sorted(display.patients)))
    access = None
    if broker_files(cfg) is not None:
        access = _issue(store, cfg, name, Kind.DISPLAY, at, by)
    return display, access


def disable_display(store: Store, cfg: Config, name: str, at: float, by: str) -> None:
    displays.disable(store, name)
    credentials.log(store, at, by, "display disabled", name)
    if credentials.revoke(store, name, at, by) and broker_files(cfg) is not None:
        write_broker_files(store, cfg)


def rotate(store: Store, cfg: Config, username: str, at: float, by: str) -> Access:
    """A new password for a device or display (the old one stops at the broker's reload)."""
    found = credentials.get(store, username)
    if found is None or found.revoked_at is not None or found.kind is Kind.GATEWAY:
        raise ProvisioningError(f"{username!r} has no device or display credential to rotate")
    return _issue(store, cfg, username, found.kind, at, by)


def revoke(store: Store, cfg: Config, username: str, at: float, by: str) -> None:
    if not credentials.revoke(store, username, at, by):
        raise ProvisioningError(f"{username!r} has no credential to revoke")
    write_broker_files(store, cfg)


@dataclass(frozen=True, slots=True)
class UploaderAccess:
    """What is entered in the phone's uploader app: shown once, never stored."""

    device_id: str
    secret: str
    base_url: str  # the gateway's API, as the app's "Nightscout URL"

    @property
    def xdrip_url(self) -> str:
        """xDrip+'s "Base URL" form: the secret as the URL's user part."""
        scheme, _, rest = self.base_url.partition("://")
        return f"{scheme}://{quote(self.secret, safe='')}@{rest}/api/v1/"


def api_base_url(cfg: Config) -> str:
    scheme = "https" if cfg.api.tls_cert else "http"
    host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::", "") else device_host(cfg)
    return f"{scheme}://{host}:{cfg.api.port}"


def issue_uploader(store: Store, cfg: Config, device_id: str, at: float, by: str) -> UploaderAccess:
    """Give a provisioned device (the phone that relays the patient's CGM) a new upload
    secret, replacing any earlier one; logged."""
    device = devices.get(store, device_id)
    if device is None or device.device_type is not DeviceType.CGM:
        raise ProvisioningError(
            f"{device_id} is not provisioned as a cgm: a phone that uploads the patient's CGM"
            f" is (edge-twin provision {device_id} PATIENT --type cgm)"
        )
    secret = new_secret()
    rotating = any(
        u.device_id == device_id and u.revoked_at is None for u in uploaders.listing(store)
    )
    uploaders.issue(store, device_id, secret, at)
    action = "upload secret rotated" if rotating else "upload secret issued"
    credentials.log(store, at, by, action, device_id, "nightscout")
    return UploaderAccess(device_id, secret, api_base_url(cfg))


def revoke_uploader(store: Store, device_id: str, at: float, by: str) -> None:
    if not uploaders.revoke(store, device_id, at):
        raise ProvisioningError(f"{device_id!r} has no upload secret to revoke")
    credentials.log(store, at, by, "upload secret revoked", device_id, "nightscout")


def sync_gateway_credential(store: Store, cfg: Config, at: float, by: str) -> bool:
    """Make the store hold the hash of the gateway's own password (mqtt.password, from
    its credential file) and write the broker's files; True if the hash changed."""
    password = cfg.mqtt.password
    if not password:
        raise ProvisioningError(
            "mqtt.password (or mqtt.password_file) is empty: the gateway needs its own"
            " broker credential"
        )
    user = gateway_user(cfg)
    current = credentials.hash_of(store, user)
    changed = current is None or not verify_password(password, current)
    if changed:
        hashed = hash_password(password, cfg.broker.hash_iterations)
        action = "credential issued" if current is None else "credential rotated"
        credentials.issue(store, user, Kind.GATEWAY, hashed, at, by, action)
    write_broker_files(store, cfg)
    return changed


def setup_broker(cfg: Config, dropin: Path, now: dt.datetime) -> list[str]:
    """The gateway's CA (once), the broker's server certificate (when missing or within
    30 days of expiry) and mosquitto's drop-in; what was done, one line each. Run as
    root at install and upgrade (deploy/install.sh); idempotent."""
    files = broker_files(cfg)
    if files is None or not cfg.broker.ca_key:
        raise ProvisioningError("broker.dir and broker.ca_key must be set to set up the broker")
    ca_key = Path(cfg.broker.ca_key)
    done: list[str] = []
    files.dir.mkdir(parents=True, exist_ok=True)
    files.auth.mkdir(exist_ok=True)
    if not files.ca_cert.exists():
        pki.create_ca(files.ca_cert, ca_key, cfg.gateway.id, now)
        done.append(f"created the gateway CA {files.ca_cert} ({pki.fingerprint(files.ca_cert)})")
    if pki.needs_renewal(files.server_cert, now):
        host = socket.gethostname()
        names = [device_host(cfg), host, "localhost"]
        extra = [n.strip() for n in cfg.broker.cert_names.split(",") if n.strip()]
        addresses = ["127.0.0.1", *(n for n in extra if _is_address(n))]
        names += [n for n in extra if not _is_address(n)]
        issued = pki.issue_server_cert(
            files.ca_cert,
            ca_key,
            files.server_cert,
            files.server_key,
            list(dict.fromkeys(names)),
            addresses,
            now,
        )
        done.append(f"issued the broker's certificate until {issued.not_after:%Y-%m-%d}")
    text = field_config(
        files, cfg.broker.tls_port, cfg.mqtt.port, cfg.broker.max_packet_bytes, cfg.broker.tls_bind
    )
    if not dropin.exists() or dropin.read_text(encoding="utf-8") != text:
        dropin.parent.mkdir(parents=True, exist_ok=True)
        write_private(dropin, text, 0o644)
        done.append(f"wrote {dropin}")
    return done


def _is_address(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except OSError:
        return False
    return True
