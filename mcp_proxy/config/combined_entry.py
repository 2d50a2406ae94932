"""A combined server's entry (``{"servers": [...], "prefix": {...}}``): what the schema cannot say.

Its members must be enabled servers of the same file, local (``"command"``) or remote
(``"url"``), each named once; a combined server cannot be a member: its names are already
prefixed and its members already shared out, so nesting would only stack prefixes and hide
which process owns a tool (and a circle of combined servers would never start). Each
member's prefix (``MEMBER__`` unless ``"prefix"`` says otherwise) must make names clients
accept: ``[A-Za-z0-9_-]``. Tool names that collide
once prefixed can only be known from the members' lists: the server checks them at start
(``children/combined_check.py``), and so does ``--check-config``.
"""

from __future__ import annotations

import json
import re
from typing import Any

SAFE_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,32}")


def combined_problems(name: str, entry: dict, servers: dict) -> list[tuple[tuple, str]]:
    """Each problem of the combined entry ``name`` as (JSON path, what is wrong)."""
    at = ("mcpServers", name)
    found: list[tuple[tuple, str]] = []
    members = entry["servers"]
    if "command" in entry:
        found.append(((*at, "command"), 'a combined server ("servers") has no command'))
    if not members:
        found.append(((*at, "servers"), "a combined server needs at least one member"))
    seen: set[str] = set()
    for index, member in enumerate(members):
        where = (*at, "servers", index)
        other: Any = servers.get(member)
        if member in seen:
            found.append((where, f"{json.dumps(member)} is given more than once"))
        elif member == name:
            found.append((where, "a combined server cannot be its own member"))
        elif not isinstance(other, dict):
            found.append((where, f"no server {json.dumps(member)} in mcpServers"))
        elif other.get("enabled") is False:
            found.append((where, f"{json.dumps(member)} is disabled (\"enabled\": false)"))
        elif "servers" in other:
            found.append((where, f"{json.dumps(member)} is a combined server: a combined "
                                 f"server cannot contain another"))
        elif "prefix" not in entry or member not in entry["prefix"]:
            if not SAFE_PREFIX.fullmatch(f"{member}__"):
                found.append((where, f"the default prefix {json.dumps(member + '__')} is not "
                                     f"a name clients accept ([A-Za-z0-9_-], at most 32): give "
                                     f"one in \"prefix\""))
        seen.add(member)
    for member in entry.get("prefix", {}):
        if member not in seen:
            found.append(((*at, "prefix", member), f"{json.dumps(member)} is not a member"))
    return found
