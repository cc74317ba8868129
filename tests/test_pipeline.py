"""The pipeline's wiring between stages: work a failed stage missed is not forgotten."""

from dataclasses import replace
from pathlib import Path

import pytest

from edge_twin.clock import ManualClock
from edge_twin.config import Config, load_config
from edge_twin.errors import StoreError
from edge_twin.ingest.writer import RawMessage
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, alarms, devices
from firmware_sim import wire
from tests.conftest import T0


def cgm_reading(device: str, t: float, value: float) -> RawMessage:
    payload = wire.senml_pack(device, [("glucose", "mg/dL", t, value, 1)])
    return RawMessage(wire.readings_topic(device), payload, t + 5.0)


def config_for(db_path: Path) -> Config:
    """Defaults, with the store at ``db_path`` and no installed models beside it."""
    cfg = load_config(env={})
    return replace(
        cfg,
        store=replace(cfg.store, path=db_path),
        assess=replace(cfg.assess, model_dir=db_path.parent / "models"),
    )


def test_patients_whose_alarm_evaluation_failed_are_evaluated_with_the_next_data(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_for(db_path)
    with Store(db_path) as store:
        for n in (1, 2):
            devices.provision(store, f"cgm-00{n}", f"pt-00{n}", "cgm", T0)
        pipeline = Pipeline(store, cfg, ManualClock(T0))
        evaluate = pipeline.alerts.on_data
        calls: list[set[str]] = []

        def fails_once(patients: set[str]) -> list[int]:
            calls.append(set(patients))
            if len(calls) == 1:  # a fault no real store gives on demand
                raise StoreError("disk I/O error (injected)")
            return evaluate(patients)

        monkeypatch.setattr(pipeline.alerts, "on_data", fails_once)
        pipeline.after_commit(pipeline.writer.commit([cgm_reading("cgm-001", T0, 300.0)]))
        assert alarms.condition(store.conn, "pt-001", "high") is None
        # the next data is another patient's: pt-001 is evaluated with it all the same
        later = cgm_reading("cgm-002", T0 + 300, 110.0)
        pipeline.after_commit(pipeline.writer.commit([later]))
        assert calls == [{"pt-001"}, {"pt-001", "pt-002"}]
        high = alarms.condition(store.conn, "pt-001", "high")
        assert high is not None
        assert high.present
        assert pipeline.messages_settled == 2


def test_a_device_moved_to_another_patient_by_another_process_is_bound_to_the_new_one(
    db_path: Path,
) -> None:
    from tests.test_cli import cli

    cfg = config_for(db_path)
    env = {"EDGE_TWIN_STORE_PATH": str(db_path)}
    with Store(db_path) as store:
        devices.provision(store, "cgm-001", "pt-001", "cgm", T0)
        pipeline = Pipeline(store, cfg, ManualClock(T0))
        pipeline.writer.commit([cgm_reading("cgm-001", T0, 120.0)])  # binding now cached
        cli("edge-twin", "unprovision", "cgm-001", env=env)
        cli("edge-twin", "provision", "cgm-001", "pt-002", "--type", "cgm", env=env)
        pipeline.writer.commit([cgm_reading("cgm-001", T0 + 300, 121.0)])
        owners = store.conn.execute("SELECT patient_id FROM readings ORDER BY id").fetchall()
    assert owners == [("pt-001",), ("pt-002",)]
