"""Small HTTP helpers shared by the transports: error bodies, SSE responses, body reading."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Response, current_app, request

from mcp_proxy import jsonrpc
from mcp_proxy.errors import MessageError
from mcp_proxy.jsonrpc import Message

SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


def text_error(status: int, text: str, **headers: str) -> Response:
    return Response(text, status=status, mimetype="text/plain", headers=headers)


def rpc_error(status: int, code: int, text: str, request_id=None, **headers: str) -> Response:
    """An HTTP error whose body is a JSON-RPC error, as Streamable HTTP servers answer."""
    body = jsonrpc.encode(jsonrpc.error_obj(request_id, code, text))
    return Response(body, status=status, mimetype="application/json", headers=headers)


def event_stream(chunks: Iterable[bytes], **headers: str) -> Response:
    response = Response(chunks, mimetype="text/event-stream", headers={**SSE_HEADERS, **headers})
    response.direct_passthrough = True  # Flask must not buffer or re-encode the chunks
    return response


def _too_large(limit: int) -> Response:
    return rpc_error(413, jsonrpc.INVALID_REQUEST, f"Request body too large (limit {limit} bytes)")


def too_large() -> Response | None:
    """413 if the declared body is over the limit (checked before reading it)."""
    limit = current_app.config["MCP_MAX_BODY"]
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    return None


def read_message() -> Message | Response:
    """The body as a validated message, or the 4xx response that says why it is not one."""
    limit = current_app.config["MCP_MAX_BODY"]
    parts, size = [], 0
    while size <= limit:
        chunk = request.stream.read(min(limit + 1 - size, 1 << 20) or 1)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    body = b"".join(parts)
    if size > limit:
        return _too_large(limit)
    try:
        return jsonrpc.parse(body)
    except MessageError as exc:
        return rpc_error(400, exc.code, exc.message)


def json_content_type() -> bool:
    return (request.mimetype or "") == "application/json"
