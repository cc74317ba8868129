"""edge-twin-ble: scan for health devices, and run the bridge from a config file.

    edge-twin-ble scan [--seconds 10] [--hci usb:0] [--json]
    edge-twin-ble run --config /etc/edge-twin/ble.toml

The config (docs/devices.md):

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca_file = "/var/lib/edge-twin/broker/ca.crt"
    prefix = "et/v1"

    [bridge]
    state = "/var/lib/edge-twin/ble-state.json"
    hci = ""          # "": the adapter through BlueZ (bleak); "usb:0": a dongle (bumble)
    keystore = ""     # with hci: bumble's bonds, a JSON file (BlueZ keeps its own)
    retry_s = 60

    [[device]]
    id = "bp-001"                 # provisioned on the gateway (edge-twin provision)
    address = "A4:C1:38:00:00:01"
    profile = "blood_pressure"    # weight_scale, glucose, cgm, heart_rate, pulse_oximeter
    password_file = "/etc/edge-twin/ble/bp-001.secret"   # its broker password
    user = 1                      # the patient's user index on a shared cuff or scale
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from ble_bridge.bridge import Bridge, BridgedDevice
from ble_bridge.central import Central
from ble_bridge.profiles import PROFILES, SERVICE_NAMES
from ble_bridge.publisher import BrokerAccess, DevicePublisher, read_password
from ble_bridge.state import BridgeState
from edge_twin.errors import EdgeTwinError

app = typer.Typer(help="The Bluetooth bridge: health devices onto the gateway's broker.")
HciOpt = Annotated[
    str, typer.Option("--hci", help="A bumble HCI transport (usb:0); empty: BlueZ via bleak.")
]


@app.command()
def scan(
    seconds: Annotated[float, typer.Option(min=1, max=120)] = 10.0,
    hci: HciOpt = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Health devices advertising nearby, with the profile each would be bridged as."""

    async def run() -> None:
        central, transport = await _central_async(hci)
        try:
            found = await central.scan(seconds)
        finally:
            if transport is not None:
                await transport.close()
        for advert in sorted(found, key=lambda a: -(a.rssi or -999)):
            profiles = [SERVICE_NAMES[s] for s in advert.services if s in SERVICE_NAMES]
            if not profiles:
                continue
            row = {
                "address": advert.address,
                "name": advert.name,
                "profiles": profiles,
                "rssi": advert.rssi,
            }
            print(
                json.dumps(row)
                if as_json
                else f"{advert.address}  {advert.rssi}  {advert.name!r}  {', '.join(profiles)}"
            )

    _guarded(run)


async def _central_async(hci: str, keystore: str = "") -> tuple[Central, Any]:
    if not hci:
        from ble_bridge.bleak_central import BleakCentral

        return BleakCentral(), None
    from bumble.device import Device
    from bumble.hci import Address
    from bumble.transport import open_transport

    from ble_bridge.bumble_central import BumbleCentral

    transport = await open_transport(hci)
    device = Device.with_hci(
        "edge-twin", Address("F0:F1:F2:F3:F4:F5"), transport.source, transport.sink
    )
    await device.power_on()
    return BumbleCentral(device, Path(keystore) if keystore else None), transport


@app.command()
def run(
    config: Annotated[Path, typer.Option(help="The bridge's TOML config.")],
) -> None:
    """Bridge the configured devices until SIGTERM: each is read whenever it is in range
    (pairing the first time), and its values published with its own credential."""
    try:
        settings = tomllib.loads(config.read_text(encoding="utf-8"))
        broker = settings["broker"]
        bridge_cfg = settings.get("bridge", {})
        devices = [
            BridgedDevice(
                str(d["id"]), str(d["address"]), PROFILES[str(d["profile"])], d.get("user")
            )
            for d in settings.get("device", [])
        ]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"{config}: {exc!r} (see edge-twin-ble --help)") from exc
    publishers = {}
    for d, raw in zip(devices, settings.get("device", []), strict=True):
        access = BrokerAccess(
            str(broker.get("host", "127.0.0.1")),
            int(broker.get("port", 8883)),
            str(broker.get("prefix", "et/v1")),
            str(broker.get("ca_file", "")),
            d.device_id,
            read_password(str(raw.get("password_file", ""))),
        )
        publishers[d.device_id] = DevicePublisher(d.device_id, access)

    async def bridge_all() -> None:
        central, transport = await _central_async(
            str(bridge_cfg.get("hci", "")), str(bridge_cfg.get("keystore", ""))
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        state = BridgeState(Path(bridge_cfg.get("state", "ble-state.json")))
        bridge = Bridge(central, dict(publishers), state, time.time)
        for publisher in publishers.values():
            publisher.start()
        try:
            await bridge.run(devices, float(bridge_cfg.get("retry_s", 60.0)), stop)
        finally:
            for publisher in publishers.values():
                publisher.stop()
            if transport is not None:
                await transport.close()

    _guarded(bridge_all)


def _guarded(work: Any) -> None:
    try:
        asyncio.run(work())
    except EdgeTwinError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()
