"""``--check-config`` and ``--print-config``: look at the configuration, start nothing.

``--check-config`` builds the settings as a start would (the config file read, expanded and
validated; each command found on PATH; the flags checked; in client mode the URL and
headers) and prints ``OK: ...``, exit 0, or each problem on a line of its own on stderr,
exit 1. The OK goes to stdout in server mode (for scripts), to stderr in client mode: there
stdout is the protocol channel, and a desktop client that starts us with the flag must not
read a line of text as a message. ``--print-config`` prints the server config file resolved,
secrets masked, on stdout (it needs ``--named-server-config``, a server-mode file).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from mcp_proxy.config.config_file import read_config
from mcp_proxy.config.flag_settings import client_settings, is_url, server_settings
from mcp_proxy.config.masking import masked, scrub
from mcp_proxy.errors import ConfigError, ConfigProblems


def review(ns: argparse.Namespace, deeper: Callable[[Any], list[str]] | None = None) -> int:
    """Run ``--check-config`` or ``--print-config``; the exit status. ``deeper`` checks what
    only running the servers can tell (``children/combined_check.py``: combined servers'
    names), given the server settings; it returns the problems."""
    try:
        if ns.print_config:
            return _print(ns)
        print(_check(ns, deeper), file=sys.stderr if is_url(ns.command_or_url) else sys.stdout)
    except ConfigError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"mcp-proxy: error: {line}", file=sys.stderr)
        return 1
    return 0


def _check(ns: argparse.Namespace, deeper: Callable[[Any], list[str]] | None) -> str:
    if is_url(ns.command_or_url):
        settings = client_settings(ns)
        return f"OK: client mode, remote {scrub(settings.url)} ({settings.transport})"
    settings = server_settings(ns)
    servers = settings.servers
    combined = any(spec.members for spec in servers.values())
    if combined and deeper is not None:
        problems = deeper(settings)
        if problems:
            raise ConfigProblems(problems)
    named = sorted(name for name in servers if name)
    parts = ["the default server"] if "" in servers else []
    if named:
        parts.append(f"{len(named)} named ({', '.join(named)})")
    source = f" from {ns.named_server_config}" if ns.named_server_config else ""
    remote = sum(1 for spec in servers.values() if spec.remote is not None)
    found = "every command found" + (f", {remote} remote URL(s) well-formed" if remote else "")
    names = "; combined servers' names checked" if combined and deeper is not None else ""
    return f"OK: {' and '.join(parts)}{source}; {found}{names}"


def _print(ns: argparse.Namespace) -> int:
    if not ns.named_server_config:
        raise ConfigError("--print-config prints the --named-server-config file: give one")
    if is_url(ns.command_or_url):  # client mode's stdout carries protocol messages only
        raise ConfigError("--print-config prints server mode's config file: leave out the URL")
    loaded = read_config(ns.named_server_config, ns.pass_environment)
    resolved = {"mcpServers": loaded.servers}
    if loaded.auth is not None:
        resolved["auth"] = loaded.auth  # each "key" masked: its name looks secret
    shown = masked(resolved, loaded.secret)
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0
