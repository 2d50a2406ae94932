"""Who sent a request, as an audit line names them (audit.py): never their secret.

A session is named by the request that opened it; a 2026-07-28 request by itself.
"""

from __future__ import annotations

from mcp_proxy.server.scaleout.frames import auth_digest

DIGEST_PREFIX = 12  # hex digits of the credentials' SHA-256 that name a caller


def caller_of(environ: dict, with_token: bool) -> str:
    """The request's client address (a request forwarded by another worker, which carries
    none, names that worker), and with ``with_token`` its caller: the guard's principal
    (``key:`` and the key's id; an OAuth token's
    ``sub:`` and 16 hex digits, resource_meta.py), else a digest prefix of its credentials."""
    address = environ.get("REMOTE_ADDR") or ""
    if not address and environ.get("mcp_proxy.forwarded"):
        address = f"worker:{environ['mcp_proxy.forwarded']}"
    if with_token and environ.get("mcp_proxy.auth"):
        return f"{address or '?'} {environ['mcp_proxy.auth']}"
    digest = auth_digest(environ) if with_token else ""
    return f"{address or '?'} token:{digest[:DIGEST_PREFIX]}" if digest else address or "?"
