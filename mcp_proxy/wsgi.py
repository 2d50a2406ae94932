"""``mcp_proxy.wsgi:application`` for ``gunicorn -k gevent -w 1``.

Configured from the environment: ``MCP_PROXY_ARGS`` holds the same arguments the command
takes (``--allow-origin ... -- python3 server.py``); ``--host``/``--port`` there only feed the
Host check, gunicorn's ``--bind`` decides where it listens. One worker, because sessions
live in the worker's memory; no ``--preload``, because the gevent worker must patch first.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex

from mcp_proxy.options import build_parser, server_settings
from mcp_proxy.server import create_app
from mcp_proxy.server.sessions import Registry


def _app_from_environment():
    parser = build_parser()
    ns = parser.parse_args(shlex.split(os.environ.get("MCP_PROXY_ARGS", "")))
    if not ns.command_or_url and not ns.named_server and not ns.named_server_config:
        raise SystemExit("MCP_PROXY_ARGS must name the stdio server command, e.g. "
                         "MCP_PROXY_ARGS='-- python3 server.py'")
    logging.basicConfig(level="DEBUG" if ns.debug else ns.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(server_settings(ns))
    atexit.register(_stop_children, app.extensions["mcp_proxy"])
    return app


def _stop_children(registry: Registry) -> None:
    """On worker exit streams may be cut without their cleanup: stop the children here."""
    registry.signal_children()


application = _app_from_environment()
