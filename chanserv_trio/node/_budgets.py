"""Budgets a node keeps across its links: what reconnecting cannot reset.

A link's own budgets (its reset token bucket, its windows) start afresh with every new
connection, so a peer that reconnects gets them again: 33 links from one address once
reached 4,974 streams started and reset per second against a per-link budget of 100.
:class:`HostResetBudget` is one token bucket per remote host, shared by every link the
node has or had with that host. Each link consults it, through
``LinkOptions.host_resets``, whenever its peer resets a stream the peer opened; once
the host's bucket is empty, the link whose peer reset is closed with
``ENHANCE_YOUR_CALM``, and a new connection from that host is refused (``ENHANCE_YOUR_CALM``
"too many streams reset or abandoned") until the bucket refills. A link that ends with
streams its peer opened still open (the peer hung up on them rather than reset them)
charges them to the host too (:meth:`HostResetBudget.charge`), so reconnecting and
hanging up costs what resetting does.

A host is the remote IP address without the port; IPv6 addresses count by their /64
prefix (one host usually holds a whole /64, and could otherwise pick a fresh address
per connection), IPv4-mapped IPv6 addresses as the IPv4 address. Unix-socket peers share
one bucket (their addresses name no host; they are local processes, like one host).
Attached links (``Multiplexer.attach``: a stream the application handed us) are exempt:
no remote peer can open them by reconnecting.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

import trio

__all__ = ["HostResetBudget", "host_of"]

#: Buckets kept before refilled ones are dropped (a full bucket is the same as none).
_PRUNE_FROM = 1024


@lru_cache(maxsize=4096)
def host_of(remote_addr: str) -> str | None:
    """The host a link's remote address counts against (None: exempt)."""
    if remote_addr in ("", "attached"):
        return None
    parts = urlsplit(remote_addr)
    host = parts.hostname
    if not host or host == "?":
        return parts.scheme or None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class HostResetBudget:
    """A token bucket per remote host: up to ``burst`` resets at once, ``rate`` a
    second sustained, over all of the host's links together.

    Call it with a link's remote address for each reset its peer made; it answers
    whether the host still had a token (and takes it).
    """

    def __init__(self, burst: int, rate: float) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a host reset budget needs burst >= 1 and rate > 0")
        self.burst = burst
        self.rate = rate
        #: Resets refused (each closed its link with ENHANCE_YOUR_CALM).
        self.refused = 0
        # host -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._prune_at = _PRUNE_FROM

    def __call__(self, remote_addr: str) -> bool:
        host = host_of(remote_addr)
        if host is None:
            return True
        now = trio.current_time()
        tokens, then = self._buckets.get(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[host] = (tokens, now)
            self.refused += 1
            return False
        self._buckets[host] = (tokens - 1.0, now)
        if len(self._buckets) >= self._prune_at:
            self._prune(now)
        return True

    def charge(self, remote_addr: str, streams: int) -> None:
        """The peer at ``remote_addr`` left ``streams`` of the streams it opened open
        when its link ended (it hung up on them instead of resetting them): each costs
        the host a token, as a reset does. The bucket may go into debt, down to
        ``-burst``: an address that abandons many streams at once waits in proportion."""
        host = host_of(remote_addr)
        if host is None or streams <= 0:
            return
        now = trio.current_time()
        tokens, then = self._buckets.get(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        self._buckets[host] = (max(-float(self.burst), tokens - streams), now)
        if len(self._buckets) >= self._prune_at:
            self._prune(now)

    def admits(self, remote_addr: str) -> bool:
        """Whether a new connection from ``remote_addr`` may start a link: its host has a
        token left (one that spent its budget waits until the bucket refills)."""
        # (A bucket refilled to exactly one token by the clock may read a hair short.)
        return not self._buckets or self.tokens(remote_addr) >= 1.0 - 1e-9

    def tokens(self, remote_addr: str) -> float:
        """The tokens left now to the host of ``remote_addr`` (``burst`` when unseen)."""
        host = host_of(remote_addr)
        if host is None or host not in self._buckets:
            return float(self.burst)
        tokens, then = self._buckets[host]
        return min(float(self.burst), tokens + (trio.current_time() - then) * self.rate)

    def __len__(self) -> int:
        """Hosts with a bucket not yet full again."""
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        # Memory stays bounded by the hosts that reset within the last burst / rate
        # seconds, however many hosts come and go; amortised O(1) a reset.
        burst = float(self.burst)
        self._buckets = {
            host: (tokens, then)
            for host, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate < burst
        }
        self._prune_at = max(_PRUNE_FROM, 2 * len(self._buckets))
