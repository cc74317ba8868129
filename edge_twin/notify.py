"""The service manager's side channel (systemd's sd_notify protocol, no library needed):
READY=1 once the gateway is up, WATCHDOG=1 from the ingest loop while it turns, and
STOPPING=1 on the way down. Without ``NOTIFY_SOCKET`` (not under systemd) nothing is sent.

The watchdog is fed by the ingest thread itself: if that thread dies or hangs, the
feeding stops, systemd (``WatchdogSec=``) kills the process and restarts it, so a
gateway cannot look alive while it no longer stores readings.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        # Fed at a third of systemd's timeout: two missed beats still leave time.
        self.watchdog_every_s = int(usec) / 3e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_beat = -float("inf")
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, message: str) -> None:
        if not self._address:
            return
        address = self._address
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), address)
        except OSError as exc:
            if not self._warned:  # once: a broken channel must not flood the journal
                log.warning("cannot notify the service manager at %s: %s", self._address, exc)
                self._warned = True

    def ready(self) -> None:
        self.send("READY=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def beat(self) -> None:
        """From the ingest loop, each turn; sends at most every ``watchdog_every_s``."""
        if self.watchdog_every_s is None:
            return
        now = time.monotonic()
        if now - self._last_beat >= self.watchdog_every_s:
            self._last_beat = now
            self.send("WATCHDOG=1")
