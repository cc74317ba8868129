"""Ingest throughput: the gateway's end-to-end rate against the raw paho ceiling.

For each payload shape (one reading per message; SenML packs of 10) and each subscriber
(raw: paho + json.loads, auto-ack; gateway: the full path to a durable SQLite commit, then
ack, then the twin), one run against a fresh private mosquitto:

  1. the subscriber connects once with a persistent session and goes away;
  2. N messages are published at QoS 1 and queue in the broker (not timed);
  3. the subscriber comes back and drains the backlog: timed from connect to the last
     reading received (raw) or durably committed (gateway).

Draining a backlog keeps the publisher off the two cores while timing, and is the
situation that matters: a gateway back after days offline. Each figure is the median of
``--repeat`` runs, raw and gateway interleaved, each ratio the median of the per-run
ratios (the raw ceiling itself moves by tens of percent between runs here). Last line:
one JSON object.

    .venv/bin/python bench/ingest.py [--messages 50000] [--packs 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import load_config
from edge_twin.gateway import Gateway
from edge_twin.store import Store, devices

T0 = 1_790_000_000.0
DEVICES = [f"cgm-{i:03d}" for i in range(20)]
PREFIX = "et/v1"


def payloads(n_messages: int, per_message: int) -> list[tuple[str, bytes]]:
    """Distinct readings (device, device time) so none is a duplicate."""
    out = []
    for i in range(n_messages):
        device = DEVICES[i % len(DEVICES)]
        base = T0 + (i // len(DEVICES)) * per_message * 60.0
        records: list[dict[str, object]] = [
            {
                "n": "glucose",
                "u": "mg/dL",
                "v": 100.0 + (i + k) % 50,
                "t": k * 60.0,
                "seq": i * per_message + k,
            }
            for k in range(per_message)
        ]
        records[0] = {"bn": f"urn:dev:id:{device}:", "bt": base, **records[0]}
        out.append(
            (f"{PREFIX}/dev/{device}/senml", json.dumps(records, separators=(",", ":")).encode())
        )
    return out


def publish_backlog(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-pub",
        protocol=paho.MQTTv5,
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    window: list[paho.MQTTMessageInfo] = []
    for topic, payload in messages:
        window.append(client.publish(topic, payload, qos=1))
        if len(window) >= 500:
            for info in window:
                info.wait_for_publish(30)
            window.clear()
    for info in window:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


def raw_drain(port: int, messages: list[tuple[str, bytes]], per_message: int) -> float:
    expected = len(messages) * per_message
    received = 0
    done = threading.Event()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        nonlocal received
        received += len(json.loads(msg.payload))
        if received >= expected:
            done.set()

    def on_connect(client: paho.Client, *args: object) -> None:
        client.subscribe(f"{PREFIX}/dev/#", options=SubscribeOptions(qos=1))

    def client() -> paho.Client:
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-raw",
            protocol=paho.MQTTv5,
        )
        c.on_connect = on_connect
        c.on_message = on_message
        return c

    first = client()
    first.connect("127.0.0.1", port, clean_start=True, properties=_session_props())
    first.loop_start()
    time.sleep(0.3)
    first.disconnect()
    first.loop_stop()
    publish_backlog(port, messages)
    sub = client()
    t0 = time.perf_counter()
    sub.connect("127.0.0.1", port, clean_start=False, properties=_session_props())
    sub.loop_start()
    if not done.wait(300):
        raise SystemExit(f"raw subscriber got {received} of {expected}")
    elapsed = time.perf_counter() - t0
    sub.disconnect()
    sub.loop_stop()
    return expected / elapsed


def gateway_drain(
    port: int, messages: list[tuple[str, bytes]], per_message: int, workdir: Path
) -> tuple[float, dict[str, object]]:
    expected = len(messages) * per_message
    cfg = load_config(env={})
    cfg = replace(
        cfg,
        mqtt=replace(cfg.mqtt, port=port, client_id="bench-gateway"),
        store=replace(cfg.store, path=workdir / f"bench-{per_message}.sqlite"),
    )
    with Store(cfg.store.path) as store:
        for device in DEVICES:
            devices.provision(store, device, f"pt-{device}", "cgm", T0)
    clock = ManualClock(T0 + 10 * 365 * 86400)  # all readings in the past; none "future"
    with Gateway(cfg, clock, serve_api=False):
        pass  # creates the persistent session, then goes away
    publish_backlog(port, messages)
    gateway = Gateway(cfg, clock, serve_api=False)
    t0 = time.perf_counter()
    gateway.start()
    assert gateway.ingest is not None
    deadline = time.monotonic() + 300
    while gateway.ingest.stats.readings_new < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"gateway stored {gateway.ingest.stats.readings_new} of {expected}")
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    assert gateway.pipeline is not None
    # The twin yields to ingestion during the backlog; time until it has caught up too.
    while gateway.pipeline.estimator.cursor < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"twin applied {gateway.pipeline.estimator.cursor} of {expected}")
        time.sleep(0.002)
    twin_elapsed = time.perf_counter() - t0
    stats = gateway.ingest.stats.snapshot()
    gateway.stop()
    return expected / elapsed, {
        "twin_rps": expected / twin_elapsed,
        "batches": stats["batches"],
        "largest_batch": stats["largest_batch"],
    }


def measure(
    per_message: int, n_messages: int, workdir: Path
) -> tuple[float, float, dict[str, object]]:
    workdir.mkdir(parents=True)
    messages = payloads(n_messages, per_message)
    with PrivateBroker(data_dir=workdir / f"raw-{per_message}") as broker:
        raw = raw_drain(broker.port, messages, per_message)
    with PrivateBroker(data_dir=workdir / f"gw-{per_message}") as broker:
        gateway, detail = gateway_drain(broker.port, messages, per_message, workdir)
    return raw, gateway, detail


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000, help="single-reading messages")
    parser.add_argument("--packs", type=int, default=10_000, help="packs of 10 readings")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    figures: dict[str, float | int | str] = {}
    with tempfile.TemporaryDirectory(prefix="edge-twin-bench-") as tmp:
        for label, per_message, n in (("single", 1, args.messages), ("pack", 10, args.packs)):
            runs = []
            for i in range(args.repeat):
                raw, gateway, detail = measure(per_message, n, Path(tmp) / f"{label}-{i}")
                twin = float(detail["twin_rps"])  # type: ignore[arg-type]
                runs.append((raw, gateway, gateway / raw, twin))
                print(
                    f"{label} run {i + 1}: raw {raw:,.0f}/s gateway {gateway:,.0f}/s"
                    f" ratio {gateway / raw:.3f} {detail}",
                    file=sys.stderr,
                )
            figures[f"raw_{label}_rps"] = round(statistics.median(r[0] for r in runs))
            figures[f"gateway_{label}_rps"] = round(statistics.median(r[1] for r in runs))
            figures[f"ratio_{label}"] = round(statistics.median(r[2] for r in runs), 3)
            figures[f"ratio_{label}_min"] = round(min(r[2] for r in runs), 3)
            # Publish -> durable commit is the rate above; the twin (Kalman filters) has
            # caught up with the whole backlog at this rate:
            figures[f"twin_{label}_rps"] = round(statistics.median(r[3] for r in runs))
    figures.update(
        messages_single=args.messages,
        messages_pack=args.packs,
        repeat=args.repeat,
        qos=1,
        synchronous="FULL",
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
