"""StreamableUpstream: a remote Streamable HTTP server as a link; it owns the session.

Every message is its own POST (requests concurrently, each in a greenlet, so a long tool
call never holds up the answer to a sampling request it caused). Answers come back as JSON
or as an event stream (read by event_streams.py, which resumes it). We keep
``Mcp-Session-Id`` and the negotiated protocol version from the initialize answer and send
both on every later request; after ``initialized`` we open the GET stream for the remote's
own messages (event_streams.GetStream); later messages wait (bounded) for its answer: a
server drops what it sends on a GET stream not yet open (the SDK's ``list_roots``). A 404 on
our session means it expired, and a refused connection for the GET stream means the remote
is down: both start recovery, which re-initializes. A 2026-07-28-era message carries the
era's headers (core/era_headers.py) and has no session to lose; cancelling one closes its
response. Closing sends DELETE.
"""

from __future__ import annotations

import logging

import requests
from gevent.event import Event

from mcp_proxy.core import era_headers, jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import FallbackNeeded, MessageError, SessionLost, TlsError, UpstreamError
from mcp_proxy.upstream.event_streams import GetStream, read_answer_stream
from mcp_proxy.upstream.http_reading import check_status
from mcp_proxy.upstream.poster import Poster
from mcp_proxy.upstream.proxy_env import refused_for_good
from mcp_proxy.upstream.remote_link import Upstream

logger = logging.getLogger(__name__)

POST_HEADERS = {"Accept": "application/json, text/event-stream",
                "Content-Type": "application/json", "Accept-Encoding": "identity"}
GET_WAIT = 3.0  # seconds: a remote may send the GET stream's head only with its first event


class StreamableUpstream(Upstream):
    concurrent_requests = True

    def __init__(self, settings, http, allow_fallback: bool = False) -> None:
        super().__init__(settings, http, "remote-http")
        self.allow_fallback = allow_fallback  # the transport is not decided yet (auto)
        self.refused: int | None = None  # with allow_fallback: a status that may mean SSE
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._handshake = Event()  # clear while an initialize is unanswered
        self._handshake.set()
        self.modern_version: str | None = None  # the 2026-07-28-era version last sent
        self.params_of: dict[str, dict[tuple, str]] = {}  # tool -> {argument path: header}
        self.poster = Poster(http, settings.url, self.timeout)
        self.get_stream = GetStream(self)

    def session_headers(self, base: dict) -> dict:
        """``base`` with our session's id and protocol version, once known."""
        headers = dict(base)
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def _open(self) -> None:
        """Check the remote answers at all (any status but 401/403 will do; with OAuth a 401
        too: the sign-in waits for the client's first request, which it can then fail)."""
        passive = getattr(self.http.auth, "passive", None)
        try:
            probe = self.http.get(self.settings.url, headers={"Accept": "text/event-stream"},
                                  stream=True, timeout=(self.settings.connect_timeout, 10),
                                  auth=passive)
        except requests.exceptions.SSLError as exc:
            raise TlsError(f"TLS verification failed: {exc}") from exc
        except requests.RequestException as exc:
            raise refused_for_good(exc) or UpstreamError(
                f"cannot connect: {exc.__class__.__name__}: {exc}") from exc
        probe.close()
        if probe.status_code in (401, 403) and not (passive and probe.status_code == 401):
            check_status(probe, f"GET {self.settings.url}", self.http)
        if probe.status_code >= 500:
            raise UpstreamError(f"GET {self.settings.url}: HTTP {probe.status_code} "
                                f"{probe.reason}")

    def send(self, message: Message, here: bool = False) -> None:
        if message.method == "initialize":
            self._handshake.clear()  # now, before the request's greenlet even starts
        elif message.method == "notifications/cancelled" and self._cancel(message):
            return
        super().send(message, here)

    def stop_request(self, request_id) -> bool:
        """Stop posting a request: kill its greenlet, which closes its HTTP response (the
        2026-07-28 era's cancellation). Its answer, if any still comes, is not delivered."""
        carried = self.tasks.pop(jsonrpc.id_key(request_id), None)
        self.in_flight.pop(jsonrpc.id_key(request_id), None)
        if carried is None:
            return False
        carried[0].kill(block=False)
        return True

    def _cancel(self, message: Message) -> bool:
        """A 2026-07-28 request is cancelled by closing its response, not by a POST (which a
        modern server acknowledges and ignores)."""
        target = message.params.get("requestId")
        carried = self.tasks.get(jsonrpc.id_key(target))
        if carried is None or not era_headers.version_of(carried[1]):
            return False
        logger.info("%s: request %r cancelled: closing its response", self.name, target)
        return self.stop_request(target)

    def _post(self, message: Message) -> None:
        version = era_headers.version_of(message)
        if version is None and message.kind != jsonrpc.REQUEST and not self.session_id:
            version = self.modern_version  # a modern client's notification
        if era_headers.is_modern_version(version):
            self.modern_version = version
            headers = {**POST_HEADERS, **era_headers.headers_for(message, version, self.params_of)}
            response = self.poster.post(message.raw, headers, stream=True)
            with response:
                self._handle_modern(message, response)
            return
        is_init = message.method == "initialize"
        if is_init:
            self._handshake.clear()
        elif not self._handshake.wait(self.settings.read_timeout):
            raise UpstreamError("initialize is still unanswered")
        elif not self.get_stream.listening.wait(GET_WAIT):
            # once: a remote that sends the GET stream's head only with its first event
            # would otherwise hold every message of the session back by GET_WAIT
            self.get_stream.listening.set()
            logger.debug("%s: the GET stream is still unanswered; sending anyway", self.name)
        try:
            # later messages need the session id the initialize answer brings
            headers = POST_HEADERS if is_init else self.session_headers(POST_HEADERS)
            response = self.poster.post(message.raw, headers, stream=True)
            with response:
                self._handle_response(message, response, is_init)
        finally:
            if is_init:
                self._handshake.set()

    def _handle_modern(self, message: Message, response: requests.Response) -> None:
        """A 2026-07-28 answer: no session to lose; an HTTP failure becomes the request's
        JSON-RPC error."""
        if response.status_code in (401, 403):
            check_status(response, "POST", self.http)
        if response.status_code == 202:
            return
        if self.allow_fallback and response.status_code in (400, 404, 405) \
                and not json_rpc_error(response):
            self.refused = response.status_code  # a dual-era client's initialize will tell
        if response.status_code < 300:
            self._read_body(message, response, False)
        elif message.kind == jsonrpc.REQUEST:
            self.deliver_remote(era_headers.http_error(message.id, response))
        else:
            logger.warning("%s: %s refused: HTTP %s", self.name, message.method,
                           response.status_code)

    def _handle_response(self, message: Message, response: requests.Response, is_init: bool):
        status = response.status_code
        if is_init and self.allow_fallback and status in (400, 404, 405) \
                and not json_rpc_error(response):
            raise FallbackNeeded(f"initialize answered {status}")
        if status == 404 and self.session_id and not is_init:
            raise SessionLost("the remote no longer knows our session (404)")
        if status in (401, 403):
            check_status(response, "POST", self.http)
        if status == 202:
            return
        if is_init and status == 200:
            self.session_id = response.headers.get("Mcp-Session-Id") or self.session_id
        if status >= 300:
            error = json_rpc_error(response)
            if error is not None and message.kind == jsonrpc.REQUEST:
                error["id"] = message.id
                self.deliver_remote(Message(error))
                return
            raise UpstreamError(f"POST: HTTP {status} {response.reason}")
        self._read_body(message, response, is_init)

    def _read_body(self, message: Message, response: requests.Response, is_init: bool) -> None:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip()
        if kind == "application/json":
            got = self.read_message(response.content, is_init, message)
            if message.kind == jsonrpc.REQUEST and (got is None or got.id != message.id):
                # the body answers nothing we can name (the refusal is logged): the request
                # it was sent for gets an error rather than wait (a no-op once answered)
                self._fail(message, "the remote's answer could not be relayed: it is not a "
                                    "JSON-RPC answer to this request (the log says why)")
        elif kind == "text/event-stream":
            read_answer_stream(self, message, response, is_init)
        elif message.kind == jsonrpc.REQUEST:
            raise UpstreamError(f"POST: unexpected answer type {kind or 'none'}")

    def read_message(self, data: bytes | str, is_init: bool = False,
                     request: Message | None = None) -> Message | None:
        """Read one message the remote sent (a JSON body or an event's data) and deliver it;
        the initialize answer's version is kept, a modern ``tools/list`` result's headers
        learnt. None if it was not JSON-RPC (``deliver_refused`` saw to it)."""
        try:
            message = jsonrpc.parse(data)
        except MessageError as exc:
            self.deliver_refused(data, exc)
            return None
        if is_init and message.kind == jsonrpc.RESPONSE:
            self._initialized_by(message)
        if request is not None and request.method == "tools/list" \
                and message.kind == jsonrpc.RESPONSE and era_headers.version_of(request):
            message = era_headers.usable_tools(message, self.params_of)
        self.deliver_remote(message)
        return message

    def _initialized_by(self, answer: Message) -> None:
        result = answer.obj.get("result")
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self.protocol_version = result["protocolVersion"]

    def _after_initialized(self) -> None:
        self.get_stream.open()

    def _reset(self) -> None:
        self.get_stream.stop()
        self.session_id = None
        self.protocol_version = None

    def _teardown(self) -> None:
        self.poster.close()
        self.get_stream.stop()
        if self.session_id:
            try:
                self.http.delete(self.settings.url, headers=self.session_headers({}), timeout=(
                    self.settings.connect_timeout, 5))
            except requests.RequestException:
                logger.debug("%s: DELETE of the session failed", self.name)


def json_rpc_error(response: requests.Response) -> dict | None:
    """The JSON-RPC error object in an HTTP error body, if there is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
