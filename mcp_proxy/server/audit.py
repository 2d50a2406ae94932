"""The audit trail: one line per ``tools/call``, ``resources/read`` and ``prompts/get``.

With ``--log-calls`` (or ``"audit": true`` for one server), the bridges of an audited server
count through an :class:`AuditMeter` instead of a plain ``RelayMeter`` (metrics.py): it
sees the call go to the server and its answer come back, as every server-mode path carries
them (a session's own child, a port of a shared child, a 2026-07-28 request's port), and
logs one line on the ``mcp_proxy.audit`` logger when the call ends. A call forwarded
through Redis is logged once, by the worker that owns its session (it holds the bridge).
A server without an audit has plain meters: no cost per message.

A line says when, who (``caller``, server/caller.py: the client's address, and with
``--auth-token`` a digest prefix of its credentials, never the token), which server and
session, the method and its name (the tool, the prompt, or the resource's URI), how long
it took, its outcome (``ok``, ``tool error``, ``input required``, ``error CODE``,
``cancelled``, or ``no answer`` when the session ended first, with the reason) and the
bytes of the request and of its answer. Arguments only with ``--log-call-arguments``;
results never.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.call_spans import outcome_of
from mcp_proxy.core.jsonrpc import Message, id_key
from mcp_proxy.server.metrics import Latency, RelayMeter

audit_log = logging.getLogger("mcp_proxy.audit")

AUDITED = frozenset(("tools/call", "resources/read", "prompts/get"))
_PLAIN = re.compile(r"[\w./:@+-]+\Z", re.ASCII)  # a text value that needs no quotes


def as_text(value: Any) -> str:
    """A value in a text audit line: a plain word as it is, anything else as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str) and _PLAIN.match(value):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, default=str)


class AuditMeter(RelayMeter):
    """A relay meter that also writes the audit line of every call it sees end."""

    __slots__ = ("server", "arguments", "session", "caller", "_open")

    def __init__(self, up: dict[str, int], down: dict[str, int], latency: Latency,
                 server: str = "default", arguments: bool = False) -> None:
        super().__init__(up, down, latency)
        self.server, self.arguments = server, arguments
        self.session: str | None = None
        self.caller = "?"
        self._open: dict = {}  # id_key -> (start, method, name, bytes in, arguments)

    def watch(self, link, session: str | None, caller: str) -> None:
        self.session, self.caller = session, caller
        link.ended.rawlink(lambda _: self.unanswered(link.close_reason))

    def client_to_server(self, message: Message) -> None:
        RelayMeter.client_to_server(self, message)
        kind = message.kind
        if kind == jsonrpc.REQUEST and message.method in AUDITED:
            params = message.params
            name = params.get("uri" if message.method == "resources/read" else "name")
            arguments = None
            if self.arguments:
                whole = message.obj.get("params")
                arguments = whole.get("arguments") if isinstance(whole, dict) else None
            key = id_key(message.id)
            earlier = self._open.get(key)
            if earlier is not None:  # one answer cannot tell which of the two it ends
                self._log(earlier, "no answer", 0, "the client sent another request with its id")
            self._open[key] = (time.perf_counter(), message.method, name, len(message.raw),
                               arguments)
        elif kind == jsonrpc.NOTIFICATION and self._open \
                and message.method == "notifications/cancelled":
            call = self._open.pop(id_key(message.params.get("requestId")), None)
            if call is not None:
                self._log(call, "cancelled", 0)

    def server_to_client(self, message: Message) -> None:
        RelayMeter.server_to_client(self, message)
        if message.kind == jsonrpc.RESPONSE and self._open:
            call = self._open.pop(id_key(message.id), None)
            if call is not None:
                self._log(call, outcome_of(message), len(message.raw))

    def unanswered(self, reason: str) -> None:
        """The bridge ended: every call still open had no answer."""
        calls, self._open = self._open, {}
        for call in calls.values():
            self._log(call, "no answer", 0, reason or "session ended")

    def _log(self, call: tuple, outcome: str, bytes_out: int, reason: str | None = None
             ) -> None:
        started, method, name, bytes_in, arguments = call
        fields: dict[str, Any] = {
            "method": method, "name": name, "outcome": outcome,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "caller": self.caller, "bytes_in": bytes_in, "bytes_out": bytes_out}
        if reason is not None:
            fields["reason"] = reason
        if self.arguments:
            fields["arguments"] = arguments
        text = " ".join(f"{key}={as_text(value)}" for key, value in (
            *fields.items(), ("server", self.server), ("session", self.session)))
        audit_log.info("call %s", text, extra={"session": self.session, "server": self.server,
                                                "fields": fields})
