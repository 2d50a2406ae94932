"""The start-up check of combined servers: list each member's tools and prompts once.

Names that collide once prefixed can only be known from the members themselves, so before
the proxy serves (and on ``--check-config``) each combined server is opened once as a client
would open it: every member started, ``initialize``, then every page of ``tools/list`` and
``prompts/list`` through a :class:`~mcp_proxy.children.combined.Combiner`, whose name tables
report each collision, naming both members. A local member that does not start is a problem
too; a remote member (``"url"``) that cannot be reached now is only a warning, as a remote
server is at start (its names are checked by the sessions, which hide a colliding one with an
error logged; what can never work, a refused credential, is refused by the app's probe). The
members are stopped again; the sessions start their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gevent.queue import Empty, Queue

from mcp_proxy.children.combined import Combiner
from mcp_proxy.children.combined_members import OPEN_TIMEOUT
from mcp_proxy.children.process import StdioChild
from mcp_proxy.config.settings import ServerSettings
from mcp_proxy.core.jsonrpc import Message
from mcp_proxy.core.link import Link

logger = logging.getLogger(__name__)

_INIT = {"protocolVersion": "2025-11-25", "capabilities": {},
         "clientInfo": {"name": "mcp-proxy --check-config", "version": "0"}}
_MAX_PAGES = 100


def combined_problems(settings: ServerSettings, remote: Callable) -> list[str]:
    """Each problem of each combined server, one line each (empty when all is well).
    ``remote`` makes a remote member's server (``RemoteServer``, handed in: children/ does not
    import upstream/)."""
    found: list[str] = []
    for name, spec in settings.servers.items():
        if spec.members:
            found += [f"combined server {name!r}: {problem}"
                      for problem in _check(settings, name, remote)]
    return found


def _check(settings: ServerSettings, name: str, remote: Callable) -> list[str]:
    spec = settings.servers[name]

    def open_member(member: str, label: str) -> Link:
        spec = settings.servers[member]
        if spec.remote is not None:
            return remote(member, spec.remote, spec.tools).link(label)
        return StdioChild(spec, label, settings.max_frame,
                          stop_grace=1.0, write_timeout=settings.write_timeout)

    combiner = Combiner(name, spec, open_member, f"check:{name}")
    for names in combiner.names.values():
        names.quiet = True
    answers: Queue = Queue()
    combiner.attach(answers.put, lambda: None)

    def ask(request_id: int, method: str, params: dict) -> dict:
        combiner.send(Message({"jsonrpc": "2.0", "id": request_id, "method": method,
                               "params": params}))
        while True:
            try:
                answer = answers.get(timeout=OPEN_TIMEOUT + 10)
            except Empty:
                return {"error": {"message": f"no answer to {method}"}}
            if answer.id == request_id:
                return answer.obj

    try:
        init = ask(0, "initialize", _INIT)
        failed, unreached = [], []
        for member, slot in combiner.slots.items():
            if slot.link is not None:
                continue
            if settings.servers[member].remote is None:
                failed.append(f"member {member} did not start: {slot.failure}")
            else:
                unreached.append(member)
                logger.warning("combined server %r: the names of its remote member %s are not "
                               "checked now: %s", name, member, slot.failure)
        if "error" in init:
            return failed or ([] if unreached else
                              [init["error"].get("message", "initialize failed")])
        for number, method in enumerate(("tools/list", "prompts/list"), start=1):
            params: dict = {}
            for _ in range(_MAX_PAGES):
                result = ask(number, method, params).get("result") or {}
                if not result.get("nextCursor"):
                    break
                params = {"cursor": result["nextCursor"]}
        return failed + [text for kind in ("tools/list", "prompts/list")
                         for text in combiner.names[kind].collisions]
    finally:
        combiner.close("start-up check done")
