"""The 2026-07-28 era as client mode's HTTP client: which bodies are modern, the headers each
POST carries, which listed tools are usable, and HTTP failures as JSON-RPC errors.

Pure functions over messages: no I/O, no state. The headers are derived from the body alone
(PROTOCOL.md §3.4): ``MCP-Protocol-Version`` and ``Mcp-Method`` always, ``Mcp-Name`` for the
methods that name something, and ``Mcp-Param-*`` for the ``tools/call`` arguments a tool's
``x-mcp-header`` annotations name. Never an ``Mcp-Session-Id``.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.protocol import LEGACY_VERSIONS, MODERN_VERSION, NAMED_BY, VERSION_KEY
from mcp_proxy.errors import ProxyError

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)
MAX_PAGES = 10  # of a tools/list the proxy makes itself

HEADER_KEY = "x-mcp-header"
_SAFE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: survives an HTTP field as is
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name characters
_HEADER_TYPES = ("string", "integer", "boolean")
# JSON Schema keywords whose values are schemas: an annotation found below one of them is not
# on a plain chain of ``properties`` from the root, so the spec calls it invalid.
_ONE = ("items", "contains", "additionalProperties", "propertyNames", "unevaluatedItems",
        "unevaluatedProperties", "not", "if", "then", "else", "contentSchema")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_NAMED = ("patternProperties", "dependentSchemas", "$defs", "definitions")


def version_of(message: Message) -> str | None:
    """The body's ``_meta`` protocol version: set on every 2026-07-28 request, never before."""
    meta = message.params.get("_meta")
    version = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def is_modern_version(version: Any) -> bool:
    return isinstance(version, str) and version not in LEGACY_VERSIONS


def header_value(value: str) -> str:
    """``value`` as an HTTP field value: base64 in the sentinel when it would not survive."""
    if _SAFE.fullmatch(value) and value == value.strip() \
            and not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def _rendered(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    return None  # numbers may not carry headers (float text is not portable); objects neither


def headers_for(message: Message, version: str, params_of: dict) -> dict[str, str]:
    """The 2026-07-28 headers of one POST; ``params_of`` maps a tool to {path: header name}."""
    headers = {"MCP-Protocol-Version": version}
    if message.method is None:
        return headers
    headers["Mcp-Method"] = message.method
    key = NAMED_BY.get(message.method)
    if key is None:
        return headers
    params = message.obj.get("params") or {}  # the whole message: a long name is not routing
    name = params.get(key)
    if isinstance(name, str):
        headers["Mcp-Name"] = header_value(name)
    arguments = params.get("arguments")
    if message.method == "tools/call" and isinstance(arguments, dict):
        for path, header in params_of.get(name, {}).items():
            value: Any = arguments
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            text = _rendered(value)
            if text is not None:
                headers["Mcp-Param-" + header] = header_value(text)
    return headers


def header_paths(schema: Any) -> dict[tuple, str] | None:
    """{argument path: header name} of a tool's input schema, or None if an ``x-mcp-header``
    annotation in it is invalid (off a plain ``properties`` chain, not a token, on a type
    other than string/integer/boolean, or a name used twice)."""
    found: dict[tuple, str] = {}
    stack: list[tuple[tuple | None, Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        if HEADER_KEY in node:
            name = node[HEADER_KEY]
            if not path or not isinstance(name, str) or not _TOKEN.fullmatch(name) \
                    or node.get("type") not in _HEADER_TYPES \
                    or name.lower() in {used.lower() for used in found.values()}:
                return None
            found[path] = name
        for keyword, value in node.items():
            if keyword == "properties" and isinstance(value, dict):
                stack += [((*path, prop) if path is not None else None, sub)
                          for prop, sub in value.items()]
            elif keyword in _ONE:
                stack.append((None, value))
            elif keyword in _MANY and isinstance(value, list):
                stack += [(None, sub) for sub in value]
            elif keyword in _NAMED and isinstance(value, dict):
                stack += [(None, sub) for sub in value.values()]
    return found


def header_params(tools: Any) -> dict[str, dict[tuple, str] | None]:
    """Tool name -> {argument path: header name} from a tools/list result, as client mode
    reads them (None: its ``x-mcp-header`` annotations are invalid); the server's
    2026-07-28 lane and bridge check ``Mcp-Param-*`` headers with it."""
    return {tool["name"]: header_paths(tool.get("inputSchema"))
            for tool in (tools if isinstance(tools, list) else ())
            if isinstance(tool, dict) and isinstance(tool.get("name"), str)}


def list_header_params(request: Callable[[str, dict, float], dict], params: dict,
                       timeout: float) -> dict[str, dict[tuple, str] | None]:
    """Every tool's :func:`header_params`, listed with ``request(method, params, timeout)``
    (at most ``MAX_PAGES`` pages); raises ProxyError if the listing fails."""
    found: dict[str, dict[tuple, str] | None] = {}
    cursor = None
    for _ in range(MAX_PAGES):
        try:
            result = request("tools/list", {**params, **({"cursor": cursor} if cursor else {})},
                             timeout)
        except ProxyError as exc:
            raise ProxyError(f"tools/list failed: {exc}") from None
        found.update(header_params(result.get("tools")))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return found


def usable_tools(answer: Message, params_of: dict) -> Message:
    """A ``tools/list`` answer without the tools whose ``x-mcp-header`` annotations are
    invalid (the client's MUST); the header paths of the rest are added to ``params_of``."""
    result = answer.obj.get("result")
    tools = result.get("tools") if isinstance(result, dict) else None
    if not isinstance(tools, list):
        return answer
    kept = []
    for tool in tools:
        name = tool.get("name") if isinstance(tool, dict) else None
        paths = header_paths(tool.get("inputSchema")) if isinstance(tool, dict) else None
        if paths is None:
            logger.warning("remote tool %r dropped from tools/list: its x-mcp-header "
                           "annotations are invalid", name)
            continue
        params_of[name] = paths
        kept.append(tool)
    if len(kept) == len(tools):
        return answer
    return Message({**answer.obj, "result": {**result, "tools": kept}})


def http_error(request_id: Any, answer: requests.Response) -> Message:
    """An HTTP failure as the JSON-RPC error for ``request_id``: the remote's own code,
    message and data when the body is a JSON-RPC error (-32020 and -32022 decide what a
    client does next), else -32000 ``HTTP <status>: <text>``."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return Message({"jsonrpc": "2.0", "id": request_id, "error": error})
    text = " ".join(answer.text.split())[:300] or answer.reason or ""
    return jsonrpc.error_message(request_id, jsonrpc.CONNECTION_CLOSED,
                                 f"HTTP {answer.status_code}: {text}".rstrip(": "))


def modern_version(offer: dict) -> str | None:
    """The 2026-07-28-era version to speak, from a DiscoverResult or the data of a -32022
    (None: it offers none)."""
    versions = offer.get("supportedVersions", offer.get("supported"))
    offered = [v for v in versions if is_modern_version(v)] if isinstance(versions, list) else []
    if MODERN_VERSION in offered:
        return MODERN_VERSION
    return offered[-1] if offered else None
