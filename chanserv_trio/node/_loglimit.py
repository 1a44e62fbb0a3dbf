"""Warnings a peer can cause once per connection, logged at a bounded rate.

A flood of connections that fail their handshake, or that arrive over ``max_links``,
would otherwise write a WARNING each: the log would grow as fast as an attacker
connects. :class:`LogLimit` lets a burst through per interval and counts the rest; the
first warning of a later interval says how many were left out.
"""

from __future__ import annotations

import logging

import trio

__all__ = ["LogLimit"]


class LogLimit:
    """At most ``burst`` warnings per ``interval`` seconds (trio's clock) on ``logger``."""

    def __init__(self, logger: logging.Logger, *, burst: int = 10, interval: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self._window_start: float | None = None
        self._logged = 0
        #: Warnings left out in the current interval.
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` as a WARNING unless this interval's burst is spent."""
        now = trio.current_time()
        start = self._window_start
        if start is None or now - start >= self.interval:
            if self.suppressed:
                self.logger.warning(
                    "%d more such warnings were not logged in %.0f s (at most %d are "
                    "logged each %g s)",
                    self.suppressed,
                    now - start if start is not None else 0.0,
                    self.burst,
                    self.interval,
                )
            self._window_start = now
            self._logged = 0
            self.suppressed = 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.warning(message, *args)
        else:
            self.suppressed += 1
