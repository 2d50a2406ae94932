"""The receiving worker's side of a forwarded request: send it to its owner, relay the answer.

A request for a session another worker owns is published to the owner's inbox as a ``call``
frame: method, path, query, body, and the request's headers minus credentials (the token was
checked here; the owner gets a digest of it). If no reader is listening, publishing is retried
for a short grace (an owner reconnecting its inbox), then the owner is gone and the local view
answers 404, as for any unknown session. Redis unreachable is a 503, never a 404: a blip must
not make clients drop their sessions. Nothing is ever published twice: the owner may already
have written the message.

The owner answers ``resp`` (a whole small answer) or ``head``, ``data``* and ``end`` (an event
stream, relayed event by event), and lists every call it is serving in an ``alive`` frame
each ping interval. A call that hears nothing for three intervals has lost its owner: 504
before the answer started, else a JSON-RPC error event for its request and the end. The other
way round, each ping interval this worker lists the calls it still waits for to their owners
(``held``): an owner ends a call nobody vouches for, so a ``cancel`` lost to a Redis blip, or
a receiving worker that died, costs no session. A call's number is unique in this worker
only; the owner keys it by (this worker's tag, number).

A client that leaves is told to the owner with a ``cancel`` frame. Backpressure does not cross
the bus, so a forwarded stream is held to a local stream's limits: a client that falls more
than ``--max-queued-size`` behind, or takes nothing for ``--stall-timeout``, is cut off (what
waits for it is dropped, its connection shut) and the call cancelled.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Response
from gevent.queue import Empty, Queue
from werkzeug.datastructures import Headers

from mcp_proxy.core import jsonrpc
from mcp_proxy.errors import BlobLost, BusDown, LinkClosed, MessageError, OwnerSilent
from mcp_proxy.server.responses import RETRY_AFTER, rpc_error
from mcp_proxy.server.scaleout.bus import GRACE
from mcp_proxy.server.streams import Body, StreamOwner, sse_event

if TYPE_CHECKING:
    from mcp_proxy.server.scaleout.router import Router

logger = logging.getLogger(__name__)

_STOP = ({"k": "stop"}, b"", 0)


def _cost(header: dict, payload: bytes) -> int:
    """What a frame weighs against ``--max-queued-size``: a large one travels by reference
    with an empty payload, and its header says how large it is (``n``)."""
    size = header.get("n")
    return size if type(size) is int and size >= 0 else len(payload)
_numbers = itertools.count(1)
# request headers that never cross the bus: credentials, the hop's own, and Origin (checked
# where the request landed, which also adds the CORS headers to the answer)
_PRIVATE = {"HTTP_AUTHORIZATION", "HTTP_COOKIE", "HTTP_PROXY_AUTHORIZATION", "HTTP_ORIGIN",
            "HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TE", "HTTP_TRANSFER_ENCODING",
            "HTTP_UPGRADE", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"}


def auth_digest(environ: dict) -> str:
    """What stands for the caller's credentials: a digest, never the secret itself."""
    if "mcp_proxy.auth" in environ:
        return environ["mcp_proxy.auth"]
    authorization = environ.get("HTTP_AUTHORIZATION")
    return hashlib.sha256(authorization.encode()).hexdigest() if authorization else ""


def call_frame(environ: dict, corr: str, sender: str) -> dict:
    headers = {key: value for key, value in environ.items()
               if key.startswith("HTTP_") and key not in _PRIVATE}
    if environ.get("CONTENT_TYPE"):
        headers["CONTENT_TYPE"] = environ["CONTENT_TYPE"]
    return {"k": "call", "c": corr, "f": sender, "m": environ["REQUEST_METHOD"],
            "p": environ.get("PATH_INFO", "/"), "q": environ.get("QUERY_STRING", ""),
            "s": environ.get("wsgi.url_scheme", "http"), "h": headers,
            "a": auth_digest(environ)}


class Call(StreamOwner):
    """One forwarded request waiting for its owner's frames.

    While its answer streams to the client, it is its own stream and that stream's owner
    for the registry's reaper (``Body`` and the stall check of ``--stall-timeout``).
    """

    idle_limit = float("inf")  # for the reaper: only a stall ends it

    def __init__(self, router: Router, owner: str) -> None:
        self.router = router
        self.settings = router.settings
        self.owner = owner
        self.corr = str(next(_numbers))  # unique among this worker's calls: replies come here
        self.name = f"forwarded:{owner}:{self.corr}"
        self.queue: Queue = Queue()
        self.queued = 0  # payload bytes received, not yet sent on to the client
        self.seen = time.monotonic()
        self.heard = False  # a frame or an ``alive`` came from the owner for this call
        self.done = False  # the owner sent the whole answer
        self.cut: str | None = None  # why the client was cut off
        self.session = self  # what Body and the reaper ask a stream for: its owner
        self.draining: set[Call] = set()
        self.writing_since: float | None = None
        self.abort: Callable[[], None] | None = None  # shut the client's connection

    def take(self, header: dict, payload: bytes) -> None:
        """From the inbox reader (must not block): queue a frame for the waiting greenlet."""
        if self.cut is not None:
            return  # the client is cut off: nothing more is kept for it
        self.seen, self.heard = time.monotonic(), header.get("k") != "gone"
        cost = _cost(header, payload)
        try:
            self.charge(cost, False)
        except LinkClosed:
            return
        self.queue.put((header, payload, cost))

    def next(self) -> tuple[dict, bytes]:
        ping = self.router.ping
        while True:
            try:
                header, payload, cost = self.queue.get(timeout=ping)
            except Empty:
                if time.monotonic() - self.seen > 3 * ping and self.router.may_judge(self):
                    raise OwnerSilent(f"worker {self.owner} sent nothing for {3 * ping:g} s")
                continue
            self.queued -= cost
            return header, payload

    def stop(self, reason: str) -> None:
        """The client left (or this worker stops): tell the owner, wake whoever waits."""
        if self.cut is None:
            self.cut = reason
        self.queue.put(_STOP)

    def close(self, reason: str) -> None:
        """Cut the client off (it fell behind, or stalled): drop what waits for it, shut its
        connection, so that a relay stuck writing to it ends (and cancels) now. Must not
        block: the inbox reader calls it."""
        if self.cut is not None:
            return
        self.cut = reason
        while True:
            try:
                self.queue.get_nowait()
            except Empty:
                break
        self.queued = 0
        self.queue.put(_STOP)
        if self.abort is not None:
            self.abort()

    def idle(self, now: float) -> float:
        return 0.0

    def cancel(self) -> None:
        bus = self.router.bus
        try:
            bus.post(self.owner, {"k": "cancel", "c": self.corr, "f": bus.tag})
        except BusDown as exc:  # it ends the call once our ``held`` frames stop naming it
            logger.warning("worker %s: could not tell worker %s that its client left (Redis "
                           "unreachable: %s); it ends call %s when it stops hearing of it",
                           bus.tag, self.owner, exc, self.corr)


def send_held(router: Router) -> None:
    """Tell every owner which of its calls this worker still waits for (each ping)."""
    owners: dict[str, list[str]] = {}
    for call in list(router.calls.values()):
        owners.setdefault(call.owner, []).append(call.corr)
    for owner, corrs in owners.items():
        router.bus.post(owner, {"k": "held", "f": router.tag, "cs": corrs})


def forward(router: Router, environ: dict, body: bytes, owner: str) -> Response | None:
    """The owner's answer to this request, or None if the owner is gone (after the grace)."""
    bus = router.bus
    call = Call(router, owner)
    router.calls[call.corr] = call
    handed_over = False
    try:
        try:
            if bus.state != "connected":  # the answer could not reach us
                raise BusDown("this worker's inbox is not subscribed")
            if not bus.post(owner, call_frame(environ, call.corr, bus.tag), body, GRACE):
                return None
        except BusDown as exc:
            logger.warning("cannot forward %s %s to worker %s: Redis unreachable: %s",
                           environ["REQUEST_METHOD"], environ.get("PATH_INFO"), owner, exc)
            return _unavailable(body)
        call.seen = time.monotonic()
        router.count("forwarded")
        try:
            header, payload = call.next()
            if header["k"] == "gone":  # its owner stopped listening (router.py)
                return None
            if header["k"] == "resp":
                return Response(bus.payload(header, payload), status=header["st"],
                                headers=header["h"])
            if header["k"] != "head":
                raise OwnerSilent(f"unexpected {header['k']!r} frame")
            status, head = int(header["st"]), Headers(header["h"])
        except (KeyError, TypeError, ValueError) as exc:  # a frame of the wrong shape
            logger.warning("forwarded %s %s to worker %s: a malformed answer frame: %s: %s",
                           environ["REQUEST_METHOD"], environ.get("PATH_INFO"), owner,
                           exc.__class__.__name__, exc)
            call.cancel()
            return rpc_error(502, jsonrpc.INTERNAL_ERROR, "Bad Gateway: the worker that owns "
                             "this session sent a malformed answer", _request_id(body))
        except (OwnerSilent, BusDown, BlobLost) as exc:
            logger.warning("forwarded %s %s to worker %s: %s", environ["REQUEST_METHOD"],
                           environ.get("PATH_INFO"), owner, exc)
            call.cancel()
            return rpc_error(504, jsonrpc.INTERNAL_ERROR, f"Gateway Timeout: the worker that "
                             f"owns this session did not answer ({exc})", _request_id(body))
        response = Response(Body(_relay(router, call, body), environ, call,
                                 lambda: call.stop("client disconnected"),
                                 lambda: _finish(router, call)),
                            status=status, headers=head)
        response.direct_passthrough = True
        router.reaped.add(call)  # the reaper cuts it if its client takes nothing
        handed_over = True
        return response
    finally:
        if not handed_over:
            router.calls.pop(call.corr, None)


def _relay(router: Router, call: Call, body: bytes):
    """The owner's event stream, chunk by chunk, until its end."""
    while True:
        try:
            header, payload = call.next()
            kind = header["k"]
            if kind == "data":
                yield router.bus.payload(header, payload)
            elif kind == "end":
                call.done = True
                return
            elif kind == "stop":
                return
            elif kind == "gone":
                raise OwnerSilent(f"worker {call.owner} stopped listening")
        except (OwnerSilent, BusDown, BlobLost) as exc:
            logger.warning("a stream forwarded from worker %s ended: %s", call.owner, exc)
            request_id = _request_id(body)
            if request_id is not None:
                yield sse_event(jsonrpc.encode(jsonrpc.error_obj(
                    request_id, jsonrpc.INTERNAL_ERROR,
                    f"The worker that owns this session stopped answering ({exc})")))
            call.done = True  # nothing left to cancel
            return


def _finish(router: Router, call: Call) -> None:
    router.calls.pop(call.corr, None)
    router.reaped.discard(call)
    if not call.done:
        if call.cut and call.cut != "client disconnected":
            logger.warning("forwarded stream from worker %s cut: %s", call.owner, call.cut)
        call.cancel()


def _request_id(body: bytes):
    """The id of the forwarded request, if its body was one (only read on an error path)."""
    try:
        message = jsonrpc.parse(body) if body else None
    except MessageError:
        return None
    return message.id if message is not None and message.kind == jsonrpc.REQUEST else None


def _unavailable(body: bytes) -> Response:
    return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Service Unavailable: the session is served "
                     "by another worker and Redis cannot be reached; retry later",
                     _request_id(body), **{"Retry-After": RETRY_AFTER})
