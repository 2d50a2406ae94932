"""What ``/status``, ``/readyz`` and ``/metrics`` show of a combined server's members.

A combined server's members are held by its sessions, each session its own
:class:`~mcp_proxy.children.combined.Combiner` (its own child or port or remote session per
member). :class:`CombinedWatch` keeps the open sessions of each combined server and reads,
without changing anything, each member as those sessions hold it:

- ``kind``: how the member is reached: ``per-session`` (a child per session), ``shared`` (a
  port of its shared child) or ``remote`` (a remote session per session; with its
  ``transport``);
- ``state``: ``up`` when a session has it up; else ``starting`` while a session opens it,
  ``down`` when the sessions that held it lost it (a crash, a remote that went away) or, with
  no session holding it, when the member's own server would fail a new session now (a failed
  start, a crash loop, a remote unreachable lately: the readiness of that server); else
  ``idle``: no session holds it, and nothing says it would fail;
- ``last_error``: the last failure a session saw (kept after it recovered), else the member's
  own problem, else a remote's last error;
- ``tools``: the member's tools as the sessions' last lists showed them (the most any
  session saw; 0 until a client listed them).

A combined server is not ready (``problems``) while every member is ``down``: a new session
would have no member to serve it. One member down is not: the others serve, and the client
is told with ``list_changed``.
"""

from __future__ import annotations

from typing import Any


class CombinedWatch:
    """The open sessions of each combined server, and their members' state."""

    def __init__(self, supervisor: Any) -> None:
        """``supervisor``: its ``settings``, ``mode``, ``problems`` and ``remotes`` are read."""
        self.supervisor = supervisor
        self.sessions: dict[str, set] = {}

    def track(self, server: str, combiner: Any) -> None:
        """Count ``combiner`` among ``server``'s sessions until it closes."""
        held = self.sessions.setdefault(server, set())
        held.add(combiner)
        combiner.closed.rawlink(lambda _: held.discard(combiner))

    def members(self, server: str, now: float) -> dict[str, dict]:
        """Each member of the combined server ``server``, as /status shows it."""
        spec = self.supervisor.settings.servers[server]
        combiners = list(self.sessions.get(server, ()))
        return {member: self._member(member, combiners, now) for member in spec.members}

    def _member(self, member: str, combiners: list, now: float) -> dict:
        supervisor = self.supervisor
        slots = [combiner.slots[member] for combiner in combiners if member in combiner.slots]
        up = sum(1 for slot in slots if slot.link is not None and not slot.down)
        lost = [slot for slot in slots if slot.down or (slot.link is None and slot.failure)]
        opening = any(slot.link is None and slot.lock.locked() for slot in slots)
        own = supervisor.problems(member, now)
        remote = supervisor.remotes.get(member)
        if remote is not None and not own and any(link.recovering for link in remote.links):
            own = ["the remote is reconnecting (another session lost it)"]
        if up:
            state = "up"
        elif opening:
            state = "starting"
        elif lost or own:
            state = "down"
        else:
            state = "idle"
        failures = [slot.failure for slot in lost] or [slot.failure for slot in slots
                                                       if slot.failure]
        last_error = (failures or own or [None])[0]
        if last_error is None and remote is not None:
            last_error = remote.last_error
        tools = max((sum(1 for held in combiner.names["tools/list"].owner.values()
                         if held[0] == member) for combiner in combiners), default=0)
        shown = {"kind": supervisor.mode(member), "state": state, "last_error": last_error,
                 "tools": tools, "sessions_up": up}
        if remote is not None:
            shown["transport"] = remote.transport or "auto"
        return shown

    def problems(self, server: str, now: float) -> list[str]:
        """Why a new session of the combined server ``server`` would get no member now."""
        members = self.members(server, now)
        if not members or any(shown["state"] != "down" for shown in members.values()):
            return []
        why = "; ".join(f"{member}: {shown['last_error'] or 'down'}"
                        for member, shown in members.items())
        return [f"no member is up ({why})"[:500]]
