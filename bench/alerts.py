"""Glucose alarms on a held-out simulated cohort, against the simple alternatives, and the
latency from a reading's publish to its alarm's publication under load.

Accuracy (event time, no broker: the gateway's own TwinEstimator + AlertStage + engine on
a real SQLite file, fed each CGM reading as it would arrive): for every true
hypoglycaemia (the simulator's labels: truth below 70 mg/dL for >= 15 min),

    detected     an alarm of the kind was raised from 60 min before the onset to 5 min
                 after it; lead = onset - the first such alarm (minutes)
    false alarm  a raise with no hypoglycaemia starting within 60 min after it (and not
                 during one); counted per patient-day

for the twin's ``predicted_low`` (the gateway's default settings), and on the raw readings
(models/glucose_baselines.py) a threshold-only alarm (a reading below 70 mg/dL) and a
20-min least-squares line projected ahead by the horizon that the predictor's training
tuned to the predictor's own false-alarm budget (shipped/hypo_predictor.json).

Latency (real broker, real gateway): ``--load-patients`` wrist wearables publish
``--load-rps`` readings/s in all (200 by default, some 60 patients' wearables; a patient's
devices send ~3) from another process while ``--low-patients`` CGMs fall into a low
together, a reading every 0.5 s, from a third process that also holds the subscriber (a
bedside display); the gateway has its process to itself, as on a Pi. For each alarm
raised, the time from the publish of the reading that raised it to the alarm event
arriving at the subscriber. Median and p99.

    .venv/bin/python bench/alerts.py [--patients 40] [--days 7] [--seed 7007] [--load-rps 200]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_twin.alert.catalog import AlarmSettings
from edge_twin.alert.engine import AlarmEngine
from edge_twin.alert.stage import AlertStage
from edge_twin.assess import hypo_predictor
from edge_twin.broker import PrivateBroker
from edge_twin.clock import ManualClock
from edge_twin.config import load_config
from edge_twin.domain import Reading, Signal
from edge_twin.estimate.tracker import TwinEstimator
from edge_twin.gateway import Gateway
from edge_twin.store import Store, alarms, devices, quarantine, readings
from firmware_sim import wire
from firmware_sim.home import Home, SimDevice, SimPatient
from firmware_sim.messages import Message
from firmware_sim.publisher import HomePublisher
from models.glucose_baselines import line_alarms, threshold_alarms
from models.hypo import MIX, START, Episode, episodes, score  # the predictor's cohort kind


def twin_alarms(patient: SimPatient, db: Path, settings: AlarmSettings) -> list[float]:
    """Raise times of the twin's predicted_low alarms, replaying the CGM in event time."""
    store = Store(db, "NORMAL")
    cgm = next(d for d in patient.devices if d.device_type == "cgm")
    devices.provision(store, cgm.device_id, patient.patient_id, "cgm", START)
    estimator = TwinEstimator(store)
    stage = AlertStage(store, AlarmEngine(store, time.time, settings), 900.0)
    for t, value, seq in sorted(patient.cgm):
        reading = Reading(patient.patient_id, cgm.device_id, Signal.GLUCOSE, t, value, t + 5, seq)
        with store.transaction() as conn:
            readings.insert(conn, [reading])
        estimator.catch_up()
        stage.on_data({patient for patient, _ in estimator.take_moved()})
    raised = [
        a.raised_at
        for a in alarms.listing(store.conn, patient.patient_id, open_only=False, limit=100_000)
        if a.alarm_type == "predicted_low"
    ]
    store.close()
    return sorted(raised)


def summarise(parts: list[tuple[list[float], list[Episode], float]]) -> dict[str, float]:
    """Scored as the predictor's training scores it (models/hypo.py): detected if raised
    from an hour before the onset to 5 min after; false if no low starts within the hour."""
    sc = score(parts)
    return {
        "sensitivity": round(sc.sensitivity, 3),
        "false_per_patient_day": round(sc.false_per_patient_day, 3),
        "median_lead_min": round(sc.median_lead_min, 1),
        "episodes": sc.episodes,
    }


def accuracy(
    patients: int, days: float, seed: int, settings: AlarmSettings
) -> dict[str, dict[str, float]]:
    home = Home(patients, START, days * 24, seed=seed, mix=MIX, kinds=("cgm",))
    parts: dict[str, list[tuple[list[float], list[Episode], float]]] = {
        "twin": [],
        "threshold": [],
        "line": [],
    }
    line_ahead = float(hypo_predictor.shipped().card["baselines"]["line_ahead_min"])
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(patients):
            p = home.patient(i)
            print(f"patient {i + 1}/{patients}", file=sys.stderr)
            if not p.cgm:
                continue
            lows = episodes(p, START)
            rows = sorted(p.cgm)
            arrivals = [(t, v, t + 5.0) for t, v, _ in rows]  # as twin_alarms delivers them
            span = (rows[-1][0] - rows[0][0]) / 86400.0
            parts["twin"].append((twin_alarms(p, Path(tmp) / f"{i}.sqlite", settings), lows, span))
            parts["threshold"].append((threshold_alarms(arrivals), lows, span))
            parts["line"].append((line_alarms(arrivals, line_ahead), lows, span))
    return {k: summarise(v) for k, v in parts.items()}


def publish_load(
    host: str,
    port: int,
    wrists: list[SimDevice],
    t0: float,
    load_rps: float,
    started_event: Any,
    stop: Any,
) -> None:
    """Packs of 10 heart-rate readings, in time order per device (as firmware sends them),
    at load_rps readings/s in all, until ``stop`` is set."""
    load = HomePublisher(host, port, wrists)
    load.connect()
    started_event.set()
    seq = 0
    started = time.monotonic()
    next_t = {d.device_id: t0 - 600.0 for d in wrists}
    while not stop.is_set():
        for d in wrists:
            ahead = seq * 10 / load_rps - (time.monotonic() - started)
            if ahead > 0 and stop.wait(ahead):
                break
            seq += 1
            t = next_t[d.device_id]
            next_t[d.device_id] = t + 0.1
            records = [("heart_rate", "1/min", t + k * 0.01, 70.0 + k % 5, seq) for k in range(10)]
            payload = wire.senml_pack(d.device_id, records)
            load.send(Message(t, d.device_id, wire.readings_topic(d.device_id), payload))
    load.flush()
    load.close()


def devices_and_display(
    host: str,
    port: int,
    cgms: list[SimDevice],
    t0: float,
    rounds: Any,
    done: Any,
    results: Any,
) -> None:
    """The world outside the gateway, in its own process (as CGMs and a bedside display
    are other machines): for each round number read from ``rounds`` every CGM publishes
    its reading; a subscriber notes when each patient's first alarm of a kind arrives.
    Puts (publish times, arrival times) on ``results`` when ``rounds`` yields None."""
    arrivals: dict[tuple[str, str], float] = {}
    listener = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        if m.topic.endswith("/current"):
            return
        event = json.loads(m.payload)
        key = (event["alarm"]["patient_id"], event["alarm"]["type"])
        if event["event"] == "raised" and key not in arrivals:
            arrivals[key] = time.time()

    listener.on_message = on_message
    listener.connect(host, port)
    listener.subscribe("et/v1/gw/+/alarms/#", qos=1)
    listener.loop_start()
    pub = HomePublisher(host, port, cgms)
    pub.connect()
    published: dict[tuple[str, float], float] = {}
    done.set()
    while (k := rounds.get()) is not None:
        for d in cgms:
            t = t0 + k * 300.0
            payload = wire.senml_pack(d.device_id, [("glucose", "mg/dL", t, FALLING[k], k + 1)])
            published[(d.patient_id, t)] = time.time()
            pub.send(Message(t, d.device_id, wire.readings_topic(d.device_id), payload))
        pub.flush()
        done.set()
    deadline = time.time() + 20
    clinical = ("predicted_low", "low", "urgent_low")
    while time.time() < deadline and sum(k[1] in clinical for k in arrivals) < 3 * len(cgms):
        time.sleep(0.05)
    pub.close()
    listener.loop_stop()
    listener.disconnect()
    results.put((published, arrivals))


FALLING = [120.0, 118, 116, 110, 100, 90, 80, 70, 60, 52, 48]


def latency(low_patients: int, load_patients: int, load_rps: float) -> dict[str, float]:
    """Wall-clock latency through a real broker and gateway, under load: ``load_patients``
    wrist wearables sending ``load_rps`` readings/s in all (one patient's devices send ~3),
    while ``low_patients`` CGMs fall into a low together, a reading every 0.5 s. The
    gateway runs alone in this process; the load, and the CGMs with a subscribing display,
    run in two others."""
    t0 = time.time()
    cgms = [SimDevice(f"cgm-{i:03d}", f"pt-{i:03d}", "cgm") for i in range(1, low_patients + 1)]
    wrists = [
        SimDevice(f"wr-{i:03d}", f"pt-{i:03d}", "wrist")
        for i in range(low_patients + 1, low_patients + 1 + load_patients)
    ]
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        PrivateBroker(data_dir=Path(tmp) / "broker") as broker,
    ):
        cfg = load_config(env={})
        cfg = replace(
            cfg,
            store=replace(cfg.store, path=Path(tmp) / "gw.sqlite"),
            mqtt=replace(cfg.mqtt, host=broker.host, port=broker.port),
            api=replace(cfg.api, port=0),
            assess=replace(cfg.assess, model_dir=Path(tmp) / "models"),
        )
        with Store(cfg.store.path) as store:
            for d in [*cgms, *wrists]:
                devices.provision(store, d.device_id, d.patient_id, d.device_type, t0)
        stop, load_running, done = spawn.Event(), spawn.Event(), spawn.Event()
        rounds, results = spawn.Queue(), spawn.Queue()
        # Gateway time follows the CGMs' readings so that they arrive live (a reading
        # received long after it was taken is backfilled and, rightly, raises nothing).
        clock = ManualClock(t0)
        with Gateway(cfg, clock, serve_api=False):
            load = spawn.Process(
                target=publish_load,
                args=(broker.host, broker.port, wrists, t0, load_rps, load_running, stop),
                daemon=True,
            )
            world = spawn.Process(
                target=devices_and_display,
                args=(broker.host, broker.port, cgms, t0, rounds, done, results),
                daemon=True,
            )
            load.start()
            world.start()
            load_running.wait(timeout=60)
            done.wait(timeout=60)
            time.sleep(1.0)  # let the load reach its rate
            for k in range(len(FALLING)):
                clock.set(t0 + k * 300.0 + 5.0)
                done.clear()
                rounds.put(k)
                done.wait(timeout=30)
                time.sleep(0.5)
            rounds.put(None)
            published, arrivals = results.get(timeout=60)
            world.join(timeout=30)
            stop.set()
            load.join(timeout=30)
            with Store(cfg.store.path) as store:
                print(
                    f"latency: {readings.count(store)} readings stored,"
                    f" quarantined {quarantine.counts_by_reason(store)}",
                    file=sys.stderr,
                )
                raised = {
                    (a.patient_id, a.alarm_type): a.raised_at
                    for a in alarms.listing(store.conn, open_only=False, limit=100_000)
                }
    lat = [
        (arrivals[key] - published[(key[0], t_raised)]) * 1000.0
        for key, t_raised in raised.items()
        if key in arrivals and (key[0], t_raised) in published
    ]
    print(f"latency: {len(raised)} alarms raised, {len(arrivals)} seen over MQTT", file=sys.stderr)
    if not lat:
        return {"latency_p50_ms": math.nan, "latency_p99_ms": math.nan, "latency_alarms": 0}
    return {
        "latency_p50_ms": round(float(np.median(lat)), 1),
        "latency_p99_ms": round(float(np.quantile(lat, 0.99)), 1),
        "latency_alarms": len(lat),
        "load_rps": load_rps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=7007, help="held out: used nowhere else")
    parser.add_argument("--low-patients", type=int, default=30)
    parser.add_argument("--load-patients", type=int, default=20)
    parser.add_argument(
        "--load-rps",
        type=float,
        default=200.0,
        help="background readings/s (a home with four patients sends ~12)",
    )
    parser.add_argument(
        "--predicted-low-probability",
        type=float,
        default=AlarmSettings().predicted_low_probability,
        help="the alarm setting to evaluate (default: the gateway's default)",
    )
    args = parser.parse_args()
    settings = AlarmSettings(predicted_low_probability=args.predicted_low_probability)
    acc = accuracy(args.patients, args.days, args.seed, settings)
    print(
        f"{'':<14} {'sens':>6} {'false/pt-day':>13} {'lead min':>9} {'episodes':>9}",
        file=sys.stderr,
    )
    for name, m in acc.items():
        print(
            f"{name:<14} {m['sensitivity']:6.2f} {m['false_per_patient_day']:13.2f}"
            f" {m['median_lead_min']:9.1f} {m['episodes']:9d}",
            file=sys.stderr,
        )
    lat = latency(args.low_patients, args.load_patients, args.load_rps)
    twin, thr, ext = acc["twin"], acc["threshold"], acc["line"]
    print(
        json.dumps(
            {
                "predicted_low_sensitivity": twin["sensitivity"],
                "predicted_low_false_per_patient_day": twin["false_per_patient_day"],
                "predicted_low_median_lead_min": twin["median_lead_min"],
                "threshold_sensitivity": thr["sensitivity"],
                "threshold_false_per_patient_day": thr["false_per_patient_day"],
                "threshold_median_lead_min": thr["median_lead_min"],
                "line_sensitivity": ext["sensitivity"],
                "line_false_per_patient_day": ext["false_per_patient_day"],
                "line_median_lead_min": ext["median_lead_min"],
                "episodes": twin["episodes"],
                **lat,
                "patients": args.patients,
                "days": args.days,
                "seed": args.seed,
            }
        )
    )


if __name__ == "__main__":
    main()
