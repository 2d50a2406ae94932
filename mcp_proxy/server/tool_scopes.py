"""Scopes per tool (``"toolScopes"`` in the config file): which tools each caller sees and calls.

This module owns the rules of one server (:class:`ToolScopes`: a tool name glob -> the OAuth
scope needed) and the gate of one conversation (:class:`ScopeGate`). A shared server process
serves many callers, so the gate stands where an answer reaches its caller (a session, or a
2026-07-28 request's port), never on the process's pipe: a ``tools/list`` answer loses, for
that caller only, the tools whose scope its token lacks, and a ``tools/call`` of such a tool
is refused before it reaches the server (``403 insufficient_scope`` on ``/mcp``, the JSON-RPC
error :data:`INSUFFICIENT_SCOPE` on the HTTP+SSE stream). A glob names a tool as the client
sees it (after any ``tools.rename``); a tool that matches several globs needs every scope they
name. A caller whose request carries no scopes (an API key) holds every scope. Without
``"toolScopes"`` no gate exists and no message pays for one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from mcp_proxy.config.settings import ResourceSettings, ServerSpec
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.server.resource_urls import WELL_KNOWN, endpoint_of, origin_of

logger = logging.getLogger(__name__)

# The JSON-RPC error of a refused call on the HTTP+SSE stream. Not -32001: the SDKs answer
# "Session not found" with it, and a client must not take a missing scope for a lost session.
INSUFFICIENT_SCOPE = -32003
_NAMES_CAP = 4096  # tool names whose scopes are remembered
_PENDING_CAP = 4096  # tools/list requests awaiting their answer, per conversation


class ToolScopes:
    """One server's rules: ``needed(name)`` is the scopes a caller must hold for a tool."""

    def __init__(self, spec: ServerSpec, oauth: ResourceSettings) -> None:
        self.rules = tuple(spec.tool_scopes.items())
        self.base = [*oauth.scopes, *spec.scopes]  # what every request here needs already
        self._needed: dict[str, frozenset[str]] = {}

    def needed(self, name: Any) -> frozenset[str]:
        if not isinstance(name, str):
            return frozenset()  # no tool's name: the server refuses the call itself
        found = self._needed.get(name)
        if found is None:
            if len(self._needed) >= _NAMES_CAP:
                self._needed.clear()
            found = self._needed[name] = frozenset(
                scope for glob, scope in self.rules if fnmatchcase(name, glob))
        return found

    def _log(self, environ: dict, message: Message, missing: frozenset[str]) -> str:
        lacks = " ".join(sorted(missing))
        logger.info("OAuth: refused tools/call %r on %s %s from %s %s: the token lacks scope %s",
                    str(message.params.get("name"))[:100], environ.get("REQUEST_METHOD"),
                    environ.get("PATH_INFO"), environ.get("REMOTE_ADDR") or
                    f"worker:{environ.get('mcp_proxy.forwarded', '?')}",
                    environ.get("mcp_proxy.auth", "?"), lacks)
        return lacks

    def challenge(self, environ: dict, message: Message,
                  missing: frozenset[str]) -> tuple[str, str]:
        """``/mcp``'s refusal of a call the caller's token has not the scope of (answered
        403 by relay.py): its text, and the ``WWW-Authenticate`` a client steps up from
        (every scope the endpoint and the tool need)."""
        lacks = self._log(environ, message, missing)
        endpoint = endpoint_of(environ.get("PATH_INFO", ""))
        scopes = " ".join(dict.fromkeys([*self.base, *sorted(missing)]))
        return (f"Forbidden: the token lacks scope {lacks}",
                f'Bearer error="insufficient_scope", scope="{scopes}", resource_metadata='
                f'"{origin_of(environ)}{WELL_KNOWN}{endpoint}"')

    def refusal(self, environ: dict, message: Message, missing: frozenset[str]) -> Message:
        """The HTTP+SSE answer to such a call: a JSON-RPC error, sent down the stream."""
        lacks = self._log(environ, message, missing)
        scopes = " ".join(dict.fromkeys([*self.base, *sorted(missing)]))
        return jsonrpc.error_message(message.id, INSUFFICIENT_SCOPE,
                                     f"Forbidden: the token lacks scope {lacks}",
                                     {"error": "insufficient_scope", "scope": scopes})


class ScopeGate:
    """One conversation's gate: it remembers each ``tools/list`` request's scopes until the
    answer comes, and takes out of that answer what they do not open."""

    def __init__(self, rules: ToolScopes) -> None:
        self.rules = rules
        self._lists: OrderedDict[tuple, frozenset[str]] = OrderedDict()

    def check(self, message: Message, scopes: frozenset[str] | None) -> frozenset[str] | None:
        """The scopes a ``tools/call`` lacks (None when it may go on); a ``tools/list`` is
        remembered with its caller's scopes. ``scopes`` None: the caller holds every one."""
        if scopes is None or message.kind != jsonrpc.REQUEST:
            return None
        method = message.method
        if method == "tools/list":
            lists = self._lists
            lists[id_key(message.id)] = scopes
            if len(lists) > _PENDING_CAP:  # answers that never came (a killed server)
                lists.popitem(last=False)
        elif method == "tools/call":
            return (self.rules.needed(message.params.get("name")) - scopes) or None
        return None

    def answer(self, message: Message) -> Message:
        """The answer as this caller sees it (only a ``tools/list`` answer changes)."""
        if not self._lists or message.kind != jsonrpc.RESPONSE:
            return message
        try:
            scopes = self._lists.pop(id_key(message.id))
        except (KeyError, TypeError):
            return message
        result = message.obj.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return message
        needed = self.rules.needed
        kept = [tool for tool in tools if not isinstance(tool, dict)
                or needed(tool.get("name")) <= scopes]
        if len(kept) == len(tools):
            return message  # nothing hidden: the bytes go on as they came
        return jsonrpc.result_message(message.obj.get("id"), {**result, "tools": kept})

    def gated(self, send: Callable[[Message], None]) -> Callable[[Message], None]:
        """``send`` (a session's, a request port's) with this gate in front of it."""
        answer = self.answer
        return lambda message: send(answer(message))
