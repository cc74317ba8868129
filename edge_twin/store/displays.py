"""Bedside displays and buzzers: broker users bound to the patients whose alarms they
show and may acknowledge or pause (the broker's ACL is generated from them:
broker.acl_rules; the gateway checks each command against them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_twin.errors import ProvisioningError
from edge_twin.store.database import Store
from edge_twin.store.devices import check_id


@dataclass(frozen=True, slots=True)
class Display:
    name: str
    patients: frozenset[str]
    disabled: bool = False


def add(store: Store, name: str, patients: Iterable[str], at: float) -> Display:
    check_id("display", name)
    wanted = sorted(set(patients))
    if not wanted:
        raise ProvisioningError("a display shows some patients' alarms: name at least one")
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM displays WHERE name = ?", (name,)).fetchone():
            raise ProvisioningError(f"display {name!r} exists already")
        known = {r[0] for r in conn.execute("SELECT patient_id FROM patients")}
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise ProvisioningError(f"unknown patients: {', '.join(unknown)}")
        conn.execute("INSERT INTO displays (name, created_at) VALUES (?, ?)", (name, at))
        conn.executemany(
            "INSERT INTO display_patients (name, patient_id) VALUES (?, ?)",
            [(name, p) for p in wanted],
        )
    found = get(store, name)
    assert found is not None
    return found


def get(store: Store, name: str) -> Display | None:
    row = store.conn.execute("SELECT disabled FROM displays WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    patients = frozenset(
        r[0]
        for r in store.conn.execute(
            "SELECT patient_id FROM display_patients WHERE name = ?", (name,)
        )
    )
    return Display(name, patients, bool(row[0]))


def listing(store: Store) -> list[Display]:
    names = [r[0] for r in store.conn.execute("SELECT name FROM displays ORDER BY name")]
    return [d for d in (get(store, n) for n in names) if d is not None]


def disable(store: Store, name: str) -> None:
    with store.transaction() as conn:
        if not conn.execute("UPDATE displays SET disabled = 1 WHERE name = ?", (name,)).rowcount:
            raise ProvisioningError(f"no display {name!r}")
