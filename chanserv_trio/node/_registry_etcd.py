"""Service discovery for fleets through etcd: :class:`EtcdRegistry`.

A serving node writes one key per service it offers, ``{prefix}{service}/{node_id}``,
whose value is the URL where peers reach it, all under one etcd lease that it keeps
alive. Leaving ``async with Multiplexer`` revokes the lease, so the keys vanish at
once; a node that crashes stops renewing it, so its keys vanish within the lease TTL.
A joining node reads the prefix, watches it, joins every address it finds and leaves
an address once no key names it any more.

It talks to etcd's v3 HTTP/JSON gateway (keys and values in base64, 64-bit numbers as
strings) with ``httpx`` on Trio. Every failure, from the network or from etcd, is
mapped in one place (:class:`_EtcdClient`) to :class:`RegistryError`; while running,
the registry reports errors to ``on_error`` and retries with backoff, so an etcd
restart does not take the node down.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import ChanservError
from ._backoff import Backoff
from ._registry import RegistryNode

if TYPE_CHECKING:
    import httpx

__all__ = ["EtcdRegistry", "RegistryError"]

#: What the registry meets while running (unreachable etcd, failed joins): WARNING.
logger = logging.getLogger("chanserv_trio.registry")

#: Delays between retries of failed etcd requests (renewals: at most ``ttl / 3``).
_RETRY = Backoff(0.1, 2.0, 5.0)

#: gRPC status code etcd returns for an unknown (expired or revoked) lease.
_NOT_FOUND = 5


class RegistryError(ChanservError):
    """The registry could not be reached, or refused a request.

    ``code`` is etcd's gRPC status code when etcd answered with an error (5: not found,
    14: unavailable, ...), else None; ``__cause__`` is the network error, if any.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key starting with ``prefix`` (etcd's range end)."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # every key


class _EtcdClient:
    """The few etcd v3 gateway calls the registry needs; raises only :class:`RegistryError`."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str) -> None:
        import httpx

        self.http = http
        self.endpoint = endpoint
        self._network_errors = (httpx.HTTPError,)
        self._watch_timeout = httpx.Timeout(http.timeout.connect, read=None)

    def _unreachable(self, path: str, exc: Exception) -> RegistryError:
        reason = str(exc) or type(exc).__name__
        return RegistryError(f"etcd at {self.endpoint} unreachable ({path}): {reason}")

    def _unreadable(self, path: str, exc: Exception) -> RegistryError:
        return RegistryError(f"etcd at {self.endpoint} sent an unreadable {path} answer: {exc!r}")

    def _check(self, path: str, status: int, body: Any) -> dict[str, Any]:
        """``body`` if it is a successful answer, else the :class:`RegistryError` it means."""
        if isinstance(body, dict) and "error" in body:
            # The gateway's error body: {"error": ..., "message": ..., "code": ...}; on
            # the watch stream the same object sits under "error".
            details = body["error"] if isinstance(body["error"], dict) else body
            message = details.get("message") or details.get("error") or "error"
            code = details.get("code")
            raise RegistryError(
                f"etcd refused {path}: {message}", code if isinstance(code, int) else None
            )
        if status != 200 or not isinstance(body, dict):
            raise RegistryError(f"etcd at {self.endpoint} answered {path} with HTTP {status}")
        return body

    async def call(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        """POST ``request`` to ``path``; the decoded JSON answer."""
        try:
            response = await self.http.post(path, json=request)
        except self._network_errors as exc:
            raise self._unreachable(path, exc) from exc
        body = _json_or_none(response.content) if response.content else {}
        return self._check(path, response.status_code, body)

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: its id and its TTL in seconds (etcd may raise it)."""
        path = "/v3/lease/grant"
        body = await self.call(path, {"TTL": ttl})
        try:
            return int(body["ID"]), int(body.get("TTL", ttl))
        except (KeyError, ValueError, TypeError) as exc:
            raise self._unreadable(path, exc) from exc

    async def keepalive(self, lease: int) -> bool:
        """Renew ``lease``; False when etcd no longer knows it (it expired)."""
        body = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        result = body.get("result")
        return isinstance(result, dict) and int(result.get("TTL", 0)) > 0

    async def revoke(self, lease: int) -> None:
        """Drop ``lease`` and every key attached to it (already gone is fine)."""
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease)})
        except RegistryError as exc:
            if exc.code != _NOT_FOUND:
                raise

    async def put(self, key: str, value: str, lease: int) -> None:
        await self.call(
            "/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": str(lease)}
        )

    async def delete(self, key: str) -> None:
        await self.call("/v3/kv/deleterange", {"key": _b64(key)})

    async def range_prefix(self, prefix: str) -> tuple[int, dict[str, str]]:
        """Every key under ``prefix`` with its value, and the revision they were read at."""
        path = "/v3/kv/range"
        raw = prefix.encode()
        body = await self.call(path, {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))})
        try:
            revision = int(body["header"]["revision"])
            kvs = {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in body.get("kvs", [])}
        except (KeyError, ValueError, TypeError) as exc:
            raise self._unreadable(path, exc) from exc
        return revision, kvs

    async def watch(
        self,
        prefix: str,
        start_revision: int,
        on_created: Callable[[], None],
        on_events: Callable[[int, list[tuple[str, str | None]]], None],
    ) -> None:
        """Watch ``prefix`` from ``start_revision`` until the stream fails.

        ``on_created()`` runs once etcd confirmed the watch; ``on_events(revision,
        [(key, value, or None for a deletion), ...])`` gets each batch. Always ends
        with :class:`RegistryError`: etcd closing the stream or cancelling the watch
        (its history was compacted) counts as a failure too.
        """
        path = "/v3/watch"
        raw = prefix.encode()
        request = {
            "create_request": {
                "key": _b64(raw),
                "range_end": _b64(_prefix_end(raw)),
                "start_revision": str(start_revision),
            }
        }
        try:
            # A watch is quiet while nothing changes: no read timeout on this stream.
            async with self.http.stream(
                "POST", path, json=request, timeout=self._watch_timeout
            ) as response:
                if response.status_code != 200:
                    content = await response.aread()
                    self._check(path, response.status_code, _json_or_none(content))
                failure: RegistryError | None = None
                # Stopping with a cancellation (it surfaces inside httpx's innermost read)
                # unwinds httpx's chain of async generators; raising here would leave
                # them suspended, for the garbage collector to find.
                with trio.CancelScope() as reading:
                    async for line in response.aiter_lines():
                        if failure is not None or not line.strip():
                            continue
                        try:
                            self._watch_message(prefix, path, line, on_created, on_events)
                        except RegistryError as exc:
                            failure = exc
                            reading.cancel()
                if failure is not None:
                    raise failure
        except self._network_errors as exc:
            raise self._unreachable(path, exc) from exc
        raise RegistryError(f"etcd at {self.endpoint} closed the watch on {prefix!r}")

    def _watch_message(
        self,
        prefix: str,
        path: str,
        line: str,
        on_created: Callable[[], None],
        on_events: Callable[[int, list[tuple[str, str | None]]], None],
    ) -> None:
        result = self._check(path, 200, _json_or_none(line.encode())).get("result", {})
        try:
            if result.get("canceled"):
                compacted = result.get("compact_revision")
                reason = (
                    f"history compacted up to revision {compacted}"
                    if compacted
                    else result.get("cancel_reason") or "the watch was cancelled"
                )
                raise RegistryError(f"etcd ended the watch on {prefix!r}: {reason}")
            if result.get("created"):
                on_created()
            events = result.get("events")
            if not events:
                return
            revision = int(result["header"]["revision"])
            batch: list[tuple[str, str | None]] = []
            for event in events:
                key = _unb64(event["kv"]["key"])
                if event.get("type") == "DELETE":
                    batch.append((key, None))
                else:
                    batch.append((key, _unb64(event["kv"].get("value", ""))))
        except (AttributeError, KeyError, ValueError, TypeError) as exc:
            raise self._unreadable(path, exc) from exc
        on_events(revision, batch)


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


class EtcdRegistry:
    """Publish this node's services in etcd and join the nodes published there.

    Pass it to ``cs.Multiplexer(registry=...)``::

        registry = cs.EtcdRegistry("http://127.0.0.1:2379", prefix="/myapp/")
        async with cs.Multiplexer(registry=registry) as mpx:
            await mpx.listen("tcp://10.0.0.5:7000")

    - ``endpoint``: etcd's client URL (``http://``, ``https://``, or ``etcd://`` which
      means ``http://``).
    - ``prefix``: the key prefix shared by every node of one fleet.
    - ``ttl``: seconds a crashed node's entries outlive it (the lease TTL, rounded up
      to whole seconds; renewed every ``ttl / 3``).
    - ``advertise``: the URL peers should dial; default: the first URL the node
      listens on (give it when that is a wildcard or NAT address).
    - ``join``: watch the prefix and join every node found there.
    - ``on_error``: called with each :class:`RegistryError` (and failed join) met while
      running; default: the multiplexer's ``on_error``.

    Entering the multiplexer raises :class:`RegistryError` if etcd cannot be reached;
    later failures are reported and retried with backoff.
    """

    def __init__(
        self,
        endpoint: str = "http://127.0.0.1:2379",
        *,
        prefix: str = "/chanserv_trio/",
        ttl: float = 10.0,
        advertise: str | None = None,
        join: bool = True,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        try:
            import httpx  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                "EtcdRegistry talks to etcd with httpx: pip install 'chanserv-trio[etcd]'"
            ) from exc
        if endpoint.startswith("etcd://"):
            endpoint = "http://" + endpoint.removeprefix("etcd://")
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"etcd endpoint must be an http:// or https:// URL: {endpoint!r}")
        if not prefix:
            raise ValueError("the etcd key prefix must not be empty")
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix
        self.ttl = ttl
        self.advertise = advertise
        self.join = join
        self.on_error = on_error

    def __repr__(self) -> str:
        return f"<EtcdRegistry {self.endpoint} prefix={self.prefix!r}>"

    @property
    def _lease_ttl(self) -> int:
        return max(1, math.ceil(self.ttl))

    def _request_timeout(self) -> float:
        return min(5.0, max(1.0, self.ttl / 3))

    async def run(
        self, node: RegistryNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep ``node`` published and joined until cancelled (the multiplexer starts it).

        Reports ready once etcd answered the first read and, with ``join``, the watch
        is in place; raises :class:`RegistryError` before that if etcd is unreachable.
        """
        import httpx

        hook = self.on_error or node.report_error

        def report(exc: BaseException) -> None:
            logger.warning("registry %s: %s", self.endpoint, exc)
            hook(exc)

        # Straight to etcd: proxy settings from the environment are not for it.
        async with httpx.AsyncClient(
            base_url=self.endpoint, timeout=self._request_timeout(), trust_env=False
        ) as http:
            etcd = _EtcdClient(http, self.endpoint)
            revision, snapshot = await etcd.range_prefix(self.prefix)
            async with trio.open_nursery() as nursery:
                if self.join:
                    watcher = _Watcher(self, node, etcd, report, nursery)
                    await nursery.start(watcher.run, revision, snapshot)
                publisher = _Publisher(self, node, etcd, report)
                nursery.start_soon(publisher.run)
                task_status.started()


class _Publisher:
    """Keeps ``{prefix}{service}/{node_id} -> address`` in etcd under a live lease."""

    def __init__(
        self,
        registry: EtcdRegistry,
        node: RegistryNode,
        etcd: _EtcdClient,
        report: Callable[[BaseException], object],
    ) -> None:
        self.registry = registry
        self.node = node
        self.etcd = etcd
        self.report = report
        self.lease: int | None = None
        self.interval = registry.ttl / 3
        self.renew_at = math.inf
        #: What etcd holds for us now (as far as we know).
        self.published: dict[str, str] = {}

    def desired(self) -> dict[str, str]:
        listening = self.node.listening
        if not listening:
            return {}  # only a listening node serves anyone
        address = self.registry.advertise or listening[0]
        prefix, node = self.registry.prefix, self.node.node_id
        return {f"{prefix}{service}/{node}": address for service in self.node.services}

    async def sync(self, desired: dict[str, str]) -> None:
        if desired and self.lease is None:
            self.lease, granted = await self.etcd.grant(self.registry._lease_ttl)
            self.interval = min(self.registry.ttl, granted) / 3
            self.renew_at = trio.current_time() + self.interval
            self.published.clear()
        for key in [key for key in self.published if key not in desired]:
            await self.etcd.delete(key)
            del self.published[key]
        for key, address in desired.items():
            if self.published.get(key) != address:
                assert self.lease is not None
                try:
                    await self.etcd.put(key, address, self.lease)
                except RegistryError as exc:
                    if exc.code == _NOT_FOUND:  # the lease expired while etcd was away
                        self.lease = None
                    raise
                self.published[key] = address

    async def run(self) -> None:
        # A lease must be renewed within its TTL: retry at least every ttl / 3.
        ceiling = max(_RETRY.initial, min(_RETRY.ceiling, self.registry.ttl / 3))
        retry = attrs.evolve(_RETRY, ceiling=ceiling)
        delays = retry.delays()
        try:
            while True:
                version = self.node.local_version
                try:
                    await self.sync(self.desired())
                    if self.lease is not None and trio.current_time() >= self.renew_at:
                        if not await self.etcd.keepalive(self.lease):
                            # etcd was away longer than the TTL: register again at once.
                            self.report(RegistryError("the etcd lease expired; registering again"))
                            self.lease = None
                            continue
                        self.renew_at = trio.current_time() + self.interval
                    delays = retry.delays()  # the next failure waits the first delay again
                except RegistryError as exc:
                    self.report(exc)
                    await trio.sleep(next(delays))
                    continue
                with trio.move_on_at(self.renew_at if self.lease is not None else math.inf):
                    await self.node.wait_local_change(version)
        finally:
            await self._revoke()

    async def _revoke(self) -> None:
        if self.lease is None:
            return
        # Our keys should vanish now, not a TTL from now; bounded, as etcd may be gone too.
        with trio.CancelScope(shield=True), trio.move_on_after(self.registry._request_timeout()):
            try:
                await self.etcd.revoke(self.lease)
            except RegistryError as exc:
                self.report(exc)
        self.lease = None


class _Watcher:
    """Mirrors the prefix and keeps the multiplexer joined to every address in it."""

    def __init__(
        self,
        registry: EtcdRegistry,
        node: RegistryNode,
        etcd: _EtcdClient,
        report: Callable[[BaseException], object],
        nursery: trio.Nursery,
    ) -> None:
        self.registry = registry
        self.node = node
        self.etcd = etcd
        self.report = report
        self.nursery = nursery
        self.revision = 0
        #: key -> address, for other nodes' keys.
        self.keys: dict[str, str] = {}
        #: address -> the keys naming it.
        self.holders: dict[str, set[str]] = {}
        #: address -> the task joining it (or done joining it).
        self.joins: dict[str, trio.CancelScope] = {}
        self.delays = _RETRY.delays()

    def _is_own(self, key: str, address: str) -> bool:
        node = key.rpartition("/")[2]
        return (
            node == self.node.node_id
            or address == self.registry.advertise
            or address in self.node.listening
        )

    def _set(self, key: str, address: str | None, touched: set[str]) -> None:
        old = self.keys.pop(key, None)
        if old is not None:
            self.holders[old].discard(key)
            if not self.holders[old]:
                del self.holders[old]
            touched.add(old)
        if address is not None and not self._is_own(key, address):
            self.keys[key] = address
            self.holders.setdefault(address, set()).add(key)
            touched.add(address)

    def _reconcile(self, touched: set[str]) -> None:
        for address in sorted(touched):
            wanted = address in self.holders
            if wanted and address not in self.joins:
                scope = trio.CancelScope()
                self.joins[address] = scope
                self.nursery.start_soon(self._join, address, scope)
            elif not wanted and address in self.joins:
                self.joins.pop(address).cancel()
                self.node.leave(address)

    def apply_snapshot(self, revision: int, kvs: dict[str, str]) -> None:
        touched: set[str] = set()
        for key in [key for key in self.keys if key not in kvs]:
            self._set(key, None, touched)
        for key, address in kvs.items():
            if self.keys.get(key) != address:
                self._set(key, address, touched)
        self.revision = revision
        self._reconcile(touched)

    def apply_events(self, revision: int, batch: list[tuple[str, str | None]]) -> None:
        touched: set[str] = set()
        for key, address in batch:
            self._set(key, address, touched)
        self.revision = revision
        self._reconcile(touched)

    async def _join(self, address: str, scope: trio.CancelScope) -> None:
        with scope:
            for delay in _RETRY.delays():
                if self.node.closing:
                    return  # checked right before joining: nothing awaits in between
                try:
                    await self.node.join(address)
                except ChanservError as exc:
                    self.report(exc)
                    await trio.sleep(delay)
                    continue
                except ValueError as exc:  # not a URL we can dial: nothing to retry
                    self.report(RegistryError(f"cannot join {address!r} from etcd: {exc}"))
                    return
                # The key may have vanished while the dial was finishing.
                if address not in self.holders:
                    self.node.leave(address)
                return

    async def run(
        self,
        revision: int,
        snapshot: dict[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.apply_snapshot(revision, snapshot)
        ready = False

        def created() -> None:
            nonlocal ready
            self.delays = _RETRY.delays()  # the watch is up again
            if not ready:
                ready = True
                task_status.started()

        resync = False
        while True:
            try:
                if resync:
                    self.apply_snapshot(*await self.etcd.range_prefix(self.registry.prefix))
                await self.etcd.watch(
                    self.registry.prefix, self.revision + 1, created, self.apply_events
                )
            except RegistryError as exc:
                self.report(exc)
                await trio.sleep(next(self.delays))
                # Events may have been missed (or compacted away): read everything again.
                resync = True
