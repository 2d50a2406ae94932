"""The 2026-07-28 lane's ``requestState`` handles, and the worker tag inside them.

Owns this process's signing secret and the handle format (sealing, opening, expiry); it
keeps no handle and knows no child: the lane (``lane.py``) decides whose a handle is.

An ``input_required`` result's ``requestState`` goes back to the caller wrapped in a handle
signed with this process's secret: it names the child generation it came from, the caller
(a digest of its credentials, or a one-time nonce) and an expiry. With ``--redis-url`` the
handle also names the worker that sealed it, so any worker can route the retry to it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import time
from typing import Any

HANDLE_PREFIX = "mcp-proxy:"
_HANDLE = HANDLE_PREFIX  # plus this worker's tag and a colon, with --redis-url
_SECRET = os.urandom(32)  # handles are only good in the process that made them
# the official SDK seals its own requestState for 10 minutes: a round may wait on a person
# (an elicitation form, a sampling approval), and a longer-lived handle would only outlive
# the server's own state; shorter bounds how long a leaked handle is any use
STATE_TTL = 600.0
# what a handle names its maker by: one count for the whole process, so that a handle made
# by one server's lane or bridged session opens nowhere else (another server's included)
_makers = itertools.count(1)


def new_maker() -> int:
    """A number no other lane generation or bridged session of this process has."""
    return next(_makers)


def set_worker_tag(tag: str) -> None:
    """Name this worker in every handle it makes, so another worker can route it back here."""
    global _HANDLE
    _HANDLE = f"{HANDLE_PREFIX}{tag}:"


def handle_worker(handle: Any) -> str | None:
    """The tag of the worker that sealed ``handle`` (None if it names none)."""
    if isinstance(handle, str) and handle.startswith(HANDLE_PREFIX):
        tag, colon, _ = handle[len(HANDLE_PREFIX):].partition(":")
        if colon and len(tag) == 8:
            return tag
    return None


def principal(credentials_digest: str) -> str:
    """A short tag for the caller's credentials (empty without any): never the secret itself.

    It is made from the scale-out forwarder's ``auth_digest``: the guard's caller (``key:ID``
    with API keys), else a digest of the Authorization header; that is what crosses the bus
    when another worker forwards the request.
    """
    if not credentials_digest:
        return ""
    return hmac.new(_SECRET, credentials_digest.encode(), hashlib.sha256).hexdigest()[:24]


def _sign(payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(_SECRET, payload, hashlib.sha256).digest()[:18]
                                    ).decode()


def wrap_state(state: Any, generation: int, caller: str) -> str:
    expires = round(time.monotonic() + STATE_TTL, 1)  # the secret is per process: so is this
    payload = base64.urlsafe_b64encode(json.dumps([generation, caller, expires, state]).encode())
    return _HANDLE + payload.decode() + "." + _sign(payload)


def unwrap_state(handle: Any, generation: int) -> tuple[str, Any] | None:
    """(the caller it was made for, the child's state) if ``handle`` is ours, for this child
    and not expired; else None."""
    if not isinstance(handle, str) or not handle.startswith(_HANDLE):
        return None
    payload, _, signature = handle[len(_HANDLE):].rpartition(".")
    if not hmac.compare_digest(_sign(payload.encode()), signature):
        return None
    try:
        made_for, made_by, expires, state = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    if made_for != generation or not time.monotonic() < expires:
        return None
    return made_by, state
