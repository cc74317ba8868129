"""How long the gateway has been without a lasting link to its MQTT broker.

The MQTT adapter tells this what happens to its link (up, dropped, a reconnect that
failed); ``down_for`` says how long the gateway has gone without a link that lasted, which
raises ``gateway_broker_unreachable``. Times are on the monotonic clock, passed in: a step
of the wall clock, or an accelerated one, must not make an outage look long or short.

- A link back for ``STABLE_LINK_S`` is back for good; one that drops again sooner (a
  second client with our id, keepalive lost, a broker restarting in a loop) is the same
  outage going on, not a string of short ones.
- Whether a link lasted is decided when it drops, not when someone asks: the answer must
  not depend on whether a check happened to run during the 30 s it was up.
- A link the gateway drops itself because its store failed (the broker then redelivers
  what was not committed) is not the broker's outage: the store's alarms say what is
  wrong. A reconnect that fails after that is.
"""

from __future__ import annotations

# A link back for this long is back for good.
STABLE_LINK_S = 30.0


class LinkHistory:
    """The link's history; not thread-safe (the ingest thread owns it)."""

    def __init__(self, now: float) -> None:
        self._down_since: float | None = now  # None: up for good, or never lost
        self._up_since: float | None = None  # None: not up now

    def up(self, now: float) -> None:
        self._up_since = now

    def dropped(self, now: float, by_us: bool = False) -> None:
        """The link dropped; ``by_us``: the gateway dropped it (its store failed)."""
        lasted = self._up_since is not None and now - self._up_since >= STABLE_LINK_S
        self._up_since = None
        if by_us:
            self._down_since = None  # the broker was there: only a failed reconnect says not
        elif lasted or self._down_since is None:
            self._down_since = now

    def unreachable(self, now: float) -> None:
        """A connection attempt failed: the broker is away from now, if not already."""
        if self._down_since is None:
            self._down_since = now

    def down_for(self, now: float) -> float | None:
        """Seconds without a lasting link: since the gateway started, or since the link
        last dropped after lasting. While it is back but not yet for good, the outage so
        far (standing still). None while it is up for good, or only dropped by us."""
        down, up = self._down_since, self._up_since
        if down is None:
            return None
        if up is not None:
            return None if now - up >= STABLE_LINK_S else max(0.0, up - down)
        return now - down
