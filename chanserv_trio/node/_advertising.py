"""What each link's peer hears a node offers, kept up to date one name at a time.

A node tells every peer the services it serves itself, and a router also those its
other peers serve themselves (offered by relaying). Names a peer offers by relaying are
never offered further, so routes are one hop and routers linked to each other cannot
advertise in a loop.

Every change is applied name by name: a peer advertising or withdrawing one name costs
one look at that name for each link, however many names there are. (Rebuilding and
sorting every link's whole set on each SERVICE frame made 3,000 names advertised to a
router cost it seconds of CPU: quadratic in the names.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from ..link._link import Link

__all__ = ["Advertising"]


class Advertising:
    """The services a node's peers offer themselves, counted by name, and what each
    link has been told."""

    def __init__(
        self, local: Collection[str], links: Callable[[], Iterable[Link]], *, router: bool
    ) -> None:
        # The names this node serves itself (a live view: the node's services dict).
        self._local = local
        self._links = links
        self.router = router
        #: Name -> how many usable links' peers offer it themselves.
        self.offered: dict[str, int] = {}
        # Link -> the names it counts for in ``offered``.
        self._counted: dict[Link, set[str]] = {}
        #: Names looked at for one link: the work done, for tests and statistics.
        self.evaluations = 0

    def wanted(self, name: str, link: Link) -> bool | None:
        """What ``link``'s peer should hear about ``name``: False (we serve it), True
        (we relay it: a router, and another peer serves it itself), None (nothing)."""
        self.evaluations += 1
        if name in self._local:
            return False
        if self.router:
            others = self.offered.get(name, 0)
            counted = self._counted.get(link)
            if counted is not None and name in counted:
                others -= 1
            if others > 0:
                return True
        return None

    def initial(self, link: Link) -> dict[str, bool]:
        """Everything a new link's peer should hear: proportional to the names there
        are, once per link."""
        names = dict.fromkeys(self._local, False)
        if self.router:
            for name in self.offered:
                if name not in names and self.wanted(name, link):
                    names[name] = True
        return names

    def local_changed(self, name: str) -> None:
        """This node started or stopped serving ``name`` itself."""
        self._tell_everyone(name)

    def peer_changed(self, link: Link, names: Iterable[str]) -> None:
        """``link``'s peer changed its offer of ``names``, or the link went away or
        died (then everything it offered is withdrawn)."""
        if not self.router:
            return
        usable = link.is_alive and not link.going_away
        counted = self._counted.setdefault(link, set())
        if not usable:
            names = set(names) | counted
        for name in names:
            offers = usable and name in link.peer_services and name not in link.peer_relayed
            if offers == (name in counted):
                continue
            if offers:
                counted.add(name)
                self.offered[name] = self.offered.get(name, 0) + 1
            else:
                counted.discard(name)
                left = self.offered[name] - 1
                if left:
                    self.offered[name] = left
                else:
                    del self.offered[name]
            self._tell_everyone(name)
        if not counted:
            del self._counted[link]

    def _tell_everyone(self, name: str) -> None:
        for link in self._links():
            if link.is_alive:
                link.update_advertised(name, self.wanted(name, link))
