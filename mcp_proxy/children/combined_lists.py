"""A combined server's answers made of its members' answers: ``initialize`` and the lists.

A :class:`Gather` is one client request sent to several members; when each has answered (or
failed) its ``done`` makes the one answer. ``initialize`` becomes the union of the members'
capabilities, the entry's name as ``serverInfo`` and the members' instructions under
headings; a list page becomes the members' pages in member order, their names through the
:class:`~mcp_proxy.children.combined_names.Names` tables, and a cursor for the members that
have more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp_proxy import __version__
from mcp_proxy.children.combined_names import Names, seal
from mcp_proxy.core.jsonrpc import Message

logger = logging.getLogger(__name__)

# a list method -> (its result's key, the capability that offers it, each item's name field)
LISTS = {"tools/list": ("tools", "tools", "name"),
         "prompts/list": ("prompts", "prompts", "name"),
         "resources/list": ("resources", "resources", "uri"),
         "resources/templates/list": ("resourceTemplates", "resources", "uriTemplate")}


class Gather:
    """One client request sent to several members; ``done`` runs once, when all answered."""

    __slots__ = ("original", "method", "waiting", "answers", "done")

    def __init__(self, original: Any, method: str, members: list[str],
                 done: Callable[[Gather], None]) -> None:
        self.original, self.method = original, method
        self.waiting = set(members)
        self.answers: dict[str, Message | None] = {}  # None: the member failed meanwhile
        self.done = done
        if not members:
            done(self)

    def add(self, member: str, answer: Message | None) -> None:
        if member not in self.waiting:
            return
        self.waiting.discard(member)
        self.answers[member] = answer
        if not self.waiting:
            self.done(self)

    def results(self, order: list[str]) -> list[tuple[str, dict]]:
        """(member, result) of each member that answered with a result, in member order."""
        found = []
        for member in order:
            answer = self.answers.get(member)
            result = None if answer is None else answer.obj.get("result")
            if isinstance(result, dict):
                found.append((member, result))
            elif answer is not None:
                error = answer.obj.get("error")
                logger.warning("%s of member %s failed: %s", self.method, member,
                               error.get("message") if isinstance(error, dict) else error)
        return found


def union(capabilities: list[Any]) -> dict:
    """The members' capabilities together: a feature any member has, flags any member sets."""
    merged: dict = {}
    for caps in capabilities:
        for name, value in (caps.items() if isinstance(caps, dict) else ()):
            if not isinstance(value, dict):
                merged.setdefault(name, value)
                continue
            into = merged.setdefault(name, {})
            if isinstance(into, dict):
                for key, flag in value.items():
                    into[key] = (into.get(key) is True) or flag if isinstance(flag, bool) \
                        else into.get(key, flag)
    return merged


def initialize_result(name: str, results: list[tuple[str, dict]], asked: Any) -> dict:
    """The combined server's ``initialize`` result from its members' (in member order)."""
    versions = sorted(r["protocolVersion"] for _, r in results
                      if isinstance(r.get("protocolVersion"), str))
    notes = [f"## {member}\n\n{r['instructions']}" for member, r in results
             if isinstance(r.get("instructions"), str) and r["instructions"].strip()]
    result = {"protocolVersion": versions[0] if versions else asked,
              "capabilities": union([r.get("capabilities") for _, r in results]),
              "serverInfo": {"name": name, "version": __version__}}
    if notes:
        result["instructions"] = "\n\n".join(notes)
    return result


def page(method: str, results: list[tuple[str, dict]], names: Names) -> dict:
    """One page of a combined list: the members' items renamed, and the next cursor."""
    key, _, field = LISTS[method]
    items, more = [], {}
    for member, result in results:
        for item in result.get(key) if isinstance(result.get(key), list) else ():
            if not isinstance(item, dict):
                continue
            shown = names.shown(member, item.get(field))
            if shown is not None:
                items.append(item if shown == item.get(field) else {**item, field: shown})
        cursor = result.get("nextCursor")
        if isinstance(cursor, str) and cursor:
            more[member] = cursor
    answer: dict = {key: items}
    if more:
        answer["nextCursor"] = seal(method, more)
    return answer
