"""Each configured server's paths (``/servers/NAME/...``), served and withdrawn while running.

This module owns which server paths the app serves: :class:`ServedPaths` adds a server's
routes (at start, and for a server a config reload adds) and withdraws them (a server a
reload took out: every path of it answers 404 naming it as removed, a forwarded request
too). What the routes do is the transports' (``sse_transport.py``,
``streamable_transport.py``); app.py hands over the function that adds them to a
:class:`RouteBook`, a stand-in for a Flask ``Blueprint`` that only records its rules.

Why not a Blueprint: Flask refuses ``register_blueprint`` and ``add_url_rule`` once the app
handled its first request (its ``setupmethod`` check, meant to catch setup code that runs
late by mistake). Here it is on purpose: the rules are added to the URL map with Flask's own
``add_url_rule`` without that check (``__wrapped__``, kept by ``functools.update_wrapper``),
in one greenlet with nothing in between that yields, so no request sees half of them.
Werkzeug cannot take a rule out of its map, so a withdrawn server's rules stay, with a view
that answers 404 (the view table, ``app.view_functions``, is public); a server that comes
back gets its own views again. The endpoints are named as a Blueprint names them
(``server_NAME.sse``), so ``url_for(".messages")`` works alike.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from mcp_proxy.errors import ServerRemoved
from mcp_proxy.server.responses import server_removed
from mcp_proxy.server.sessions import Registry

# Flask's add_url_rule without the check that refuses it after the first request (above)
_ADD_RULE = getattr(Flask.add_url_rule, "__wrapped__", Flask.add_url_rule)


class RouteBook:
    """The rules one server's routes declare, in the shape of a Blueprint's calls."""

    def __init__(self, name: str) -> None:
        self.name = f"server_{name or 'default'}"
        self.url_prefix = f"/servers/{name}" if name else None
        self.rules: list[tuple[str, str, Callable, list[str]]] = []

    def add_url_rule(self, rule: str, endpoint: str, view_func: Callable,
                     methods: list[str]) -> None:
        self.rules.append(((self.url_prefix or "") + rule, f"{self.name}.{endpoint}",
                           view_func, methods))

    def get(self, rule: str) -> Callable[[Callable], Callable]:
        return lambda view: self.add_url_rule(rule, view.__name__, view, ["GET"]) or view

    def post(self, rule: str) -> Callable[[Callable], Callable]:
        return lambda view: self.add_url_rule(rule, view.__name__, view, ["POST"]) or view


class ServedPaths:
    """The server paths of one app; ``add_routes(book, name)`` declares a server's routes."""

    def __init__(self, app: Flask, registry: Registry,
                 add_routes: Callable[[RouteBook, str], None]) -> None:
        self.app, self.registry, self._add_routes = app, registry, add_routes
        self.views: dict[str, dict[str, Callable]] = {}  # server -> its endpoints' views
        self.handlers: dict[str, dict[tuple[str, str], Callable]] = {}  # forwarded ones
        app.register_error_handler(ServerRemoved, server_removed)

    def serve(self, name: str) -> None:
        """Serve server ``name``'s paths: its routes added, or given back after a removal."""
        views = self.views.get(name)
        if views is not None:  # served before: its rules are in the map
            self.app.view_functions.update(views)
            self.registry.handlers.update(self.handlers[name])
            return
        book = RouteBook(name)
        before = set(self.registry.handlers)
        self._add_routes(book, name)
        for rule, endpoint, view, methods in book.rules:
            _ADD_RULE(self.app, rule, endpoint, view, methods=methods)
        self.views[name] = {endpoint: view for _, endpoint, view, _ in book.rules}
        self.handlers[name] = {key: self.registry.handlers[key]
                               for key in set(self.registry.handlers) - before}
        router = self.registry.router
        if router is not None:
            router.route_paths(name)

    def withdraw(self, name: str) -> None:
        """Answer every path of server ``name`` with a 404 naming it as removed."""
        gone = ServerRemoved(f"server {name!r} was taken out of the config (reloaded)")

        def view():
            return server_removed(gone)

        for endpoint in self.views.get(name, {}):
            self.app.view_functions[endpoint] = view
        for key in self.handlers.get(name, {}):
            self.registry.handlers[key] = lambda environ: view()
