"""SIGHUP: the named-server config file read again, and the difference applied while serving.

This module owns a reload of ``--named-server-config``: the file is read as at start (its
``${VAR}``s expanded, the schema checked, the flags' additions made: config/flag_settings.py
``reread``), then compared with the servers being served, entry by entry:

* a new server is served on its paths at once (late_routes.py), with a new remote server
  probed and a new combined server's names checked first, as at start;
* a server taken out drains: its paths answer 404 naming it as removed, its sessions end
  (an SSE stream is closed, a Streamable HTTP session is not found on its next request), and
  what it ran is stopped (children/server_swap.py), a shared child once its last request
  ends or after ``--stop-timeout``;
* a changed server (any field of its entry, or a member of a combined server that changed)
  ends its sessions the same way, and its next session gets the new entry;
* an unchanged server is not touched: its sessions and children live on.

A file that cannot be used (not JSON, the schema refuses it, a name that collides, an unset
variable, a remote that can never work) is refused whole, logged in one line with each
problem's JSON path, and the running config keeps serving. The default server (the
positional command), the flags and the file's ``"auth"`` keys are read at start only.
Reloads run one at a time: a SIGHUP during one makes one more run after it (two or more
coalesce). ``/status`` shows the config's generation and the last reload; the metric
``mcp_proxy_config_reloads_total`` counts them by outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import gevent
from prometheus_client import Counter

from mcp_proxy.children.server_swap import Retired, attach, detach
from mcp_proxy.config.schema import json_path
from mcp_proxy.config.settings import ServerSpec
from mcp_proxy.core import greenlets
from mcp_proxy.errors import ConfigError, ConfigProblems
from mcp_proxy.server.late_routes import ServedPaths
from mcp_proxy.server.sessions import Registry

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a reload changes: the new entries, and which names are added, removed, changed."""

    specs: dict[str, ServerSpec]
    added: list[str]
    removed: list[str]
    changed: list[str]
    remotes: dict[str, Any] = field(default_factory=dict)  # new remote servers, probed


def plan(served: dict[str, ServerSpec], specs: dict[str, ServerSpec]) -> Plan:
    """Compare the named servers served with the file's (the default server "" stays)."""
    named = [name for name in served if name]
    changed = {name for name in named if name in specs and specs[name] != served[name]}
    removed = [name for name in named if name not in specs]
    # a combined server holds its members' links: a member that changed restarts it
    changed |= {name for name in named if name in specs and name not in changed
                and set(specs[name].members) & (changed | set(removed))}
    return Plan(specs, [name for name in specs if name not in served], removed,
                [name for name in named if name in changed])


class Reloader:
    """The reloads of one app's config file; ``hangup()`` is what SIGHUP calls."""

    def __init__(self, registry: Registry, paths: ServedPaths, reread: Callable[[], Any],
                 check_combined: Callable[[Any], list[str]], remote: type,
                 instrument: Callable[[str, ServerSpec], None]) -> None:
        """``reread`` reads the file again (a ConfigFile); ``check_combined`` lists the
        problems of the combined servers of the settings it is given (as at start);
        ``remote`` makes a remote server; ``instrument`` gives a server its audit and tool
        scopes (app.py)."""
        self.registry, self.paths, self.reread = registry, paths, reread
        self.check_combined, self.remote, self.instrument = check_combined, remote, instrument
        self.generation = 1  # the config served: 1 at start, one more per applied reload
        self.last: dict | None = None  # the last reload: when, its outcome, what it did
        self.reloads = 0  # done, applied or refused
        self._running: gevent.Greenlet | None = None
        self._again = False
        self.counted = Counter("mcp_proxy_config_reloads", "Reloads of the named-server "
                               "config file (SIGHUP), by outcome", ["outcome"],
                               registry=registry.metrics.registry)
        for outcome in ("ok", "refused"):
            self.counted.labels(outcome)

    def hangup(self) -> None:
        """SIGHUP: reload now, or once more after the reload under way."""
        if self._running is not None and not self._running.dead:
            self._again = True
            return
        self._running = greenlets.spawn(self._reload_while_asked, name="config reload")

    def _reload_while_asked(self) -> None:
        while True:
            self._again = False
            self.reload()
            if not self._again:
                return

    def reload(self) -> bool:
        """Read the file again and apply it; False (and the old config kept) if refused."""
        started = time.time()
        try:
            change = self._prepare()
        except ConfigError as exc:
            problems = getattr(exc, "problems", None) or [str(exc)]
            logger.error("config reload refused, the running config keeps serving: %s",
                         "; ".join(problem.replace("\n", " ") for problem in problems))
            self._record(started, "refused", error="; ".join(problems))
            return False
        self._apply(change)
        self.generation += 1
        self._record(started, "ok", added=change.added, removed=change.removed,
                     restarted=change.changed)
        logger.info("config reloaded (generation %d): %s", self.generation, "; ".join(
            f"{what} {', '.join(names)}" for what, names in (
                ("added", change.added), ("removed", change.removed),
                ("restarted", change.changed)) if names) or "nothing changed")
        return True

    def _record(self, started: float, outcome: str, **what: Any) -> None:
        self.counted.labels(outcome).inc()
        self.reloads += 1
        self.last = {"at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
                     "outcome": outcome, **what}

    def status(self) -> dict:
        """What ``/status`` shows of the config."""
        return {"generation": self.generation, "reloads": self.reloads, "last_reload": self.last}

    # -- a reload's steps -------------------------------------------------------------------

    def _prepare(self) -> Plan:
        """The file read and compared; new remote servers probed, new combined servers'
        names checked. Raises ConfigError: nothing is applied."""
        settings = self.registry.settings
        loaded = self.reread()
        change = plan(settings.servers, loaded.specs)
        fresh = [*change.added, *change.changed]
        if settings.oauth is not None:  # the OAuth metadata and scopes are made at start
            moved = [name for name in change.added] + [
                name for name in change.changed if (settings.servers[name].scopes,
                                                    settings.servers[name].tool_scopes) !=
                (change.specs[name].scopes, change.specs[name].tool_scopes)]
            if moved:
                raise ConfigError(f"with --oauth-issuer a reload cannot add a server or change "
                                  f"its scopes ({', '.join(moved)}): restart to apply")
        for name in fresh:
            spec = change.specs[name]
            if spec.remote is not None:  # made: its secrets hidden first (core/redact.py)
                change.remotes[name] = self.remote(name, spec.remote, spec.tools)
        probes = [gevent.spawn(remote.probe) for remote in change.remotes.values()]
        gevent.joinall(probes)
        problems = [probe.value for probe in probes if probe.value]
        merged = {**settings.servers, **change.specs}
        members = {name: spec for name, spec in merged.items() if not spec.members}
        for name in fresh if not problems else ():  # each new combined server's names
            if change.specs[name].members:
                problems += [f"{loaded.path}: {json_path(('mcpServers', name))}: {problem}"
                             for problem in self.check_combined(replace(settings, servers={
                                 **members, name: change.specs[name]}))]
        if problems:
            raise ConfigProblems(problems)
        return change

    def _apply(self, change: Plan) -> None:
        """Swap the servers in; then end what the old ones served (nothing here yields
        before the new entries are in place)."""
        registry, paths = self.registry, self.paths
        supervisor, servers = registry.supervisor, registry.settings.servers
        ending = {*change.removed, *change.changed}
        sessions = [s for s in registry.sessions.values() if s.server_name in ending]
        retired = [detach(supervisor, name) for name in ending]
        for name in change.removed:
            paths.withdraw(name)
            del servers[name]
            registry.tool_scopes.pop(name, None)
        for name in (*change.changed, *change.added):
            spec = servers[name] = change.specs[name]
            attach(supervisor, name, spec, change.remotes.get(name))
            registry.metrics.add_server(name)
            self.instrument(name, spec)
        for name in change.added:
            paths.serve(name)
        if change.remotes and registry.metrics.remotes is None:  # the first remote server
            registry.metrics.remotes = lambda: {
                name: remote.status() for name, remote in supervisor.remotes.items()}
        removed = set(change.removed)
        for session in sessions:
            how = "taken out of" if session.server_name in removed else "changed in"
            session.close(f"its server was {how} the config (reload)")
        grace = registry.settings.stop_timeout
        for gone in retired:
            greenlets.spawn(self._stop, gone, grace, name=f"retire {gone.name}")

    @staticmethod
    def _stop(gone: Retired, grace: float) -> None:
        gone.stop("its server was taken out of or changed in the config", grace)
