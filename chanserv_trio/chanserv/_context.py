"""What a source function may ask about the request it serves: :func:`current_request`.

The :class:`~chanserv_trio.Server` sets a context variable around each request's
source function and the tasks that feed its sources' frames (they inherit it), so the
code serving a request can see who asked, from where, with which tags and until when,
without the source function's signature changing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping

import attrs

from ..link._auth import Identity

__all__ = ["RequestContext", "current_request"]


@attrs.frozen
class RequestContext:
    """The request a source function (or its frames) is serving."""

    #: The service name the request was posted to.
    service: str
    #: Who sent it: the identity ``authenticate`` gave the link it came on, or None
    #: (no authentication, or a link this node dialed). Through a router this is the
    #: router's link, the hop nearest to this server.
    identity: Identity | None
    #: The address of the peer the request came from (the router's, through one).
    remote_addr: str
    #: The request's tags (the client's ``tags=``, with chanserv's reserved ones).
    tags: Mapping[str, str]
    #: When the request must be done, on ``trio.current_time()``'s clock: the
    #: client's timeout or the server's ``serving_timeout``, whichever ends first;
    #: None when neither is set.
    deadline: float | None


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar(
    "chanserv_trio.current_request"
)


def current_request() -> RequestContext:
    """The :class:`RequestContext` of the request being served, from inside a source
    function or the frames iterable of one of its sources. Raises ``RuntimeError``
    anywhere else."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "current_request() is only available while a Server serves a request "
            "(inside a source function or its frames)"
        ) from None


def set_current(context: RequestContext) -> contextvars.Token[RequestContext]:
    """Make ``context`` the current request (the Server's side)."""
    return _current.set(context)


def reset_current(token: contextvars.Token[RequestContext]) -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)
