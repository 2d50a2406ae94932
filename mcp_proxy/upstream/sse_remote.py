"""SseUpstream: a remote HTTP+SSE server (protocol 2024-11-05) as a link.

One GET stream brings everything from the remote; its first event names the endpoint we
POST our messages to (resolved against the stream's URL, and refused if it points at another
origin). When the stream ends the remote session is gone: recovery reconnects. It owns the
stream's response and the greenlet that reads it, and the ``Poster`` of the endpoint.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

import gevent
import requests
from gevent.event import AsyncResult

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.greenlets import closing, spawn
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import MessageError, Refused, SessionLost, TlsError, UpstreamError
from mcp_proxy.upstream.http_reading import check_status, events, same_origin
from mcp_proxy.upstream.poster import Poster
from mcp_proxy.upstream.proxy_env import refused_for_good
from mcp_proxy.upstream.remote_link import Upstream

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity",
                  "Cache-Control": "no-cache"}
POST_HEADERS = {"Content-Type": "application/json"}


class SseUpstream(Upstream):
    def __init__(self, settings, http) -> None:
        super().__init__(settings, http, "remote-sse")
        self.endpoint: str | None = None
        self._response: requests.Response | None = None
        self._reader: gevent.Greenlet | None = None
        self._poster: Poster | None = None

    def _open(self) -> None:
        url = self.settings.url
        try:
            response = self.http.get(url, headers=STREAM_HEADERS, stream=True,
                                     timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise TlsError(f"GET {url}: TLS verification failed: {exc}") from exc
        except requests.RequestException as exc:
            raise refused_for_good(exc) or UpstreamError(
                f"GET {url} failed: {exc.__class__.__name__}: {exc}") from exc
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            check_status(response, f"GET {url}", self.http)
            if kind != "text/event-stream":
                raise Refused(f"GET {url}: answered {kind or 'no content type'}, not "
                              f"text/event-stream")
        except UpstreamError:
            response.close()
            raise
        self._response = response
        endpoint = AsyncResult()
        self._reader = spawn(self._read, response, endpoint, on_error=closing(self),
                             name=f"{self.name}: event stream")
        try:
            self.endpoint = endpoint.get(timeout=self.settings.connect_timeout + 20)
        except gevent.Timeout:
            response.close()
            raise UpstreamError(f"{url} sent no endpoint event") from None
        logger.info("%s: connected to %s", self.name, url)

    def _read(self, response: requests.Response, endpoint: AsyncResult) -> None:
        reason = "the remote closed the event stream"
        try:
            for event in events(response):
                if event.event == "endpoint":
                    target = urljoin(self.settings.url, event.data.strip())
                    if not same_origin(target, self.settings.url):
                        endpoint.set_exception(UpstreamError(
                            f"endpoint {target} is not on the origin of {self.settings.url}"))
                        return
                    endpoint.set(target)
                elif event.event == "message" and event.data.strip():
                    try:
                        self.deliver_remote(jsonrpc.parse(event.data))
                    except MessageError as exc:
                        self.deliver_refused(event.data, exc)
        except UpstreamError as exc:
            reason = str(exc)
        except Exception:
            if not self.closed.is_set():
                raise  # a bug; but a read that our own close cut short ends quietly
        finally:
            response.close()
            if not endpoint.ready():  # on a crash too: _open must not wait for it in vain
                endpoint.set_exception(UpstreamError(reason))
        if endpoint.successful() and response is self._response:
            self.lost(reason)

    def _post(self, message: Message) -> None:
        if self._poster is None or self._poster.url != self.endpoint:
            if self._poster is not None:
                self._poster.close()
            self._poster = Poster(self.http, self.endpoint, self.timeout)
        response = self._poster.post(message.raw, POST_HEADERS)
        if response.status_code == 404:
            raise SessionLost("the remote no longer knows our session (404)")
        check_status(response, "POST", self.http)

    def _reset(self) -> None:
        self._teardown()
        self.endpoint = None

    def _teardown(self) -> None:
        if self._poster is not None:
            self._poster.close()
        response, self._response = self._response, None
        if response is not None:
            response.close()
