"""Tool filters: which of a server's tools a client sees, under which name and description.

A filter stands where the proxy meets the server's side of the conversation: on a stdio
server process's pipes in server mode (``children/process.py``: every session of a shared
process and the 2026-07-28 lane pass there too), on a remote server's link in server mode
(``upstream/remote_link.py``), on our own stdio in client mode (``client/stdio.py``); each
calls :meth:`ToolFilter.admit` and :meth:`ToolFilter.answer`. It rewrites two things and
answers one:

* a ``tools/list`` answer loses the hidden tools, and the others get their new names and
  descriptions (every page alike: the server's cursors pass untouched);
* a ``tools/call`` of a renamed tool goes to the server under the server's own name;
* a ``tools/call`` of a hidden tool, or of a name the client was never shown, is answered
  here with the error a server gives for an unknown tool (-32602); the server never sees it.

Every glob, rename key and description key names a tool as **the server** names it. A rename
hides the old name, and a tool of the server whose own name is some rename's new name is
hidden too (a call by that name reaches the renamed tool, so the other could not be called).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mcp_proxy.core import jsonrpc
from mcp_proxy.core.jsonrpc import Message

UNKNOWN_TOOL = -32602  # what SDK servers answer for a tool they do not have
_PENDING_CAP = 4096  # tools/list requests awaiting their answer, per filter


class Rules(Protocol):
    """What a filter reads of its rules (``config/settings.py:ToolRules``)."""

    rename: Mapping[str, str]  # the server's name -> the name clients see
    describe: Mapping[str, str]  # the server's name -> the description clients see

    def shown(self, name: str) -> bool:
        """Whether the server's tool ``name`` passes the allow and deny globs."""
        ...


class ToolFilter:
    """One conversation's filter (it remembers which requests were ``tools/list``)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._original = {new: old for old, new in rules.rename.items()}
        self._lists: OrderedDict[tuple, None] = OrderedDict()  # ids of tools/list requests

    def server_name(self, name: Any) -> str | None:
        """The server's name for the tool a client calls ``name``; None if it is hidden."""
        if not isinstance(name, str):
            return None
        original = self._original.get(name)
        if original is None:
            if name in self.rules.rename:
                return None  # renamed away: only the new name is shown
            original = name
        return original if self.rules.shown(original) else None

    def request(self, message: Message) -> Message | None:
        """What goes on to the server for a client's request (the request itself, or renamed);
        None when it must not: answer it with :meth:`refusal` instead."""
        method = message.method
        if method == "tools/list":
            lists = self._lists
            lists[jsonrpc.id_key(message.id)] = None
            if len(lists) > _PENDING_CAP:  # answers that never came (a killed server)
                lists.popitem(last=False)
            return message
        if method != "tools/call":
            return message
        name = message.params.get("name")
        original = self.server_name(name)
        if original is None:
            return None
        return message if original == name else jsonrpc.rewritten(message, {"name": original})

    def admit(self, message: Message, answer: Callable[[Message], None]) -> Message | None:
        """The hook of every place a filter stands: what goes on to the server for a message
        from the client (itself, or a call renamed), or None once ``answer`` was given the
        refusal of a hidden tool's call (the server never hears of it)."""
        if message.kind != jsonrpc.REQUEST:
            return message
        passed = self.request(message)
        if passed is None:
            answer(self.refusal(message))
        return passed

    @staticmethod
    def refusal(message: Message) -> Message:
        """The answer to a call of a tool the client may not see."""
        name = message.params.get("name")
        shown = name if isinstance(name, str) else jsonrpc.encode(name).decode()
        return jsonrpc.error_message(message.id, UNKNOWN_TOOL, f"Unknown tool: {shown[:200]}")

    def answer(self, message: Message) -> Message:
        """The server's answer as the client sees it (only a tools/list answer changes)."""
        if not self._lists or message.kind != jsonrpc.RESPONSE:
            return message
        try:
            self._lists.pop(jsonrpc.id_key(message.id))
        except (KeyError, TypeError):
            return message
        obj = message.obj
        result = obj.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return message  # an error, or not a list: the client sees what the server said
        kept = [self._shown(tool) for tool in tools]
        return jsonrpc.result_message(obj.get("id"), {
            **result, "tools": [tool for tool in kept if tool is not None]})

    def _shown(self, tool: Any) -> Any:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            return tool  # not ours to judge: a client reports a malformed tool itself
        name = tool["name"]
        rules = self.rules
        if not rules.shown(name) or (name in self._original and name not in rules.rename):
            return None
        new, text = rules.rename.get(name), rules.describe.get(name)
        if new is None and text is None:
            return tool
        tool = dict(tool)
        if new is not None:
            tool["name"] = new
        if text is not None:
            tool["description"] = text
        return tool
