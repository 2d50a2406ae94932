"""What a span and an audit line say of one JSON-RPC call, in both modes: server mode's relay
meters (server/traced_meter.py, server/audit.py) and client mode's remote spans
(upstream/remote_spans.py) read a call and its answer the same way."""

from __future__ import annotations

from typing import Any

from mcp_proxy.core import jsonrpc, tracing
from mcp_proxy.core.jsonrpc import Message

# the name attribute of each method that names something, as OpenTelemetry's MCP semantic
# conventions call it
NAMED = {"tools/call": ("name", "gen_ai.tool.name"), "prompts/get": ("name", "gen_ai.prompt.name"),
         "resources/read": ("uri", "mcp.resource.uri"),
         "resources/subscribe": ("uri", "mcp.resource.uri"),
         "resources/unsubscribe": ("uri", "mcp.resource.uri")}


def named(method: str, params: dict) -> tuple[str, dict[str, str]]:
    """A request's span name (``tools/call echo``) and the attribute naming its tool, prompt
    or resource (none for a method that names nothing, or a name that is not text)."""
    spec = NAMED.get(method)
    if spec is not None:
        target = params.get(spec[0])
        if isinstance(target, str):
            return f"{method} {target}"[:200], {spec[1]: target}
    return method, {}


def outcome_of(answer: Message) -> str:
    """``ok``, ``tool error`` (a result with ``isError``), ``input required`` (a 2026-07-28
    round that asks the client first) or ``error CODE``."""
    error = answer.error
    if error is not None:
        return f"error {error.get('code')}"
    if answer.request_state is not None:
        return "input required"
    if len(answer.raw) <= jsonrpc.SLIM_ABOVE:  # whole in memory: no parse to look
        result = answer.obj.get("result")
        if isinstance(result, dict) and result.get("isError") is True:
            return "tool error"
    return "ok"


def error_of(answer: Message) -> tuple[int | None, str | None]:
    """An error answer's code (when it is a number) and its text for a span's status."""
    error = answer.error
    if error is None:
        return None, None
    code = error.get("code")
    return code if isinstance(code, int) else None, str(error.get("message"))[:200]


def handed_on(message: Message, span: Any) -> Message:
    """A copy of the request ``message`` whose ``params._meta`` names ``span``; the message
    itself when its params are positional or its ``_meta`` is not an object (not ours to
    replace, whatever the other end makes of it)."""
    params = message.obj.get("params")
    if params is not None and not isinstance(params, dict):
        return message
    meta = (params or {}).get("_meta", {})
    if not isinstance(meta, dict):
        return message
    return jsonrpc.rewritten(message, params={"_meta": tracing.inject(span, dict(meta))})


def start_call(open_spans: dict, message: Message, parent: Any, kind: str,
               attributes: dict) -> Any:
    """Open request ``message``'s span (named for its method and target, with ``attributes``
    and the call's own) under ``parent``, kept in ``open_spans`` by the request's id; a span
    still open under that id ends first: one answer cannot tell which of the two it ends."""
    name, target = named(message.method, message.params)
    key = jsonrpc.id_key(message.id)
    earlier = open_spans.pop(key, None)
    if earlier is not None:
        tracing.end_span(earlier, "no answer: the client sent another request with its id")
    span = open_spans[key] = tracing.start_span(name, parent, kind, {
        **attributes, "mcp.method.name": message.method,
        "jsonrpc.request.id": str(message.id), "mcp.proxy.request.bytes": len(message.raw),
        **target})
    return span
