"""The HTTP pieces the edge's views share: whole responses and errors, event-stream
responses, and the checks and reading of a POST's body.

This module owns the shape of what the edge answers (status, headers, a JSON-RPC error body)
and how a request body becomes a message; it never decides which answer a request gets.

The checks on every POST read the WSGI environ directly rather than through Flask's
``request``: werkzeug's lazily parsed headers, MIME types and streams cost more per request
than the rest of relaying a message did.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote_plus

from flask import Response
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header
from werkzeug.wsgi import get_input_stream

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.errors import MessageError, ServerBusy

SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
_CACHED_HEADER = 256  # longer Accept headers are parsed every time, never kept


def query_session(query: str) -> str | None:
    """An HTTP+SSE POST's ``session_id`` (or ``sessionId``) from its query string."""
    found: dict[str, str] = {}
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key in ("session_id", "sessionId") and key not in found:
            found[key] = unquote_plus(value)
    return found.get("session_id") or found.get("sessionId")


class WholeResponse(Response):
    """A response whose body is given whole, in one piece (a JSON message, a short text, or
    none), and ready to go out as it is.

    werkzeug sends any response by copying its headers to fix up ``Location`` and the
    length, and by wrapping its body in two iterators: together as much work as building
    the response, and half of what the JSON answer to a small message cost. A
    ``WholeResponse`` never has a ``Location`` header, already has its ``Content-Length``
    and never answers a HEAD (no route takes HEAD) or with 1xx, 204 or 304, so it goes out
    as it is. Give it ``b""`` rather than no body: only a given body sets ``Content-Length``.
    """

    def get_wsgi_response(self, environ):
        return self.response, self.status, self.headers.to_wsgi_list()


def text_error(status: int, text: str, **headers: str) -> Response:
    return WholeResponse(text, status=status, mimetype="text/plain", headers=headers)


def rpc_error(status: int, code: int, text: str, request_id=None, **headers: str) -> Response:
    """An HTTP error whose body is a JSON-RPC error, as Streamable HTTP servers answer."""
    body = jsonrpc.encode(jsonrpc.error_obj(request_id, code, text))
    return WholeResponse(body, status=status, mimetype="application/json", headers=headers)


RETRY_AFTER = "2"  # seconds a client should wait before resending to a busy server


def server_busy(exc: ServerBusy, message: Message) -> Response:
    """503 for a message the server could not take: nothing was sent, the client may retry."""
    request_id = message.id if message.kind == jsonrpc.REQUEST else None
    return rpc_error(503, jsonrpc.INTERNAL_ERROR, f"Server busy: {exc}; retry later",
                     request_id, **{"Retry-After": RETRY_AFTER})


def too_many_sessions(exc: Exception) -> Response:
    """503 for a session over the limit: nothing was opened; the client may try later."""
    return rpc_error(503, jsonrpc.INTERNAL_ERROR, f"Too many sessions: {exc}; try again later",
                     **{"Retry-After": RETRY_AFTER})


def server_removed(exc: Exception) -> Response:
    """404 for a server a config reload took out (or a request that raced that reload)."""
    return rpc_error(404, jsonrpc.INVALID_REQUEST, f"Not Found: {exc}")


def event_stream(chunks: Iterable[bytes], **headers: str) -> Response:
    response = Response(chunks, mimetype="text/event-stream", headers={**SSE_HEADERS, **headers})
    response.direct_passthrough = True  # Flask must not buffer or re-encode the chunks
    return response


def _parse_accept(header: str) -> tuple[bool, bool]:
    if not header.strip():
        return True, True  # no preference: anything goes
    accept = parse_accept_header(header, MIMEAccept)
    return accept["application/json"] > 0, accept["text/event-stream"] > 0


_parse_accept_cached = lru_cache(maxsize=64)(_parse_accept)


def accepts(environ: dict) -> tuple[bool, bool]:
    """Whether the client accepts (JSON, an event stream); clients repeat one Accept header."""
    header = environ.get("HTTP_ACCEPT", "")
    if len(header) > _CACHED_HEADER:
        return _parse_accept(header)
    return _parse_accept_cached(header)


def is_json(environ: dict) -> bool:
    return environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() == "application/json"


def _content_length(environ: dict) -> int | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _too_large(limit: int) -> Response:
    return rpc_error(413, jsonrpc.INVALID_REQUEST, f"Request body too large (limit {limit} bytes)")


def too_large(environ: dict, limit: int) -> Response | None:
    """413 if the declared body is over the limit (checked before reading it)."""
    length = _content_length(environ)
    return _too_large(limit) if length is not None and length > limit else None


def read_message(environ: dict, limit: int) -> Message | Response:
    """The body as a validated message, or the 4xx response that says why it is not one."""
    body = read_body(environ, limit)
    if isinstance(body, Response):
        return body
    try:
        return jsonrpc.parse(body)
    except MessageError as exc:
        return rpc_error(400, exc.code, exc.message)


def read_body(environ: dict, limit: int) -> bytes | Response:
    """The body's bytes, or 413 if it is over ``limit``."""
    length = _content_length(environ)
    if length is None:  # chunked: werkzeug knows whether the server delimits the body
        stream, want = get_input_stream(environ, max_content_length=None), limit + 1
    else:
        stream, want = environ["wsgi.input"], min(length, limit + 1)
    parts, size = [], 0
    while size < want:  # one read, as a rule: the server has the body (BytesIO: no copy)
        chunk = stream.read(want - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    if size > limit:
        return _too_large(limit)
    return parts[0] if len(parts) == 1 else b"".join(parts)
