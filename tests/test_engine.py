"""The alarm engine on a temporary store, without a broker: persistence, deduplication,
latching, acknowledgement, pauses, backfilled data and escalation, in event time (the
scenarios through a real broker are tests/test_alarms.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_twin.alert import AlarmEngine, AlarmSettings
from edge_twin.domain import Alarm, AlarmState, Observation
from edge_twin.errors import AlarmError, ConfigError
from edge_twin.store import Store, alarms
from tests.conftest import T0

MIN = 60.0
# The gateway's wall clock: recorded_at; a decision only for escalation, which counts from
# when an alarm started to sound on this clock.
WALL = 5e9


class Engine(AlarmEngine):
    """The engine with its store at hand for the test's reads."""

    def __init__(self, store: Store, wall: float = WALL) -> None:
        super().__init__(store, lambda: wall)
        self.store = store


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    with Store(db_path) as store:
        yield Engine(store)


def see(engine: Engine, kind: str, t: float, present: bool, live: bool = True) -> None:
    engine.observe([Observation("pt-1", kind, t, present, f"{kind} at {t}", {}, (), live)])


def only(engine: Engine, kind: str) -> Alarm:
    (found,) = [a for a in alarms.listing(engine.store.conn, "pt-1", False) if a.alarm_type == kind]
    return found


def events(engine: Engine, alarm: Alarm) -> list[tuple[str, float, float]]:
    return [(e.event, e.at, e.recorded_at) for e in alarms.events(engine.store.conn, alarm.id)]


def test_an_alarm_waits_for_its_persistence_in_event_time(engine: Engine) -> None:
    # high: 30 min of persistence
    see(engine, "high", T0, True)
    see(engine, "high", T0 + 29 * MIN, True)
    assert alarms.listing(engine.store.conn, "pt-1") == []
    see(engine, "high", T0 + 30 * MIN, True)
    high = only(engine, "high")
    assert (high.state, high.raised_at) == (AlarmState.ACTIVE, T0 + 30 * MIN)
    assert events(engine, high) == [("raised", T0 + 30 * MIN, WALL)]


def test_one_open_alarm_per_type_and_a_cleared_medium_one_resolves(engine: Engine) -> None:
    see(engine, "low", T0, True)
    see(engine, "low", T0 + 5 * MIN, True)  # updates the open alarm, no second one
    see(engine, "low", T0 + 10 * MIN, False)
    low = only(engine, "low")
    assert low.state is AlarmState.RESOLVED
    assert [e for e, _, _ in events(engine, low)] == ["raised", "resolved"]


def test_a_high_priority_alarm_latches_until_acknowledged(engine: Engine) -> None:
    see(engine, "urgent_low", T0, True)
    see(engine, "urgent_low", T0 + 10 * MIN, False)
    latched = only(engine, "urgent_low")
    assert (latched.state, latched.condition_present) == (AlarmState.ACTIVE, False)
    engine.acknowledge(latched.id, "nurse-ann", "called the patient", T0 + 12 * MIN)
    done = only(engine, "urgent_low")
    assert done.state is AlarmState.RESOLVED
    assert [e for e, _, _ in events(engine, done)] == [
        "raised",
        "latched",
        "acknowledged",
        "resolved",
    ]
    with pytest.raises(AlarmError, match="already resolved"):
        engine.acknowledge(done.id, "nurse-ann", "", T0 + 13 * MIN)
    with pytest.raises(AlarmError, match="no alarm 999"):
        engine.acknowledge(999, "nurse-ann", "", T0 + 13 * MIN)


def test_backfilled_data_never_raises_but_may_clear(engine: Engine) -> None:
    see(engine, "low", T0, True, live=False)
    assert alarms.listing(engine.store.conn, "pt-1") == []
    see(engine, "low", T0 + MIN, True)
    see(engine, "low", T0 + 2 * MIN, False, live=False)
    assert only(engine, "low").state is AlarmState.RESOLVED


def test_a_paused_type_stays_quiet_then_realerts_if_still_present(engine: Engine) -> None:
    see(engine, "low", T0, True)
    low = only(engine, "low")
    engine.pause("pt-1", "low", T0 + 30 * MIN, "nurse-ann", "eating", T0 + MIN)
    see(engine, "low", T0 + 20 * MIN, True)
    assert only(engine, "low").state is AlarmState.PAUSED
    see(engine, "low", T0 + 31 * MIN, True)
    again = only(engine, "low")
    assert (again.id, again.state, again.raised_at) == (low.id, AlarmState.ACTIVE, T0 + 31 * MIN)
    assert [e for e, _, _ in events(engine, again)] == ["raised", "paused", "re-alerted"]
    with pytest.raises(AlarmError, match="must end in the future"):
        engine.pause("pt-1", "low", T0, "nurse-ann", "", T0 + 32 * MIN)


def test_an_unacknowledged_urgent_alarm_escalates_once(db_path: Path) -> None:
    # Escalation counts on the gateway clock from when the alarm was raised (recorded_at).
    with Store(db_path) as store:
        engine = Engine(store, wall=T0)
        after = AlarmSettings().escalate_after_min * MIN
        see(engine, "urgent_low", T0, True)
        assert engine.escalate(T0 + after - 1) == []
        assert len(engine.escalate(T0 + after)) == 1
        assert engine.escalate(T0 + after + 60) == []
        urgent = only(engine, "urgent_low")
        assert urgent.escalated_at == T0 + after
        assert [e for e, _, _ in events(engine, urgent)] == ["raised", "escalated"]


def test_settings_changed_by_another_process_apply_at_the_next_evaluation(
    engine: Engine, db_path: Path
) -> None:
    # The engine keeps validated settings in memory; a change from another connection (the
    # CLI, the API's thread) bumps the store's version and is read at the next evaluation.
    assert engine.settings("pt-1").low_mgdl == AlarmSettings().low_mgdl
    with Store(db_path) as other:
        AlarmEngine(other, lambda: WALL).set_settings("pt-1", {"low_mgdl": 75.0}, "cli", T0)
    assert engine.settings("pt-1").low_mgdl == 75.0
    assert engine.settings("pt-2").low_mgdl == AlarmSettings().low_mgdl


def audit(engine: Engine) -> list[tuple[str, str | None, str, str]]:
    return [
        (e.action, e.alarm_type, e.outcome, e.actor)
        for e in reversed(alarms.audit_log(engine.store.conn, "pt-1"))
    ]


def test_a_high_priority_alarm_cannot_be_paused_before_it_sounds_and_the_try_is_audited(
    engine: Engine,
) -> None:
    # The attack found on a running gateway: pause urgent_low for a day before any low.
    with pytest.raises(AlarmError, match="only while it sounds"):
        engine.pause("pt-1", "urgent_low", T0 + 20 * MIN, "mallory", "quiet night", T0)
    assert alarms.pause(engine.store.conn, "pt-1", "urgent_low") is None
    assert audit(engine) == [("pause", "urgent_low", "refused", "mallory")]
    # So the low that follows alarms at once.
    see(engine, "urgent_low", T0 + 60 * MIN, True)
    assert only(engine, "urgent_low").state is AlarmState.ACTIVE


def test_pauses_are_bounded_by_priority_and_every_one_is_audited(engine: Engine) -> None:
    see(engine, "urgent_low", T0, True)
    with pytest.raises(AlarmError, match="at most 30 min"):
        engine.pause("pt-1", "urgent_low", T0 + 24 * 60 * MIN, "nurse-ann", "", T0)
    engine.pause("pt-1", "urgent_low", T0 + 30 * MIN, "nurse-ann", "treating", T0)
    assert only(engine, "urgent_low").state is AlarmState.PAUSED
    # A medium one may be paused before it sounds (a sensor change), for up to 4 h.
    engine.pause("pt-1", "signal_stale", T0 + 2 * 60 * MIN, "pt-1", "new sensor", T0)
    with pytest.raises(AlarmError, match="at most 240 min"):
        engine.pause("pt-1", "signal_stale", T0 + 5 * 60 * MIN, "pt-1", "", T0)
    assert audit(engine) == [
        ("pause", "urgent_low", "refused", "nurse-ann"),
        ("pause", "urgent_low", "done", "nurse-ann"),
        ("pause", "signal_stale", "done", "pt-1"),
        ("pause", "signal_stale", "refused", "pt-1"),
    ]
    last = alarms.audit_log(engine.store.conn, "pt-1")[0]
    assert last.old == {"until": T0 + 2 * 60 * MIN, "by": "pt-1"}  # what was in force
    assert last.new["minutes"] == 300.0


def test_every_settings_change_is_audited_with_old_and_new_values(engine: Engine) -> None:
    engine.set_settings("pt-1", {"low_mgdl": 75.0}, "dr-bo", T0)
    with pytest.raises(ConfigError):
        engine.set_settings("pt-1", {"urgent_low_mgdl": 20.0}, "mallory", T0 + MIN)
    assert engine.settings("pt-1").urgent_low_mgdl == AlarmSettings().urgent_low_mgdl
    done, refused = reversed(alarms.audit_log(engine.store.conn, "pt-1"))
    assert (done.action, done.outcome, done.actor) == ("settings", "done", "dr-bo")
    assert (done.old, done.new) == ({}, {"low_mgdl": 75.0})
    assert (refused.outcome, refused.actor) == ("refused", "mallory")
    assert refused.old == {"low_mgdl": 75.0}
    assert refused.new == {"urgent_low_mgdl": 20.0}
    assert "urgent_low_mgdl" in refused.reason
