"""The event streams of a Streamable HTTP session: a POST's answer stream, resumed with
``Last-Event-ID`` when it ends before the answer (SEP-1699 polling), and the GET stream that
brings the remote's own messages, reopened while the session lives.

What they read goes to the link's ``read_message``; the link is a ``StreamSource``
(streamable_remote.py's ``StreamableUpstream``), which owns the session and does the POSTs.
Nothing here POSTs, and each response a resumption opens is closed here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import gevent
import requests
from gevent.event import Event

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import SignInRefused, UpstreamError
from mcp_proxy.upstream.backoff import backoff
from mcp_proxy.upstream.http_reading import check_status, events
from mcp_proxy.upstream.proxy_env import describe

if TYPE_CHECKING:
    from mcp_proxy.config.settings import ClientSettings

logger = logging.getLogger(__name__)

RETRY_CAP = 30.0  # seconds: a remote's huge ``retry:`` must not park a request for days


class StreamSource(Protocol):
    """What the streams need of the Streamable HTTP link whose session they belong to."""

    name: str
    http: requests.Session
    settings: ClientSettings
    timeout: tuple
    session_id: str | None
    closed: Event

    def session_headers(self, base: dict) -> dict: ...

    def read_message(self, data: bytes | str, is_init: bool = False,
                     request: Message | None = None) -> Message | None: ...

    def lost(self, reason: str) -> None: ...

    def close(self, reason: str = "closed") -> None: ...


def read_answer_stream(remote: StreamSource, request: Message, response: requests.Response,
                       is_init: bool) -> None:
    """Read the events of ``request``'s answer stream until its answer, resuming the stream
    (up to three times) when it ends first."""
    # ``response`` is the caller's to close; each response resuming it is ours
    first, last_id, retry_ms = response, None, None
    try:
        for attempt in range(4):
            for event in events(response):
                last_id = event.id or last_id
                if event.retry and event.retry.isascii() and event.retry.isdigit():
                    retry_ms = int(event.retry)  # anything else is ignored, as SSE says
                if event.event == "message" and event.data.strip():
                    got = remote.read_message(event.data, is_init, request)
                    if got is not None and got.kind == jsonrpc.RESPONSE \
                            and got.id == request.id:
                        return
            if request.kind != jsonrpc.REQUEST:
                return
            if not last_id:
                raise UpstreamError("the answer stream ended before the answer")
            if response is not first:
                response.close()
            gevent.sleep(min(retry_ms / 1000, RETRY_CAP) if retry_ms is not None
                         else backoff(attempt))
            response = resume(remote, last_id)  # SEP-1699: poll with Last-Event-ID
        raise UpstreamError("the answer stream kept ending before the answer")
    finally:
        if response is not first:
            response.close()


def resume(remote: StreamSource, last_event_id: str) -> requests.Response:
    """The GET that resumes a stream after ``last_event_id``; UpstreamError if refused."""
    headers = remote.session_headers({"Accept": "text/event-stream",
                                      "Accept-Encoding": "identity",
                                      "Last-Event-ID": last_event_id})
    try:
        response = remote.http.get(remote.settings.url, headers=headers, stream=True,
                                   timeout=remote.timeout)
    except requests.RequestException as exc:
        raise UpstreamError(f"resume failed: {describe(exc)}") from exc
    if response.status_code >= 300:
        response.close()
        check_status(response, "GET (resume)")
    return response


class GetStream:
    """The GET stream of one session, for the remote's own messages: ``open`` once
    ``initialized`` went out; 405, or 404 without a session, means the remote has none; a 404
    on our session or a refused connection means the session is lost (``remote.lost``)."""

    def __init__(self, remote: StreamSource) -> None:
        self.remote = remote
        self.greenlet: gevent.Greenlet | None = None
        # clear while the first GET stream is unanswered: a server drops what it sends on a
        # GET stream not yet open (the SDK's ``list_roots``), so POSTs wait (bounded)
        self.listening = Event()
        self.listening.set()

    def open(self) -> None:
        """Start reading the GET stream, unless it is being read."""
        if self.greenlet is None or self.greenlet.dead:
            self.listening.clear()
            self.greenlet = spawn(self._listen, name=f"{self.remote.name}: GET stream",
                                  on_error=closing(self.remote))
            self.greenlet.rawlink(self._ended)

    def _ended(self, greenlet: gevent.Greenlet) -> None:
        """A GET stream's greenlet ended or was killed: nothing waits for it any more, unless
        a newer one has been opened since (a stopped one is killed without waiting)."""
        if self.greenlet is None or self.greenlet is greenlet:
            self.listening.set()

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        self.greenlet = None

    def _listen(self) -> None:
        """The GET stream, reopened (from its last event) while the session lives."""
        remote = self.remote
        attempt, last_id = 0, None
        while not remote.closed.is_set():
            headers = remote.session_headers({"Accept": "text/event-stream",
                                              "Accept-Encoding": "identity"})
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                stream = remote.http.get(remote.settings.url, headers=headers, stream=True,
                                         timeout=remote.timeout)
            except requests.ConnectionError as exc:  # refused or unreachable: the remote is down
                remote.lost(f"the remote is unreachable ({describe(exc)})")
                return
            except SignInRefused as exc:  # the run ends: closed from a greenlet of its own,
                spawn(remote.close, str(exc), name=f"{remote.name}: close")  # as it stops us
                return
            except (requests.RequestException, UpstreamError) as exc:  # UpstreamError: sign-in
                logger.info("%s: GET stream failed: %s", remote.name,
                            exc if isinstance(exc, UpstreamError) else describe(exc))
                stream = None
            self.listening.set()  # answered (or failed): the messages held back may go
            if stream is not None:
                with stream:
                    # without a session, 404 is a stateless server's "no GET stream" too
                    if stream.status_code == 405 or (stream.status_code == 404
                                                     and not remote.session_id):
                        logger.debug("%s: the remote offers no GET stream (%s)", remote.name,
                                     stream.status_code)
                        return
                    if stream.status_code == 404:
                        remote.lost("the remote no longer knows our session (404)")
                        return
                    if stream.status_code == 200:
                        attempt = 0
                        try:
                            for event in events(stream):
                                last_id = event.id or last_id
                                if event.event == "message" and event.data.strip():
                                    remote.read_message(event.data)
                        except UpstreamError as exc:
                            logger.info("%s: GET stream dropped: %s", remote.name, exc)
            gevent.sleep(backoff(attempt))
            attempt += 1
