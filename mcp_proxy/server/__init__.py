"""The Flask app of server mode: ``create_app(settings)``.

Each stdio server gets the same URL layout: the default one at the root (``/sse``,
``/messages/``, ``/mcp``), each named one under ``/servers/<name>/``. ``/status`` is global.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from mcp_proxy.server.guard import install_guard
from mcp_proxy.server.sessions import Registry
from mcp_proxy.server.sse import add_sse_routes
from mcp_proxy.server.status import add_status_route
from mcp_proxy.server.streamable import add_streamable_routes
from mcp_proxy.settings import ServerSettings


def create_app(settings: ServerSettings) -> Flask:
    """Build the WSGI app; its session registry is ``app.extensions["mcp_proxy"]``."""
    app = Flask("mcp_proxy")
    app.config["MCP_MAX_BODY"] = settings.max_body
    registry = Registry(settings)
    app.extensions["mcp_proxy"] = registry
    install_guard(app, settings)

    @app.before_request
    def touch() -> None:
        registry.touch()

    for name in settings.servers:
        prefix = f"/servers/{name}" if name else ""
        bp = Blueprint(f"server_{name or 'default'}", __name__, url_prefix=prefix or None)
        add_sse_routes(bp, registry, name)
        add_streamable_routes(bp, registry, name)
        app.register_blueprint(bp)
    add_status_route(app, registry)
    return app
