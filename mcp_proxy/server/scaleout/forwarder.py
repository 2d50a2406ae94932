"""The receiving worker's side of a forwarded request: forward it to its owner, relay the answer.

It owns this worker's calls at other workers (:class:`Forwarder`): publishing each ``call``
frame (frames.py), the frames that come back, the ``held`` frames, a forwarded stream's
budget and stall checks, and the watch of the owners (owner_watch.py). It never runs a
request (owner.py does, at the owner) and never publishes a call frame twice: the owner may
already have written the message.

With no reader on the owner's inbox, publishing is retried for a short grace (an owner
reconnecting), then the owner is gone and the local view answers 404, as for any unknown
session; Redis unreachable is a 503, never a 404: a blip must not make clients drop their
sessions. A call that hears nothing (no frame, no ``alive``) for three ping intervals has
lost its owner: 504 before the answer started, else a JSON-RPC error event for its request
and the end. Each ping interval this worker lists the calls it still waits for to their
owners (``held``): an owner ends a call nobody vouches for, so a ``cancel`` lost to a Redis
blip, or a receiving worker that died, costs no session. A call's number is unique in this
worker only; the owner keys it by (our tag, number).

A client that leaves is told to the owner (``cancel``). Backpressure does not cross the bus,
so a forwarded stream is held to a local stream's limits: a client that falls more than
``--max-queued-size`` behind, or takes nothing for ``--stall-timeout``, is cut off (what
waits for it is dropped, its connection shut) and the call cancelled.
"""

from __future__ import annotations

import io
import itertools
import logging
import time
from collections.abc import Callable

from flask import Response
from gevent.queue import Empty, Queue
from werkzeug.datastructures import Headers

from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.core import greenlets, jsonrpc
from mcp_proxy.errors import BusDown, BusError, LinkClosed, MessageError, OwnerSilent
from mcp_proxy.server.response_body import Body
from mcp_proxy.server.responses import RETRY_AFTER, read_body, rpc_error
from mcp_proxy.server.scaleout.bus import GRACE, Bus
from mcp_proxy.server.scaleout.frames import call_frame, weight
from mcp_proxy.server.scaleout.owner_watch import STALLED, OwnerWatch
from mcp_proxy.server.streams import StreamOwner, sse_event

logger = logging.getLogger(__name__)

_STOP = ({"k": "stop"}, b"", 0)
_numbers = itertools.count(1)


class ForwardedCall(StreamOwner):
    """One forwarded request waiting for its owner's frames.

    While its answer streams to the client, it is its own stream and that stream's owner
    for the registry's reaper (``Body`` and the stall check of ``--stall-timeout``).
    """

    idle_limit = float("inf")  # for the reaper: only a stall ends it

    def __init__(self, forwarder: Forwarder, owner: str) -> None:
        self.forwarder = forwarder
        self.settings = forwarder.settings
        self.owner = owner
        self.corr = str(next(_numbers))  # unique among this worker's calls: frames come here
        self.name = f"forwarded:{owner}:{self.corr}"
        self.queue: Queue = Queue()
        self.queued = 0  # payload bytes received, not yet sent on to the client
        self.seen = time.monotonic()
        self.heard = False  # a frame or an ``alive`` came from the owner for this call
        self.done = False  # the owner sent the whole answer
        self.cut: str | None = None  # why the client was cut off
        self.session = self  # what Body and the reaper ask a stream for: its owner
        self.draining: set[ForwardedCall] = set()
        self.writing_since: float | None = None
        self.abort: Callable[[], None] | None = None  # shut the client's connection

    def deliver(self, header: dict, payload: bytes) -> None:
        """From the inbox reader (must not block): queue a frame for the waiting greenlet."""
        if self.cut is not None:
            return  # the client is cut off: nothing more is kept for it
        self.seen, self.heard = time.monotonic(), header.get("k") != "gone"
        cost = weight(header, payload)
        try:
            self.charge(cost, False)
        except LinkClosed:
            return
        self.queue.put((header, payload, cost))

    def next(self) -> tuple[dict, bytes]:
        ping = self.forwarder.ping
        while True:
            try:
                header, payload, cost = self.queue.get(timeout=ping)
            except Empty:
                if time.monotonic() - self.seen > 3 * ping and \
                        self.forwarder.watch.may_judge(self):
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
        bus = self.forwarder.bus
        try:
            bus.publish(self.owner, {"k": "cancel", "c": self.corr, "f": bus.tag})
        except BusDown as exc:  # it ends the call once our ``held`` frames stop naming it
            logger.warning("worker %s: could not tell worker %s that its client left (Redis "
                           "unreachable: %s); it ends call %s when it stops hearing of it",
                           bus.tag, self.owner, exc, self.corr)


class Forwarder:
    """This worker's calls at other workers: forwards each, relays its answer, watches owners."""

    def __init__(self, settings: ServerSettings, bus: Bus, ping: float) -> None:
        self.settings = settings
        self.bus = bus
        self.tag = bus.tag
        self.ping = ping
        self.calls: dict[str, ForwardedCall] = {}  # by number: our requests at other workers
        self.count = 0  # requests forwarded
        self.reaped: set = set()  # the registry's, once wired: stall checks of streams
        self.watch = OwnerWatch(self.calls, bus)

    def start(self) -> None:
        self._watcher = greenlets.spawn(self.watch.run, name="bus owner watch",
                                        on_error=self.bus.on_fatal)

    def stop(self) -> None:
        self._watcher.kill(block=False)
        for call in list(self.calls.values()):  # their owners' answers can no longer come
            call.stop("this worker is shutting down")

    def deliver(self, header: dict, payload: bytes) -> None:
        """From the inbox reader: a frame of an answer, to the call it is for."""
        call = self.calls.get(header.get("c"))
        if call is not None:
            call.deliver(header, payload)

    def alive(self, header: dict) -> None:
        """From the inbox reader: an owner's ``alive`` frame, naming the calls it serves."""
        now = time.monotonic()
        for corr in header.get("cs", ()):
            call = self.calls.get(corr)
            if call is not None:
                call.seen, call.heard = now, True

    def publish_held(self) -> None:
        """Tell every owner which of its calls this worker still waits for (each ping)."""
        owners: dict[str, list[str]] = {}
        for call in list(self.calls.values()):
            owners.setdefault(call.owner, []).append(call.corr)
        for owner, corrs in owners.items():
            self.bus.publish(owner, {"k": "held", "f": self.tag, "cs": corrs})

    def forward(self, environ: dict, owner: str, limit: int, body: bytes | None = None
                ) -> Response | None:
        """Forward this request to ``owner``; None lets the local view answer (owner gone)."""
        if body is None:
            body = read_body(environ, limit)
            if isinstance(body, Response):
                return body
        # an inbox coming back (Redis restarted, the process resumed) takes a moment: wait
        # for it rather than answer 503 at once
        self.bus.listening.wait(STALLED)
        response = self._call(environ, body, owner)
        if response is None:  # the local view answers, as for any session it does not know
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            logger.info("worker %s does not answer: its sessions are gone", owner)
            return None
        environ["mcp_proxy.route"] = "forwarded"
        return response

    def _call(self, environ: dict, body: bytes, owner: str) -> Response | None:
        """The owner's answer to this request, or None if the owner is gone (after the grace)."""
        bus = self.bus
        call = ForwardedCall(self, owner)
        self.calls[call.corr] = call
        handed_over = False
        try:
            try:
                if bus.state != "connected":  # the answer could not reach us
                    raise BusDown("this worker's inbox is not subscribed")
                if not bus.publish(owner, call_frame(environ, call.corr, bus.tag), body, GRACE):
                    return None
            except BusDown as exc:
                logger.warning("cannot forward %s %s to worker %s: Redis unreachable: %s",
                               environ["REQUEST_METHOD"], environ.get("PATH_INFO"), owner, exc)
                return rpc_error(503, jsonrpc.INTERNAL_ERROR, "Service Unavailable: the "
                                 "session is served by another worker and Redis cannot be "
                                 "reached; retry later", _request_id(body),
                                 **{"Retry-After": RETRY_AFTER})
            call.seen = time.monotonic()
            self.count += 1
            try:
                header, payload = call.next()
                if header["k"] == "gone":  # its owner stopped listening (owner_watch.py)
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
                return rpc_error(502, jsonrpc.INTERNAL_ERROR, "Bad Gateway: the worker that "
                                 "owns this session sent a malformed answer", _request_id(body))
            except BusError as exc:
                logger.warning("forwarded %s %s to worker %s: %s", environ["REQUEST_METHOD"],
                               environ.get("PATH_INFO"), owner, exc)
                call.cancel()
                return rpc_error(504, jsonrpc.INTERNAL_ERROR, f"Gateway Timeout: the worker "
                                 f"that owns this session did not answer ({exc})",
                                 _request_id(body))
            response = Response(Body(self._relay(call, body), environ, call,
                                     lambda: call.stop("client disconnected"),
                                     lambda: self._finish(call)),
                                status=status, headers=head)
            response.direct_passthrough = True
            self.reaped.add(call)  # the reaper cuts it if its client takes nothing
            handed_over = True
            return response
        finally:
            if not handed_over:
                self.calls.pop(call.corr, None)

    def _relay(self, call: ForwardedCall, body: bytes):
        """The owner's event stream, chunk by chunk, until its end."""
        while True:
            try:
                header, payload = call.next()
                kind = header["k"]
                if kind == "data":
                    yield self.bus.payload(header, payload)
                elif kind == "end":
                    call.done = True
                    return
                elif kind == "stop":
                    return
                elif kind == "gone":
                    raise OwnerSilent(f"worker {call.owner} stopped listening")
            except BusError as exc:
                logger.warning("a stream forwarded from worker %s ended: %s", call.owner, exc)
                request_id = _request_id(body)
                if request_id is not None:
                    yield sse_event(jsonrpc.encode(jsonrpc.error_obj(
                        request_id, jsonrpc.INTERNAL_ERROR,
                        f"The worker that owns this session stopped answering ({exc})")))
                call.done = True  # nothing left to cancel
                return

    def _finish(self, call: ForwardedCall) -> None:
        self.calls.pop(call.corr, None)
        self.reaped.discard(call)
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
