"""The POSTs of client mode: one message out and its response in, on the fast path where
it can.

``requests`` prepares every request anew (header merging, cookies, hooks, environment,
adapter lookup, a ``Response`` with cookie extraction) and urllib3 then checks each header
and parses the response's head with ``email.parser``: together ~1.2 ms of CPU per message on
the bench machine, most of what client mode cost per call; urllib3's ``urlopen`` alone still
cost ~0.5 ms. So where requests would add nothing we cannot add ourselves (no auth, Basic
auth, or a bearer token asked of the auth object per POST; no cookie in the jar; no proxy
for the URL: docs/client-mode.md measures why a proxied POST is left to requests) we write
the request head ourselves, computed once per header set, on a connection the
session's own urllib3 pool made (TLS with the session's verify settings), and read the
response with ``raw_response.RawResponse``. Everything else goes through ``session.post``,
and so does a POST whose fast response is a redirect, or a 401/403 under an auth that reacts
to one: that response is dropped and the POST sent again through requests, which follows the
redirect or lets the auth refresh its token. Errors are those of the slow path: an
UpstreamError naming the ``requests`` exception (``ConnectionError``, ``ReadTimeout``, ...)
the failure is, or would have been. The two private APIs it needs sit in a module each, with
the reason and the measured cost of the public way: urllib3_conn.py (the pool's
``_new_conn``) and cookie_jar.py (the jar's ``_cookies``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from select import POLLIN
from urllib.parse import urlsplit

import requests
from gevent.monkey import get_original
from requests.auth import HTTPBasicAuth
from requests.exceptions import InvalidHeader
from requests.utils import check_header_validity, requote_uri
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError

from mcp_proxy.core import tracing
from mcp_proxy.errors import BrokenResponse, UpstreamError
from mcp_proxy.upstream.cookie_jar import is_empty, keep
from mcp_proxy.upstream.proxy_env import EnvSession, describe
from mcp_proxy.upstream.raw_response import RawResponse
from mcp_proxy.upstream.urllib3_conn import new_connection, pool_for

logger = logging.getLogger(__name__)

INLINE_BODY = 64 << 10  # a smaller body goes out in one write with the head
MAX_IDLE = 10  # connections kept open between POSTs (requests' pool keeps as many)
_poll = get_original("select", "poll")  # a zero-timeout check needs no greenlet switch


def bearer_of(auth) -> Callable[[], str | None] | None:
    """What gives the bearer token of an auth that sends one (refreshed when due), for auths
    whose hooks react only to a refusal, which the fast path hands to requests: our OAuth
    auths' ``bearer`` (oauth/auth.py, oauth/credentials.py; asked by name, not by class, so
    this module stays below the sign-in's)."""
    bearer = getattr(auth, "bearer", None)
    return bearer if callable(bearer) else None


def eligible(session: requests.Session) -> bool:
    """Whether requests would add nothing we cannot: auth is none, Basic (a static header)
    or a bearer token (``bearer_of``), not Digest; no proxy, hooks or default parameters."""
    auth = session.auth
    return (auth is None or type(auth) is HTTPBasicAuth or bearer_of(auth) is not None) \
        and not session.proxies and not any(session.hooks.values()) and not session.params


class Poster:
    """POSTs to one URL through ``session``: fast where ``eligible``, else ``session.post``."""

    def __init__(self, session: requests.Session, url: str, timeout: tuple) -> None:
        self.session = session
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        # quoted as requests quotes it (an endpoint event may name an unquoted path)
        self.target = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        host = parts.netloc.rpartition("@")[2]
        default = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
        self.host = host[:-len(default)] if default and host.endswith(default) else host
        # a user and password in the URL are Basic auth to requests when the session has none
        self.fast = eligible(session) and parts.username is None and parts.password is None
        # through a proxy, requests (urllib3) speaks to it: CONNECT, its credentials, its
        # refusals (docs/client-mode.md measures why the fast path does not tunnel itself)
        proxied = isinstance(session, EnvSession) and session.proxy_for(url) is not None
        self.fast = self.fast and not proxied
        logger.debug("POSTs take %s", "the fast path" if self.fast else "requests (a proxy)"
                     if proxied else f"requests (auth {session.auth.__class__.__name__})")
        self._bearer = bearer_of(session.auth)
        self._token: tuple[str, bytes] | None = None  # the last bearer token, its header
        self._prepared = requests.Request("POST", url).prepare()
        self._pool = None
        self._idle: list = []  # open connections between POSTs, the last used on top
        self._heads: dict[tuple, bytes | None] = {}

    def post(self, body: bytes, headers: dict, stream: bool = False):
        """The response (a ``RawResponse`` or a ``requests.Response``) to ``body`` POSTed with
        ``headers``; UpstreamError if none came. With traces on, the span current in this
        greenlet (a request's) goes as ``traceparent``."""
        head = self._head(headers) if self.fast and is_empty(self.session.cookies) else None
        if head is not None and self._bearer is not None:
            head = self._with_token(head)
        if tracing.on:
            head, headers = _traced(head, headers)
        if head is None:
            return self._slow(body, headers, stream)
        response = self._exchange(head, body)
        status = response.status_code
        if (300 <= status < 400 and "location" in response.headers) \
                or (status in (401, 403) and self._bearer is not None):
            response.close()  # requests follows the redirect, or the auth reacts to the refusal
            logger.debug("POST answered %s: sent again through requests", status)
            return self._slow(body, headers, stream)
        if "set-cookie" in response.headers:
            keep(self.session.cookies, response.header_list, self._prepared)
        if not stream:
            try:
                response.content  # noqa: B018 - read it whole, as requests does without stream
            except Exception as exc:
                raise _failed(exc, False) from exc
            finally:
                response.close()
        return response

    def _slow(self, body: bytes, headers: dict, stream: bool) -> requests.Response:
        try:
            return self.session.post(self.url, data=body, headers=headers, stream=stream,
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            raise UpstreamError(f"POST failed: {describe(exc)}") from exc

    def _head(self, headers: dict) -> bytes | None:
        """The request head for these headers, up to the Content-Length (cached); None if
        a header is one requests would refuse (it then says so on the slow path)."""
        key = tuple(headers.items())
        head = self._heads.get(key, b"")
        if head == b"":
            if len(self._heads) > 16:  # a few header sets are in use; never grow unbounded
                self._heads.clear()
            head = self._heads[key] = self._build(headers)
        return head

    def _with_token(self, head: bytes) -> bytes | None:
        token = self._bearer()
        if not token:
            return head
        if self._token is None or self._token[0] != token:
            value = f"Bearer {token}"
            try:
                check_header_validity(("Authorization", value))
                line = f"Authorization: {value}\r\n".encode("latin-1")
            except (InvalidHeader, UnicodeEncodeError):
                return None
            self._token = (token, line)
        return head + self._token[1]

    def _build(self, headers: dict) -> bytes | None:
        merged = requests.structures.CaseInsensitiveDict(self.session.headers)
        for name, value in headers.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        if self._bearer is not None:  # its header follows, per POST
            merged.pop("Authorization", None)
        elif self.session.auth is not None:  # HTTPBasicAuth: one static header, its own
            merged["Authorization"] = self.session.auth(self._prepared.copy()).headers[
                "Authorization"]
        lines = [f"POST {self.target} HTTP/1.1", f"Host: {self.host}"]
        try:
            for name, value in merged.items():
                check_header_validity((name, value))
                if name.lower() not in ("host", "content-length", "transfer-encoding"):
                    lines.append(f"{name}: {value}")
            return ("\r\n".join(lines) + "\r\n").encode("latin-1")
        except (InvalidHeader, UnicodeEncodeError):
            return None

    def _connection(self):
        """An idle connection still open, else a new one (not yet connected) made by the
        session's pool for this URL, with the session's TLS settings."""
        while self._idle:
            conn = self._idle.pop()
            if conn.sock is not None and _still_open(conn.sock):
                return conn
            conn.close()
        if self._pool is None:
            self._pool = pool_for(self.session, self.url, self._prepared)
        return new_connection(self._pool)

    def _release(self, conn, reuse: bool) -> None:
        if reuse and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close the idle connections (a POST still under way closes its own at its end)."""
        while self._idle:
            self._idle.pop().close()

    def _exchange(self, head: bytes, body: bytes) -> RawResponse:
        try:
            conn = self._connection()
        except (Urllib3Error, requests.RequestException) as exc:
            raise UpstreamError("POST failed: ConnectionError") from exc
        release = lambda reuse: self._release(conn, reuse)  # noqa: E731
        connecting = conn.sock is None
        try:
            if connecting:
                conn.timeout = self.timeout[0]
                conn.connect()
                connecting = False
                conn.sock.settimeout(self.timeout[1])  # kept while the connection is
            sock = conn.sock
            head += b"Content-Length: %d\r\n\r\n" % len(body)
            if len(body) <= INLINE_BODY:
                _send(sock, head + body)
            else:
                _send(sock, head)
                _send(sock, body)
        except BaseException as exc:
            release(False)
            if isinstance(exc, Exception):
                raise _failed(exc, connecting) from exc
            raise
        try:
            return RawResponse(sock, release)  # it releases the connection if it fails
        except Exception as exc:
            raise _failed(exc, False) from exc


def _traced(head: bytes | None, headers: dict) -> tuple[bytes | None, dict]:
    """The head and the headers with the current span's trace context (one-off header
    lines: the cached heads stay as they were)."""
    trace = tracing.inject(tracing.current_span(), {})
    if not trace:
        return head, headers
    if head is not None:
        head += "".join(f"{name}: {value}\r\n" for name, value in trace.items()
                        if value.isascii() and value.isprintable()).encode("ascii")
    return head, {**headers, **trace}


def _send(sock, data: bytes) -> None:
    # one send() usually takes it all; gevent's sendall asks getsockopt(SO_SNDBUF) first
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def _still_open(sock) -> bool:
    """An idle connection with something to read was closed by the remote (or it sent
    what no request asked for): either way not one to send on. One poll(2), no wait."""
    poller = _poll()
    poller.register(sock.fileno(), POLLIN)
    return not poller.poll(0)


def _failed(exc: Exception, connecting: bool) -> UpstreamError:
    """The error of the slow path: it names the requests exception this failure would have
    been (the client reads that name in the error answer)."""
    name = "ConnectionError"
    if isinstance(exc, (Urllib3SSLError, ssl.SSLError, ssl.CertificateError)):
        name = "SSLError"
    elif isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        name = "ConnectTimeout"
    elif isinstance(exc, TimeoutError):
        name = "ConnectTimeout" if connecting else "ReadTimeout"
    elif isinstance(exc, BrokenResponse) and exc.args[0] == "chunks":
        name = "ChunkedEncodingError"
    return UpstreamError(f"POST failed: {name}")
