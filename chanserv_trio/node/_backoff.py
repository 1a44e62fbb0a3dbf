"""Waiting between retries: :class:`Backoff`, the one schedule every retry loop uses.

The multiplexer redials a dropped join with it (``redial_backoff``), the etcd registry
retries etcd with it, and ``chanserv-trio serve --join`` waits with it for a node that
is not up yet.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs

__all__ = ["Backoff"]

#: Draws the jitter when the caller brings no generator of its own. Seeded by the OS, so
#: two processes that lost the same peer at the same moment draw different delays.
_shared_random = random.Random()


@attrs.frozen
class Backoff:
    """Delays that grow from ``initial`` by ``factor`` up to ``ceiling`` seconds, with
    ``jitter``.

    The n-th delay is ``min(initial * factor**n, ceiling)`` (its nominal value) times a
    number drawn uniformly from ``(1 - jitter, 1]``. The default, ``jitter=0.5``, is
    what is known as *equal jitter*: each delay lies between half its nominal value and
    all of it. We chose it over *full jitter* (``jitter=1``: anywhere in ``(0,
    nominal]``) because

    - the numbers keep the meaning callers give them: no delay is longer than
      ``ceiling`` and none shorter than half the nominal one, so a first delay of
      0.5 s never becomes an immediate retry against a peer that has just failed, and
      ``redial_backoff=(first delay, factor, longest delay)`` still says what it did;
    - it breaks the lockstep that matters here: every client of a node that dies loses
      its link at the same instant, and without jitter they would all redial the
      restarted node together, again and again. Spread over half of each interval,
      their dials arrive apart.

    Full jitter spreads the retries wider, which pays off when many clients contend
    for one resource all the time; ours retry a peer that is down, where a floor under
    the delay is worth more than the extra spread. ``jitter=0`` gives the plain
    nominal delays.
    """

    #: The first delay, in seconds (before jitter).
    initial: float
    #: Each nominal delay is the previous one times this.
    factor: float
    #: No delay is longer than this.
    ceiling: float
    #: The part of each delay drawn at random, from 0 (none) to 1 (all of it).
    jitter: float = 0.5

    def __attrs_post_init__(self) -> None:
        if not (0 < self.initial <= self.ceiling and self.factor >= 1):
            raise ValueError(
                "a backoff needs 0 < initial <= ceiling and factor >= 1, got "
                f"initial={self.initial}, factor={self.factor}, ceiling={self.ceiling}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction from 0 to 1, got {self.jitter}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays of one run of retries, without end; take a new iterator after a
        success, so the next failure starts again from ``initial``.

        ``rng`` draws the jitter: pass a seeded ``random.Random`` for delays that are
        the same on every run (tests); by default one shared generator seeded by the
        operating system.
        """
        draw = (_shared_random if rng is None else rng).random
        nominal = self.initial
        while True:
            yield nominal * (1.0 - self.jitter * draw())
            nominal = min(nominal * self.factor, self.ceiling)
