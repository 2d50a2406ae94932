"""The frames workers publish to each other: their bytes, their kinds, and a call's fields.

It owns the format of a frame: a small JSON header, a newline, and the payload bytes as they
are (a body, an SSE chunk): no re-encoding. It never touches Redis (bus.py publishes frames)
and never acts on one (router.py dispatches them). A header's ``k`` is the frame's kind:

- from a receiving worker to an owner: ``call``, a forwarded request (below; the payload is
  its body); ``cancel``, its client left (``c`` of worker ``f``); ``held``, the calls worker
  ``f`` still waits for (``cs``, each ping interval);
- from an owner back, for call ``c``: ``resp``, a whole answer (status ``st``, headers ``h``,
  the body), or ``head`` (the same without a body), one ``data`` per event and ``end``; and
  ``alive``, the calls of the receiving worker served here (``cs``, each ping interval);
- ``probe``: counted by PUBLISH, dropped by whoever reads it (owner_watch.py).

A payload over the bus' threshold travels by reference: ``b`` names its key and ``n`` its
size, what it weighs against ``--max-queued-size``.
"""

from __future__ import annotations

import hashlib
import json

from mcp_proxy.core import tracing

# request headers that never cross the bus: credentials, the hop's own, and Origin (checked
# where the request landed, which also adds the CORS headers to the answer)
_PRIVATE = {"HTTP_AUTHORIZATION", "HTTP_X_API_KEY", "HTTP_COOKIE", "HTTP_PROXY_AUTHORIZATION",
            "HTTP_ORIGIN", "HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TE",
            "HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"}
_CALL_FIELDS = ("f", "c", "m", "p", "q", "s", "a")  # strings; "h" maps strings to strings


def encode(header: dict, payload: bytes = b"") -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode(data: bytes) -> tuple[dict, bytes]:
    head, _, payload = data.partition(b"\n")
    return json.loads(head), payload


def weight(header: dict, payload: bytes) -> int:
    """What a frame weighs against ``--max-queued-size``: a large one travels by reference
    with an empty payload, and its header says how large it is (``n``)."""
    size = header.get("n")
    return size if type(size) is int and size >= 0 else len(payload)


def auth_digest(environ: dict) -> str:
    """What stands for the caller's credentials: a digest, never the secret itself."""
    if "mcp_proxy.auth" in environ:
        return environ["mcp_proxy.auth"]
    authorization = environ.get("HTTP_AUTHORIZATION")
    return hashlib.sha256(authorization.encode()).hexdigest() if authorization else ""


def call_frame(environ: dict, corr: str, sender: str) -> dict:
    """A ``call`` frame's header: call ``corr`` of worker ``sender``, for this request:
    method ``m``, path ``p``, query ``q``, scheme ``s``, its headers minus credentials
    ``h`` (with traces on, its ``traceparent`` names this worker's span), a digest of its
    credentials ``a``, and the scopes its token holds ``sc`` (a list; absent: every one)."""
    headers = {key: value for key, value in environ.items()
               if key.startswith("HTTP_") and key not in _PRIVATE}
    if environ.get("CONTENT_TYPE"):
        headers["CONTENT_TYPE"] = environ["CONTENT_TYPE"]
    if tracing.on:  # the owner's span is the child of this request's span (owner.py)
        for key, value in tracing.inject(tracing.current_span(), {}).items():
            headers[f"HTTP_{key.upper()}"] = value
    frame = {"k": "call", "c": corr, "f": sender, "m": environ["REQUEST_METHOD"],
             "p": environ.get("PATH_INFO", "/"), "q": environ.get("QUERY_STRING", ""),
             "s": environ.get("wsgi.url_scheme", "http"), "h": headers,
             "a": auth_digest(environ)}
    scopes = environ.get("mcp_proxy.scopes")
    if scopes is not None:  # a token's scopes (tool_scopes.py); none: it holds every one
        frame["sc"] = sorted(scopes)
    return frame


def well_formed(header: dict) -> bool:
    """Whether a ``call`` frame has every field the owner reads, each of its type."""
    headers, scopes = header.get("h"), header.get("sc", [])
    return all(type(header.get(key)) is str for key in _CALL_FIELDS) \
        and type(scopes) is list and all(type(scope) is str for scope in scopes) \
        and type(headers) is dict \
        and all(type(k) is str and type(v) is str for k, v in headers.items())
