"""The simulator's fault knobs do what they say: measured rates against settings."""

from __future__ import annotations

import json

import pytest

from firmware_sim.home import DeviceClock, Home
from firmware_sim.messages import Message
from firmware_sim.transport import TransportFaults
from tests.conftest import T0, cgm_home

DAYS = 10  # 2,880 CGM samples: rates to within about +/- 0.03


def senml(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.topic.endswith("/senml")]


def record(m: Message) -> dict[str, float]:
    return json.loads(m.payload)[0]  # type: ignore[no-any-return]


def home(**faults: object) -> Home:
    return cgm_home(1, 24 * DAYS, seed=21, faults=TransportFaults(**faults))  # type: ignore[arg-type]


def test_no_faults_means_every_sample_once_in_order() -> None:
    msgs = senml(home().messages())
    seqs = [record(m)["seq"] for m in msgs]
    assert seqs == sorted(seqs)
    assert len(seqs) == len(set(seqs)) > 24 * DAYS * 12 * 0.9  # minus sensor warm-ups


@pytest.mark.parametrize("p", [0.2, 0.4, 0.6])
def test_drop_rate(p: float) -> None:
    sent = len(senml(home().messages()))
    delivered = len(senml(home(p_drop=p).messages()))
    assert 1 - delivered / sent == pytest.approx(p, abs=0.03)


def test_duplicate_rate_and_duplicates_are_identical() -> None:
    msgs = senml(home(p_duplicate=0.2).messages())
    distinct = {m.payload for m in msgs}
    assert len(msgs) / len(distinct) - 1 == pytest.approx(0.2, abs=0.03)


def test_reorder_rate() -> None:
    msgs = senml(home(p_reorder=0.15).messages())
    newest, late = -1, 0
    for m in msgs:
        seq = record(m)["seq"]
        late += seq < newest
        newest = max(newest, seq)
    assert late / len(msgs) == pytest.approx(0.15, abs=0.03)
    assert len(msgs) == len(senml(home().messages()))  # reordered, not lost


def test_offline_periods_send_backfill_bursts() -> None:
    msgs = senml(home(offline_per_day=1.0, offline_minutes=(60.0, 120.0)).messages())
    lags = [m.t - record(m)["bt"] for m in msgs]
    backfilled = [lag for lag in lags if lag > 600]
    # ~1 outage a day of 60-120 min: roughly 10 outages x 90 min / 5 min = ~180 samples late
    assert 60 < len(backfilled) < 400
    assert max(lags) <= 120 * 60
    assert len(msgs) == len(senml(home().messages()))  # held, then delivered: nothing lost


def test_malformed_rate() -> None:
    msgs = senml(home(p_malformed=0.1).messages())

    def bad(m: Message) -> bool:
        try:
            return not isinstance(record(m)["v"], float | int)
        except (ValueError, UnicodeDecodeError, KeyError, IndexError):
            return True

    assert sum(map(bad, msgs)) / len(msgs) == pytest.approx(0.1, abs=0.03)


def test_clock_skew_and_drift_change_payload_times_only() -> None:
    h = cgm_home(1, 24, seed=3, clock=DeviceClock(skew_s=-600.0, drift_ppm=100.0))
    for m in senml(h.messages()):
        offset = record(m)["bt"] - m.t
        assert offset == pytest.approx(-600.0 + 100e-6 * (m.t - T0), abs=1e-6)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="p_drop must be within"):
        TransportFaults(p_drop=1.5)


def test_home_outages_make_every_device_backfill_at_once() -> None:
    faults = TransportFaults(home_outages_per_day=1.0, offline_minutes=(60.0, 120.0))
    h = Home(3, T0, 24 * 5, seed=8, faults=faults, kinds=("wrist", "scale", "bp_cuff"))
    assert len(h.outages) >= 2
    msgs = senml(h.messages())
    storms = 0
    for _, back in h.outages:
        storm = [m for m in msgs if m.t == back]
        # The devices that were on during the outage all send their held data at once.
        storms += len({m.device_id for m in storm}) >= 2 and len(storm) >= 12
    # (an outage inside a longer one reconnects with the longer one)
    assert storms >= 0.8 * len(h.outages)
    assert len(msgs) == len(
        senml(Home(3, T0, 24 * 5, seed=8, kinds=("wrist", "scale", "bp_cuff")).messages())
    )
