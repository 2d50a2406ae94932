"""The protocol era of a POST to ``/mcp``, and the checks a 2026-07-28 request must pass here.

This module owns those decisions and the answers they make (400 with -32020, 405 for GET
and DELETE); it never relays a message.

Classification, first match wins (SESSIONS.md §A.2): an ``Mcp-Session-Id`` or an
``initialize`` body is the 2025 era; an ``MCP-Protocol-Version`` that is not a 2025-era
version, or a ``_meta`` protocol version in the body, is the 2026-07-28 era; anything else is
2025-era traffic without a session. GET and DELETE are 2025-era only.

The child never sees HTTP headers, so the proxy is the server that must check them against
the body: ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name`` and, for ``tools/call``,
each ``Mcp-Param-*`` that a tool's ``x-mcp-header`` names. A failure is 400 with -32020 and
the request never reaches the child; so does a ``tools/call`` whose headers cannot be checked
(its arguments not an object). Versions are not judged here: the child answers -32022
for one it does not speak, so the proxy stays version-agnostic.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from flask import Response

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import LEGACY_VERSIONS, NAMED_BY, VERSION_KEY
from mcp_proxy.server.responses import rpc_error

HEADER_MISMATCH = -32020
_ABSENT = object()
UNSUPPORTED_VERSION = -32022
# the HTTP status of a JSON answer that is an error, by its code (else 200)
STATUS_OF = {-32601: 404, -32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400,
             -32022: 400}


def is_modern(environ: dict, message: Message | None = None) -> bool:
    version = environ.get("HTTP_MCP_PROTOCOL_VERSION")
    if version is not None and version not in LEGACY_VERSIONS:
        return True
    meta = message.params.get("_meta") if message is not None else None
    return isinstance(meta, dict) and VERSION_KEY in meta


def decoded(value: str | None) -> str | None:
    """A header value, with the ``=?base64?…?=`` sentinel encoding undone."""
    if value is None or not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _mismatch(message: Message, text: str) -> Response:
    return rpc_error(400, HEADER_MISMATCH, f"Header mismatch: {text}", message.id)


def check_headers(environ: dict, message: Message) -> Response | None:
    """The 400 a modern request earns for its envelope or headers, or None if they agree."""
    params, method = message.params, message.method
    meta = params.get("_meta")
    version = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
    if version is None:
        return rpc_error(400, -32602, f"Invalid params: a 2026-07-28 request needs "
                         f"_meta[{VERSION_KEY!r}]", message.id)
    header = environ.get("HTTP_MCP_PROTOCOL_VERSION")
    if header != version:
        return _mismatch(message, f"MCP-Protocol-Version {header!r} is not the body's "
                                  f"{version!r}")
    if environ.get("HTTP_MCP_METHOD") != method:
        return _mismatch(message, f"Mcp-Method {environ.get('HTTP_MCP_METHOD')!r} is not the "
                                  f"body's {method!r}")
    key = NAMED_BY.get(method or "")
    if key is not None:
        name = decoded(environ.get("HTTP_MCP_NAME"))
        value = params.get(key)
        if value is None:  # a long name is not in a large message's routing view
            value = _whole_params(message).get(key)
        if name is None or name != value:
            return _mismatch(message, f"Mcp-Name does not match params.{key}")
    return None


def _same(header: str, value: Any) -> bool:
    if isinstance(value, bool):
        return header == ("true" if value else "false")
    if isinstance(value, (int, float)):
        try:
            number = float(header)
        except ValueError:
            return False
        return math.isfinite(number) and number == value
    return isinstance(value, str) and header == value


def _whole_params(message: Message) -> dict:
    params = message.obj.get("params")  # the whole: a large message's view lacks arguments
    return params if isinstance(params, dict) else {}


def check_params(environ: dict, message: Message,
                 headers: dict[tuple, str] | None) -> Response | None:
    """Each ``Mcp-Param-*`` of a ``tools/call`` against the argument its tool names
    (``headers``: {argument path: header name}; None: the tool's annotations are invalid)."""
    if headers is None:  # clients must drop such a tool: a call of it is not checkable
        return _mismatch(message, "the tool's x-mcp-header annotations are invalid")
    if not headers:
        return None
    arguments = _whole_params(message).get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):  # nothing to check the headers against: refused
        return rpc_error(400, -32602, "Invalid params: tools/call arguments must be an object",
                         message.id)
    for path, name in headers.items():
        header = environ.get("HTTP_MCP_PARAM_" + name.upper().replace("-", "_"))
        sent = decoded(header)
        value: Any = arguments
        for step in path:
            value = value.get(step, _ABSENT) if isinstance(value, dict) else _ABSENT
        if value is _ABSENT:
            if header is not None:  # a value that does not decode is still sent
                return _mismatch(message, f"Mcp-Param-{name} sent for an argument not given")
            continue
        if sent is None or not _same(sent, value):
            return _mismatch(message, f"Mcp-Param-{name} does not match argument "
                                      f"{'.'.join(path)!r}")
    return None


def legacy_only(message: Message, version: Any) -> Response:
    """Steer a modern client back to ``initialize``: a server the proxy cannot bridge to the
    2026-07-28 era (a combined server, a remote one) is served in the 2025 era only."""
    return Response(jsonrpc.encode(jsonrpc.error_obj(
        message.id, UNSUPPORTED_VERSION,
        "Unsupported protocol version: this MCP server is served in the 2025 protocol era "
        "only (open a session with initialize)",
        {"supported": list(LEGACY_VERSIONS), "requested": version})),
        status=400, mimetype="application/json")


def no_modern_streams() -> Response:
    return rpc_error(405, jsonrpc.INVALID_REQUEST, "Method Not Allowed: the 2026-07-28 era "
                     "has no GET stream and no session to delete", Allow="POST")


def json_status(message: Message) -> int:
    """The HTTP status of a modern JSON answer: from its error code, if it is an error."""
    error = message.error
    code = error.get("code") if isinstance(error, dict) else None
    return STATUS_OF.get(code, 200)
