"""Docs that are tested: what the code has, the docs name."""

import re
from dataclasses import fields
from pathlib import Path

from edge_twin.alert.catalog import CATALOG
from edge_twin.config import _SECTIONS
from edge_twin.domain import RejectReason
from tests.test_cli import EDGE_TWIN_COMMANDS, SIM_COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_every_cli_command_is_documented() -> None:
    text = read("docs/cli.md")
    for command in EDGE_TWIN_COMMANDS:
        assert f"edge-twin {command}" in text, command
    for command in SIM_COMMANDS:
        assert f"firmware-sim {command}" in text, command


def test_every_setting_is_documented() -> None:
    text = read("docs/configuration.md")
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            assert f"`{section}.{f.name}`" in text, f"{section}.{f.name}"


def test_every_reject_reason_is_documented() -> None:
    text = read("docs/wire-contract.md")
    for reason in RejectReason:
        assert f"`{reason.value}`" in text, reason.value


def test_every_alarm_type_is_documented() -> None:
    text = read("docs/alerts.md")
    for name in CATALOG:
        assert f"| `{name}` |" in text, name


def test_every_table_is_documented() -> None:
    migrations = read("edge_twin/store/migrations.py")
    # A table rebuilt under a temporary name and renamed back is documented by its name.
    renamed = set(re.findall(r"ALTER TABLE (\w+) RENAME TO", migrations))
    tables = set(re.findall(r"CREATE TABLE (\w+)", migrations)) - renamed
    schema = read("docs/schema.md")
    for table in tables:
        assert f"`{table}`" in schema, table


def test_readme_quickstart_is_what_ci_runs() -> None:
    readme = read("README.md")
    ci = read(".ci/run")
    assert "./scripts/demo.sh" in readme
    assert "./scripts/test.sh" in readme
    assert "./scripts/test.sh" in ci
