"""The protected MCP server half of ``oauth_server.py``: Streamable HTTP on ``/mcp`` and
HTTP+SSE on ``/sse`` + ``/messages/``, each refusing a missing, unknown or expired token with a
Bearer challenge (401) and the tool ``admin`` without its scope (403 insufficient_scope)."""

from __future__ import annotations

import json
import queue
import secrets
import time
from urllib.parse import parse_qs, urlsplit


class ProtectedMcp:
    """Mixed into the request handler: uses its ``reply``, ``form`` and server ``s``."""

    def bearer(self) -> dict | None:
        sent = self.headers.get("Authorization", "")
        record = self.s.tokens.get(sent[7:]) if sent.startswith("Bearer ") else None
        if record is None or record["expires"] < time.time() or not self.s.sw["accept"] \
                or record.get("refused"):
            return None
        return record

    def challenge(self, status: int = 401, **params) -> None:
        fields = {"error": "invalid_token", **params}
        if self.s.sw["prm"] == "header":
            fields["resource_metadata"] = self.s.base + "/meta/prm"
        if self.s.sw["challenge_scope"] and "scope" not in fields:
            fields["scope"] = self.s.sw["challenge_scope"]
        value = "Bearer " + ", ".join(f'{k}="{v}"' for k, v in fields.items())
        self.reply(status, {"error": fields["error"]}, WWW_Authenticate=value)

    def mcp(self) -> None:
        message = self.form()
        token = self.bearer()
        if token is None:
            return self.challenge()
        if "id" not in message:
            return self.reply(202)
        result = self.result_of(message, token)
        if result is not None:
            self.reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": result})

    def sse(self) -> None:
        """HTTP+SSE (2024-11-05): the stream names the endpoint, then carries the answers."""
        if self.bearer() is None:
            return self.challenge()
        session, outbox = secrets.token_hex(8), queue.Queue()
        self.s.sse_sessions[session] = outbox
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        event, data = "endpoint", f"/messages/?session_id={session}"
        while not self.s.closed.is_set():
            if data is not None:
                self.wfile.write(f"event: {event}\ndata: {data}\n\n".encode())
                self.wfile.flush()
            try:
                event, data = "message", outbox.get(timeout=0.3)
            except queue.Empty:
                data = None

    def sse_post(self) -> None:
        message = self.form()
        token = self.bearer()
        if token is None:
            return self.challenge()
        outbox = self.s.sse_sessions.get(parse_qs(urlsplit(self.path).query).get(
            "session_id", [""])[0])
        if outbox is None:
            return self.reply(404, {"error": "no such session"})
        result = self.result_of(message, token) if "id" in message else {}
        if result is not None:
            self.reply(202, b"Accepted", "text/plain")
        if result is not None and "id" in message:
            outbox.put(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}))

    def result_of(self, message: dict, token: dict) -> dict | None:
        """The result of a request, or None when a refusal was sent instead."""
        method, params = message.get("method"), message.get("params") or {}
        self.s.calls.append(method)
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "oauth-scripted", "version": "0"}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}}
                                for n in ("echo", "admin")]}
        elif method == "tools/call":
            if params.get("name") == "admin" and self.s.sw["admin_scope"] not in \
                    token["scope"].split():
                extra = {"scope": self.s.sw["admin_scope"]} \
                    if self.s.sw["stepup_scope_in_challenge"] else {}
                self.challenge(403, error="insufficient_scope", **extra)
                return None
            text = f"{params.get('name')}:{json.dumps(params.get('arguments') or {})}"
            result = {"content": [{"type": "text", "text": text}]}
        else:
            result = {}
        return result
