"""Who the peer of a link is: the facts a node judges a credential by, and the verdict.

A node with ``Multiplexer(authenticate=fn)`` calls ``fn(credential, peer)`` for each
link it did not dial, once the peer's HELLO arrived and before anything else of the
peer's is processed or anything of ours is sent; ``fn`` returns an :class:`Identity`
to let the peer in, or None to refuse it (GOAWAY ``AUTHENTICATION_FAILED``).
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import attrs
import trio

from .._errors import AuthenticationFailed

__all__ = ["Authenticator", "Identity", "PeerInfo", "Verdict", "judge", "peer_certificate"]


@attrs.frozen
class Identity:
    """Who a peer is, as the node's ``authenticate`` function decided.

    ``name`` is free text for the application (``current_request().identity.name``,
    ``allow(identity)``); ``may_offer`` lets the peer advertise services that this node
    then uses (and, as a router, relays): without it a peer's SERVICE frames are ignored
    unless its listener was opened with ``accept_offers=True``.
    """

    #: The name the application knows the peer by.
    name: str
    #: The peer's SERVICE frames are trusted (it may offer services through this node).
    may_offer: bool = False


@attrs.frozen
class PeerInfo:
    """What is known of a peer before it is let in, for ``authenticate(credential, peer)``."""

    #: The peer's address as a URL (``tcp://10.0.0.5:51234``; a socket path for
    #: ``unix``), or ``"attached"`` for :meth:`~chanserv_trio.Multiplexer.attach`.
    remote_addr: str
    #: The URL scheme of the listener the peer came in on (``tcp``, ``tls``, ``ws``,
    #: ``wss``, ``unix``), or ``""`` for an attached stream.
    scheme: str
    #: The peer's TLS certificate as :meth:`ssl.SSLSocket.getpeercert` decodes it, when
    #: it presented one that the listener's ``ssl_context`` verified (mutual TLS: the
    #: context needs ``verify_mode = ssl.CERT_REQUIRED`` and the clients' authority).
    certificate: dict[str, Any] | None = None
    #: The same certificate in DER form (also when it was not verified).
    certificate_der: bytes | None = None


#: ``authenticate(credential, peer)``, plain or async: an :class:`Identity`, or None
#: to refuse the peer.
Authenticator: TypeAlias = Callable[
    [bytes, PeerInfo], "Identity | Awaitable[Identity | None] | None"
]


def peer_certificate(stream: trio.abc.Stream) -> tuple[dict[str, Any] | None, bytes | None]:
    """The TLS peer certificate of ``stream`` or of a stream it wraps (a WebSocket over
    TLS): ``(decoded, der)``, each None when there is none."""
    seen = 0
    current: object = stream
    while current is not None and seen < 8:
        seen += 1
        if isinstance(current, trio.SSLStream):
            try:
                der = current.getpeercert(binary_form=True)
                decoded = current.getpeercert()
            except (ValueError, ssl.SSLError, trio.NeedHandshakeError):
                return None, None
            return (decoded or None), der
        current = getattr(current, "transport_stream", None) or getattr(current, "stream", None)
    return None, None


@attrs.frozen
class Verdict:
    """What :func:`judge` decided: the peer's :class:`Identity`, or why it was refused
    (and the exception ``authenticate`` raised, if it did)."""

    identity: Identity | None
    reason: str = ""
    cause: BaseException | None = None


async def judge(authenticate: Authenticator, credential: bytes, peer: PeerInfo) -> Verdict:
    """Run ``authenticate(credential, peer)`` (plain or async) and interpret what it
    returned or raised: an :class:`Identity` lets the peer in; None, a raised
    :class:`~chanserv_trio.AuthenticationFailed` (its reason is kept) or any other
    exception (kept as the cause) refuses it. Used for a link's first HELLO and for
    every resuming one, so that only the identity that owns a link can resume it."""
    reason = "credential refused" if credential else "a credential is required"
    try:
        verdict: object = authenticate(credential, peer)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is not None and not isinstance(verdict, Identity):
            raise TypeError(
                f"authenticate must return an Identity or None, not {type(verdict).__name__}"
            )
    except AuthenticationFailed as exc:
        return Verdict(None, exc.reason or str(exc) or reason)
    except Exception as exc:
        return Verdict(None, "authentication failed", exc)
    if verdict is None:
        return Verdict(None, reason)
    return Verdict(verdict)
