"""A combined server's name tables: whose tool, prompt and resource each name is, and cursors.

Members' tool and prompt names reach the client as ``prefix + name`` (``MEMBER__`` unless the
entry's ``"prefix"`` says otherwise); a name clients would refuse (not ``[A-Za-z0-9_-]``, or
over 64 characters) is hidden with a warning, and so is a name a member listed after another
member had it (logged as an error: at start the same collision stops the server). A resource
URI belongs to the first member that lists it. A name the tables do not know yet (a client
that calls without listing, a stateless request) is resolved by its prefix.

List cursors encode, per member still to page, that member's own cursor, sealed with this
process's secret (like the lane's ``requestState``): a cursor the client made up or changed
is refused as invalid params (-32602), never passed on to a member.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
from typing import Any

logger = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET = os.urandom(32)  # cursors are good in the process that made them
_MAC_BYTES = 16


class Names:
    """One kind of name (tools, prompts, or resource URIs) of one combined server."""

    def __init__(self, kind: str, prefixes: dict[str, str] | None) -> None:
        """``prefixes``: member -> prefix (tools and prompts); None for URIs, kept as given."""
        self.kind = kind
        self.prefixes = prefixes
        self.owner: dict[str, tuple[str, str]] = {}  # shown name -> (member, member's name)
        self._warned: set[str] = set()
        self.collisions: list[str] = []  # what the start-up check reports (combined_check.py)
        self.quiet = False  # that check reports them itself

    def shown(self, member: str, name: Any) -> str | None:
        """The name clients see for ``member``'s ``name``; None if it is hidden (claimed here)."""
        if not isinstance(name, str):
            return None
        new = name if self.prefixes is None else self.prefixes[member] + name
        if self.prefixes is not None and not SAFE_NAME.fullmatch(new):
            self._warn(new, f"{self.kind} {new[:80]!r} of {member} is hidden: clients accept "
                            f"1 to 64 of [A-Za-z0-9_-]")
            return None
        held = self.owner.get(new)
        if held is None:
            self.owner[new] = (member, name)
        elif held[0] != member:
            if self.prefixes is None:
                self._warn(new, f"resource {new[:200]!r} is listed by {held[0]} and {member}: "
                                f"{held[0]}'s is served", level=logging.WARNING)
            else:
                text = f"{self.kind} {new!r} of {member} collides with {held[0]}'s {held[1]!r}"
                if len(self.collisions) < 100:
                    self.collisions.append(text)
                self._warn(new, f"{text}: hidden (give one of them a \"prefix\")",
                           level=logging.ERROR)
            return None
        return new

    def _warn(self, key: str, text: str, level: int = logging.WARNING) -> None:
        if not self.quiet and key not in self._warned and len(self._warned) < 4096:
            self._warned.add(key)
            logger.log(level, "%s", text)

    def resolve(self, name: Any, members: list[str]) -> tuple[str, str] | None:
        """(member, the member's name) for a name a client used; None if no member has it."""
        if not isinstance(name, str):
            return None
        held = self.owner.get(name)
        if held is not None or self.prefixes is None:
            return held
        best = None
        for member in members:  # the longest prefix that matches: "a_" and "a_b_" may both
            prefix = self.prefixes[member]
            if prefix and name.startswith(prefix) and len(name) > len(prefix) \
                    and (best is None or len(prefix) > len(self.prefixes[best])):
                best = member
        if best is not None:
            return best, name[len(self.prefixes[best]):]
        bare = [member for member in members if not self.prefixes[member]]
        return (bare[0], name) if bare else None

    def forget(self, member: str) -> None:
        """Drop ``member``'s names (it went away, or its list changed)."""
        self.owner = {name: held for name, held in self.owner.items() if held[0] != member}
        self._warned.clear()


def seal(method: str, pages: dict[str, Any]) -> str:
    """A cursor for the next page of ``method``: each member still to page, and its cursor."""
    body = base64.urlsafe_b64encode(json.dumps([method, pages], separators=(",", ":"))
                                    .encode()).decode().rstrip("=")
    return f"{body}.{_mac(body)}"


def unseal(method: str, cursor: Any) -> dict[str, Any] | None:
    """The members' cursors in a cursor this process made for ``method``; None if it did not."""
    if not isinstance(cursor, str) or len(cursor) > 65536 or not cursor.isascii() \
            or cursor.count(".") != 1:
        return None
    body, mac = cursor.split(".")
    if not hmac.compare_digest(mac, _mac(body)):
        return None
    try:
        kind, pages = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    return pages if kind == method and isinstance(pages, dict) else None


def _mac(body: str) -> str:
    digest = hmac.new(_SECRET, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
