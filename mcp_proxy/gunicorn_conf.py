"""gunicorn settings for ``gunicorn -c python:mcp_proxy.gunicorn_conf mcp_proxy.wsgi:application``.

Every module-level name that is a gunicorn setting is one; the command line still overrides
them (``-b``, ``-t``, ...). It must stay import-light: gunicorn's master imports it before any
worker has monkey-patched, so it imports neither gevent nor the app.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping


def _bind() -> list[str]:
    # MCP_PROXY_BIND wins; a platform's PORT means "listen there on every interface", as
    # gunicorn itself reads it; otherwise loopback, like the command's default
    if os.environ.get("MCP_PROXY_BIND"):
        return os.environ["MCP_PROXY_BIND"].replace(",", " ").split()
    if os.environ.get("PORT"):
        return [f"0.0.0.0:{os.environ['PORT']}"]
    return ["127.0.0.1:8080"]


def redis_configured(environ: Mapping[str, str]) -> bool:
    """Whether the app will get a Redis URL, as mcp_proxy.wsgi reads it from ``environ``."""
    url = environ.get("MCP_PROXY_REDIS_URL", "")
    try:
        args = shlex.split(environ.get("MCP_PROXY_ARGS", ""))
    except ValueError:  # unbalanced quotes: the app refuses them itself, with its own message
        args = []
    for index, arg in enumerate(args):
        if arg == "--":  # what follows is the server's command line
            break
        if arg == "--redis-url":  # the last one wins, as in argparse
            url = args[index + 1] if index + 1 < len(args) else ""
        elif arg.startswith("--redis-url="):
            url = arg.partition("=")[2]
    return bool(url.strip())


def too_many_workers(count: int) -> str:
    """The refusal for ``count`` > 1 workers without Redis: why, and what to do instead."""
    return (
        f"mcp-proxy runs {count} gunicorn workers only with a Redis between them: a session "
        "(and its server process) lives in the worker that opened it, so without one the "
        "requests of a session would reach other workers and get 404 Session not found. Add "
        "--redis-url redis://... to MCP_PROXY_ARGS (or set MCP_PROXY_REDIS_URL), or run -w 1 "
        "(the default of mcp_proxy.gunicorn_conf).")


bind = _bind()
worker_class = "gevent"
workers = 1
# One worker holds every connection: SSE streams are long-lived, one per open session.
worker_connections = 10000
# The gevent worker reports to the arbiter from its own loop, so an open stream never
# trips ``timeout``; only a worker whose loop is stuck is killed.
timeout = 30
# On SIGTERM the worker ends every session at once (mcp_proxy.wsgi), waits for the servers
# to stop (--stop-timeout, default 5 s), then exits; after this many seconds it is killed.
graceful_timeout = 10
# Longer than the usual balancer idle timeout (60 s), so the balancer closes idle
# keep-alive connections first and never sends a request into one we are closing.
keepalive = 75
# The worker patches with gevent before it imports the app; a preloaded app would be
# imported unpatched in the master, and with Redis every worker would share the one worker
# id computed there, so all of them would read one inbox: ids are computed after fork.
preload_app = False
# A worker restarted after N requests would take every session it owns with it (their
# server processes end with it); so would a HUP reload.
max_requests = 0
limit_request_line = 8190  # as the command's own server (pywsgi)
# gunicorn's control socket has one default path per user: several instances on a host
# (the way to scale out) would fight over it, and it can change the worker count.
control_socket_disable = True


def nworkers_changed(server, new_value: int, old_value: int | None) -> None:
    """Without Redis, refuse to boot with several workers and undo a SIGTTIN asking for one."""
    if new_value <= 1 or redis_configured(os.environ):
        return
    if old_value is None:  # start-up: gunicorn prints this as "Error: ..." and exits 1
        raise RuntimeError(too_many_workers(new_value))
    server.log.error("%s Keeping %s worker.", too_many_workers(new_value), old_value)
    server.num_workers = old_value
