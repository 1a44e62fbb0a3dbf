"""What a service registry plugs into: :class:`Registry` (see ``EtcdRegistry``), and what
it may ask of the node it runs for: :class:`RegistryNode`.

A multiplexer created with ``registry=`` starts ``registry.run(mpx)`` in its own nursery
when it enters ``async with``; the registry publishes where this node serves what, and
joins the nodes it learns about. It sees the node only through :class:`RegistryNode`,
which :class:`~chanserv_trio.Multiplexer` satisfies with its public API, so a registry
depends on that small surface and not on the multiplexer (nor the other way round).
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["Registry", "RegistryNode"]


class RegistryNode(Protocol):
    """The node a registry runs for, as the registry sees it."""

    @property
    def node_id(self) -> str:
        """A random id naming the node; registries key its entries by it."""
        ...

    @property
    def services(self) -> list[str]:
        """Names the node serves."""
        ...

    @property
    def listening(self) -> list[str]:
        """URLs the node listens on (empty: it serves nobody that dials it)."""
        ...

    @property
    def local_version(self) -> int:
        """Goes up each time :attr:`services` or :attr:`listening` change."""
        ...

    async def wait_local_change(self, version: int) -> int:
        """Wait until :attr:`local_version` differs from ``version``; return it."""
        ...

    @property
    def closing(self) -> bool:
        """True once the node shuts down: it joins nothing any more, so check this
        right before :meth:`join` (with no ``await`` in between)."""
        ...

    async def join(self, url: str) -> object:
        """Link to the node at ``url`` and keep it joined (redialing it) until
        :meth:`leave`; raises :class:`~chanserv_trio.ChanservError` if nobody answers
        there, ``ValueError`` for a URL it cannot dial."""
        ...

    def leave(self, url: str) -> None:
        """Stop redialing ``url`` and close the links joined to it."""
        ...

    def report_error(self, exc: BaseException) -> None:
        """Tell the node's owner about a failure met on the node's behalf."""
        ...


class Registry(Protocol):
    """A source of truth for which nodes serve which services."""

    async def run(
        self, node: RegistryNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep ``node`` registered and joined until cancelled; call
        ``task_status.started()`` once the registry is reachable and watched."""
        ...
