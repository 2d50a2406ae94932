"""``mcp_proxy.wsgi:application``: the server-mode app for gunicorn's gevent worker.

Configured from the environment: ``MCP_PROXY_ARGS`` holds the same arguments the command
takes (``--allow-origin ... -- python3 server.py``); ``--host``/``--port`` there only feed the
Host check, gunicorn's ``--bind`` decides where it listens. Run it with
``-c python:mcp_proxy.gunicorn_conf``. It refuses to load where it cannot work: in an
unpatched process (not ``-k gevent``, or ``--preload``) and in a worker of several without a
Redis URL, since sessions live in one worker's memory. On SIGTERM it ends every session at
once, so the worker's graceful shutdown is over when the servers have stopped, not at its
timeout.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import signal
import sys

import gevent
from gevent import monkey

from mcp_proxy.config.flag_settings import server_settings
from mcp_proxy.config.options import build_parser
from mcp_proxy.core import greenlets, trace_setup
from mcp_proxy.core.log_format import setup_logging
from mcp_proxy.errors import ConfigError
from mcp_proxy.gunicorn_conf import redis_configured, too_many_workers
from mcp_proxy.server.app import create_app
from mcp_proxy.server.sessions import Registry

logger = logging.getLogger(__name__)


def _gunicorn_worker():
    """The gunicorn worker importing us, if any (its SIGTERM handler is its own method)."""
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return worker if hasattr(worker, "cfg") and hasattr(worker, "alive") else None


def _check_process(worker) -> None:
    if "gunicorn" in sys.modules and not monkey.is_module_patched("socket"):
        raise ConfigError("mcp_proxy.wsgi needs gunicorn's gevent worker, which patches the "
                          "process before it imports the app: run gunicorn with -k gevent "
                          "(or -c python:mcp_proxy.gunicorn_conf) and without --preload")
    if worker is not None and worker.cfg.workers > 1 and not redis_configured(os.environ):
        raise ConfigError(too_many_workers(worker.cfg.workers))


def _app_from_environment():
    greenlets.untracked()
    ns = build_parser().parse_args(shlex.split(os.environ.get("MCP_PROXY_ARGS", "")))
    if not ns.command_or_url and not ns.named_server and not ns.named_server_config:
        raise ConfigError("MCP_PROXY_ARGS must name the stdio server command, e.g. "
                          "MCP_PROXY_ARGS='-- python3 server.py'")
    setup_logging("DEBUG" if ns.debug else ns.log_level, ns.log_format)
    settings = server_settings(ns)
    trace_setup.configure("mcp-proxy")  # in each worker (never --preload): OTEL_* variables
    app = create_app(settings, reload_on_hangup=False)  # SIGHUP is the arbiter's: it restarts us
    atexit.register(_stop_children, app.extensions["mcp_proxy"])
    return app


def _stop_children(registry: Registry) -> None:
    """On worker exit streams may be cut without their cleanup: stop the children here."""
    registry.supervisor.signal_all()


def _end_sessions_on_sigterm(worker, registry: Registry) -> None:
    stopping: list[gevent.Greenlet] = []

    def on_sigterm() -> None:
        worker.alive = False  # the worker stops accepting and waits for open requests
        if not stopping:
            logger.info("Received SIGTERM; ending every session")
            stopping.append(gevent.spawn(registry.close_all, "proxy shutting down",
                                         registry.settings.stop_timeout))

    gevent.signal_handler(signal.SIGTERM, on_sigterm)


_worker = _gunicorn_worker()
_check_process(_worker)
application = _app_from_environment()
if _worker is not None:
    _end_sessions_on_sigterm(_worker, application.extensions["mcp_proxy"])
