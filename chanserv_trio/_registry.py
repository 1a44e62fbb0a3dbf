"""What a service registry plugs into: :class:`Registry` (see ``EtcdRegistry``).

A multiplexer created with ``registry=`` starts ``registry.run(mpx)`` in its own nursery
when it enters ``async with``; the registry publishes where this node serves what, and
joins the nodes it learns about, using the multiplexer's public API:
``mpx.node_id``, ``mpx.services``, ``mpx.listening``, ``mpx.local_version`` and
``await mpx.wait_local_change(version)``, ``await mpx.join(url)`` and ``mpx.leave(url)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from ._multiplexer import Multiplexer

__all__ = ["Registry"]


class Registry(Protocol):
    """A source of truth for which nodes serve which services."""

    async def run(
        self, mpx: Multiplexer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep ``mpx`` registered and joined until cancelled; call
        ``task_status.started()`` once the registry is reachable and watched."""
        ...
