"""A combined server's members as one session holds them: opened, watched, started again.

:class:`Members` is the member half of the :class:`~mcp_proxy.children.combined.Combiner` (a
mixin it inherits; it never imports the combiner). A member is a link: whatever the supervisor
hands a session of that server (its own :class:`StdioChild`, or a :class:`Port` of its shared
child, or a remote session of a ``"url"`` member: the same ``send``/``attach``/``close``). A
member is opened when the client's ``initialize`` comes (each member gets that ``initialize``;
a stateless request that comes without one opens the members it needs with the proxy's own),
and is given ``notifications/initialized`` itself.

When a member's link ends, the combiner answers its calls and forgets its names
(``Combiner.lost``), the client gets ``list_changed``, and the member is opened again with
backoff (so is one that did not open with the client's ``initialize``: a remote that is
down); once it is back, ``list_changed`` again. Meanwhile a request does not wait for it: its
calls get an error at once. A shared member's port outlives its child:
the multiplexer tells it (``Port.on_child``) when the child dies and when it is back; a remote
member's session outlives a loss of the remote the same way, and says so (``on_state``,
``upstream/watched_remote.py``): its tools are hidden while it reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from mcp_proxy import __version__
from mcp_proxy.core import greenlets
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link
from mcp_proxy.errors import LinkClosed, ProxyError, ServerBusy, SpawnError

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "2025-11-25"  # what a member is asked for when no client asked
OPEN_TIMEOUT = 60.0  # a member's start to its initialize answered (npx may download first)
_BACKOFF = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
_LISTED = (("tools", "notifications/tools/list_changed"),
           ("prompts", "notifications/prompts/list_changed"),
           ("resources", "notifications/resources/list_changed"))


class Call:
    """A request in flight on a member: whose it is, and where its answer goes."""

    __slots__ = ("member", "original", "gather", "waiter", "retry")

    def __init__(self, member: str, original: Any = None, gather: Any = None,
                 waiter: Any = None, retry: tuple | None = None) -> None:
        self.member, self.original, self.gather, self.waiter = member, original, gather, waiter
        self.retry = retry  # (message, params, members still to try) of a URI nobody listed


class Slot:
    """One member as this session holds it."""

    __slots__ = ("link", "result", "failure", "down", "lock", "restarting")

    def __init__(self) -> None:
        self.link: Link | None = None
        self.result: dict | None = None  # its initialize result
        self.failure = ""
        self.down = False  # a shared member whose child is not running
        self.lock = Semaphore()
        self.restarting = False


class Members:
    """The members of one session of a combined server (see the module docstring)."""

    # what the combiner provides
    name: str
    server: str
    order: list[str]
    calls: dict
    closed: Any
    from_member: Callable[[str, Message], None]
    deliver_if_open: Callable[[Message], None]
    lost: Callable[[str, str], None]
    answer_initialize: Callable[[Message, list], None]

    def __init__(self, open_member: Callable[[str, str], Link]) -> None:
        self._open = open_member
        self.slots = {member: Slot() for member in self.order}
        self.init_params: dict = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                  "clientInfo": {"name": "mcp-proxy", "version": __version__}}
        self.initialized = False
        self.level: str | None = None
        self._next_id = 0

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def is_up(self, member: str) -> bool:
        slot = self.slots[member]
        return slot.link is not None and not slot.down

    def offers(self, member: str, capability: str) -> bool:
        """Whether ``member`` is up (opened now if need be) and offers ``capability``."""
        if not self.ensure(member):
            return False
        caps = (self.slots[member].result or {}).get("capabilities")
        return isinstance(caps, dict) and capability in caps

    def initialize(self, message: Message) -> None:
        """Open every member with the client's ``initialize``; answer with their union."""
        self.init_params = dict(message.params)
        jobs = [greenlets.spawn(self.ensure, member, name=f"{self.name} open {member}")
                for member in self.order]
        gevent.joinall(jobs, timeout=OPEN_TIMEOUT + 5)
        results = [(m, self.slots[m].result) for m in self.order if self.is_up(m)]
        if not results:
            failures = "; ".join(f"{m}: {self.slots[m].failure}" for m in self.order)
            self.deliver_if_open(Message({"jsonrpc": "2.0", "id": message.id, "error": {
                "code": -32603, "message": f"combined server {self.server}: no member "
                                           f"started ({failures})"[:500]}}))
            return
        self.answer_initialize(message, results)
        self.initialized = True
        for member in self.order:  # one that did not start (a remote down) is tried again
            if self.slots[member].link is None:  # meanwhile, and told with list_changed
                self._retry(member)

    def ensure(self, member: str, retrying: bool = False) -> bool:
        """Whether ``member`` is up, opening it now if it is not open (unless it is being
        opened again in the background: a request does not wait for that); never raises."""
        slot = self.slots[member]
        if slot.link is not None or self.closed.is_set():
            return not slot.down and slot.link is not None
        if slot.restarting and not retrying:
            return False
        with slot.lock:
            if slot.link is None and not self.closed.is_set():
                self._open_now(member, slot)
        return self.is_up(member)

    def _open_now(self, member: str, slot: Slot) -> None:
        try:
            link = self._open(member, f"{self.name}/{member}")
        except SpawnError as exc:
            slot.failure = str(exc)
            return
        inner = getattr(link, "inner", None)  # behind an era bridge (modern_child.py)
        for held in (link,) if inner is None else (link, inner):
            for hook in ("on_child", "on_state"):  # a shared child's port, a remote session:
                if hasattr(held, hook):  # told when their server goes and when it is back
                    setattr(held, hook, partial(self._child_state, member))
        link.attach(partial(self.from_member, member), partial(self._ended, member, link))
        try:
            slot.result = self._own_request(member, link, "initialize", self.init_params)
            link.send(Message({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            if self.level is not None:
                self._own_request(member, link, "logging/setLevel", {"level": self.level})
        except (ProxyError, gevent.Timeout) as exc:
            slot.failure = f"initialize failed: {exc}"
            link.close(slot.failure)
            return
        if link.closed.is_set():
            slot.failure = link.close_reason
            return
        if self.closed.is_set():  # the session ended while the member started: nobody holds it
            link.close(self.close_reason or "the combined session ended")
            return
        slot.link, slot.down, slot.failure = link, False, ""

    def _own_request(self, member: str, link: Link, method: str, params: dict) -> dict:
        waiter = AsyncResult()
        cid = self.new_id()
        self.calls[cid] = Call(member, waiter=waiter)
        try:
            link.send(Message({"jsonrpc": "2.0", "id": cid, "method": method, "params": params}))
            answer = waiter.get(timeout=OPEN_TIMEOUT)
        except gevent.Timeout:
            raise ProxyError(f"no answer to {method} within {OPEN_TIMEOUT:g} s") from None
        except (LinkClosed, ServerBusy) as exc:
            raise ProxyError(str(exc)) from None
        finally:
            self.calls.pop(cid, None)
        if "error" in answer.obj:
            raise ProxyError(f"{method}: {answer.obj['error'].get('message')}")
        return answer.obj.get("result") or {}

    def send_member(self, member: str, message: Message, busy: bool = False) -> bool:
        """Send to ``member``'s link; whether it took it (ServerBusy raised if ``busy``)."""
        link = self.slots[member].link
        if link is None:
            return False
        try:
            link.send(message)
        except LinkClosed:
            return False
        except ServerBusy:
            if busy:
                raise
            return False
        return True

    def changed(self, member: str) -> None:
        """Tell the client the lists ``member`` offers have changed (it went or came back)."""
        if not self.initialized or self.closed.is_set():
            return
        caps = (self.slots[member].result or {}).get("capabilities") or {}
        for capability, method in _LISTED:
            if capability in caps:
                self.deliver_if_open(Message({"jsonrpc": "2.0", "method": method}))

    def _ended(self, member: str, link: Link) -> None:
        slot = self.slots[member]
        if slot.link is not link:
            return  # one that failed its start, or was replaced
        slot.link, slot.failure = None, link.close_reason or "ended"
        if self.closed.is_set():
            return
        logger.warning("%s: member %s ended (%s)", self.name, member, slot.failure)
        self.lost(member, slot.failure)
        if not slot.down:  # else the client was told when it went down
            self.changed(member)
        self._retry(member)

    def _retry(self, member: str) -> None:
        """Open ``member`` again in the background, with backoff, unless that runs already."""
        slot = self.slots[member]
        if not slot.restarting and not self.closed.is_set():
            slot.restarting = True
            greenlets.spawn(self._restart, member, name=f"{self.name} restart {member}")

    def _restart(self, member: str) -> None:
        slot = self.slots[member]
        try:
            for delay in _BACKOFF:
                gevent.sleep(delay)
                if self.closed.is_set() or slot.link is not None:
                    return
                if self.ensure(member, retrying=True):
                    logger.info("%s: member %s is back", self.name, member)
                    self.changed(member)
                    return
            logger.error("%s: member %s did not start again (%s); tried again on next use",
                         self.name, member, slot.failure)
        finally:
            slot.restarting = False

    def _child_state(self, member: str, running: bool, reason: str = "") -> None:
        """A shared member's child died (``running`` false) or is back; or a remote
        member's session was lost, or is back."""
        slot = self.slots[member]
        if slot.link is None or slot.down == (not running):
            return
        slot.down = not running
        if not running:
            slot.failure = reason or "its server process exited"
            self.lost(member, slot.failure)
        self.changed(member)

    def _on_close(self, reason: str) -> None:
        for slot in self.slots.values():
            link, slot.link = slot.link, None
            if link is not None:
                link.close(reason)
