"""The broker link's history (ingest/link.py), on a clock the test moves: what raises
gateway_broker_unreachable and what does not."""

from __future__ import annotations

from edge_twin.ingest.link import STABLE_LINK_S, LinkHistory


def test_a_start_is_not_an_outage_and_a_lasting_link_is_up() -> None:
    link = LinkHistory(0.0)
    assert link.down_for(0.4) == 0.4  # starting: not yet connected
    link.up(0.5)
    for t in (1.0, 10.0, 29.0):  # back, not yet for good: the outage so far, standing still
        assert link.down_for(t) == 0.5
    assert link.down_for(0.5 + STABLE_LINK_S) is None


def test_a_drop_after_a_lasting_link_starts_a_new_outage() -> None:
    link = LinkHistory(0.0)
    link.up(1.0)
    # Nobody asked while it was up: whether it lasted is decided when it drops.
    link.dropped(100.0)
    assert link.down_for(105.0) == 5.0
    link.unreachable(106.0)  # a reconnect failed: the same outage
    assert link.down_for(170.0) == 70.0


def test_a_flapping_link_is_one_outage_that_grows() -> None:
    link = LinkHistory(0.0)
    link.up(1.0)
    link.dropped(100.0)  # lasted: the outage starts here
    t = 100.0
    for _ in range(20):  # back for 5 s, away for 5 s, for 200 s
        link.up(t + 5.0)
        link.dropped(t + 10.0)
        t += 10.0
    assert link.down_for(t + 1.0) == t + 1.0 - 100.0
    link.up(t + 2.0)
    assert link.down_for(t + 3.0) == t + 2.0 - 100.0  # back: standing still, not cleared
    assert link.down_for(t + 2.0 + STABLE_LINK_S) is None


def test_a_link_dropped_by_the_gateway_for_its_store_is_not_the_brokers_outage() -> None:
    link = LinkHistory(0.0)
    link.up(0.5)  # a store failing from the start: dropped and back every few seconds
    t = 0.5
    for _ in range(30):
        link.dropped(t + 2.0, by_us=True)
        link.up(t + 3.0)
        t += 3.0
        assert link.down_for(t + 1.0) is None
    link.dropped(t + 2.0, by_us=True)
    link.unreachable(t + 3.0)  # and then the broker is away too: that is an outage
    assert link.down_for(t + 63.0) == 60.0
