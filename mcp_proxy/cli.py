"""The ``mcp-proxy`` command: parse the command line, set up logging, run one of the modes.

gevent's monkey-patching happens here, before anything else is imported, so that every
socket, pipe and sleep below cooperates. A URL as the positional argument means client mode;
anything else is the command of the stdio server that server mode spawns per session.
Wiring only: server mode's app (server/app.py) is handed to wsgi_server.py, which runs it.
"""

import signal

# A SIGTERM or SIGINT while we start (importing gevent alone takes ~0.1 s) is held here, not
# acted on half-way: server mode stops cleanly once it can, client mode acts on it as usual.
_held_signals: list[int] = []


def _hold(signum: int, frame) -> None:
    _held_signals.append(signum)


signal.signal(signal.SIGINT, _hold)
signal.signal(signal.SIGTERM, _hold)  # last: once it is caught, both are (tests look for it)

from gevent import events, monkey  # noqa: E402 (after the signal handlers)


def _patch_all() -> None:
    """``monkey.patch_all()``, minus the search for gevent plugins.

    Each patch step asks importlib.metadata for entry-point plugins, rescanning every
    installed distribution: about 100 ms of every start, for plugins we do not use.
    Subscribers registered in-process are still notified.
    """
    scan = getattr(events, "notify_and_call_entry_points", None)
    if scan is not None:
        events.notify_and_call_entry_points = events.notify
    try:
        monkey.patch_all()
    finally:
        if scan is not None:
            events.notify_and_call_entry_points = scan


_patch_all()

# ruff: noqa: E402  (imports must follow the monkey-patch)
import logging
from functools import partial

from mcp_proxy.config.flag_settings import is_url, server_settings
from mcp_proxy.config.options import build_parser
from mcp_proxy.core import greenlets
from mcp_proxy.core.log_format import setup_logging
from mcp_proxy.errors import ConfigError, ConfigProblems

logger = logging.getLogger("mcp_proxy")
greenlets.untracked()


def _release_signals() -> None:
    """Back to the default actions, and the first signal held meanwhile takes effect now."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _held_signals:
        signal.raise_signal(_held_signals[0])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.command_or_url and not ns.named_server and not ns.named_server_config:
        parser.error("give a URL (client mode) or a server command (server mode)")
    setup_logging("DEBUG" if ns.debug else ns.log_level, ns.log_format)
    if ns.check_config or ns.print_config:
        from mcp_proxy.children.combined_check import combined_problems
        from mcp_proxy.config.review import review
        from mcp_proxy.upstream.remote_server import RemoteServer

        return review(ns, partial(combined_problems, remote=RemoteServer))
    try:
        if is_url(ns.command_or_url):
            _release_signals()
            from mcp_proxy.children.legacy_adapter import LegacySession
            from mcp_proxy.client.run import run_client  # lazy: client mode never imports Flask

            # the modern->legacy bridge's session, handed in: client/ stays shallow
            return run_client(ns, LegacySession)
        settings = server_settings(ns)
        if any(spec.members for spec in settings.servers.values()):
            from mcp_proxy.children.combined_check import combined_problems
            from mcp_proxy.upstream.remote_server import RemoteServer

            # names that collide stop the start
            problems = combined_problems(settings, RemoteServer)
            if problems:
                raise ConfigProblems(problems)
        from mcp_proxy.core import trace_setup

        trace_setup.configure("mcp-proxy")  # from the OTEL_* variables; off unless they ask
        from mcp_proxy.server.app import create_app
        from mcp_proxy.server.wsgi_server import serve

        return serve(settings, create_app, signalled=_held_signals)
    except ConfigError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            logger.error("%s", line)
        return 1
    except OSError as exc:  # e.g. the port is taken
        logger.error("%s", exc)
        return 1
