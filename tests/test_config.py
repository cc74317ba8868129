from pathlib import Path

import pytest

from edge_twin.config import load_config
from edge_twin.errors import ConfigError


def test_defaults_are_valid_and_durable() -> None:
    cfg = load_config(env={})
    assert cfg.mqtt.port == 1883
    assert cfg.store.synchronous == "FULL"
    assert cfg.estimate.stale_after_s["glucose"] == 900


def test_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[mqtt]\nport = 1884\nhost = "10.0.0.2"\n[estimate.stale_after_s]\nweight = 3600\n'
    )
    cfg = load_config(
        path, env={"EDGE_TWIN_MQTT_PORT": "1999", "EDGE_TWIN_INGEST_BATCH_MAX_MS": "20"}
    )
    assert cfg.mqtt.port == 1999  # environment beats the file
    assert cfg.mqtt.host == "10.0.0.2"
    assert cfg.ingest.batch_max_ms == 20
    assert cfg.estimate.stale_after_s["weight"] == 3600
    assert cfg.estimate.stale_after_s["glucose"] == 900  # untouched entries keep their default


def test_every_problem_is_reported_with_its_fix(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[mqtt]\nport = 70000\nkeepalive = 5\n[store]\nsynchronous = "OFF"\n[injest]\nx = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"EDGE_TWIN_API_PORT": "eighty"})
    text = str(info.value)
    assert "mqtt.port: 70000 is out of range: use a value from 1 to 65535" in text
    assert "EDGE_TWIN_MQTT_PORT" in text
    assert "unknown setting mqtt.keepalive (did you mean 'keepalive_s'?)" in text
    assert "store.synchronous: 'OFF' is not one of FULL, NORMAL" in text
    assert "unknown section [injest]" in text
    assert "did you mean 'ingest'" in text
    assert "api.port: 'eighty' is not an integer" in text


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_unknown_signal_in_stale_table(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[estimate.stale_after_s]\nglucoze = 60\n")
    with pytest.raises(ConfigError, match="unknown signal 'glucoze'"):
        load_config(path, env={})
