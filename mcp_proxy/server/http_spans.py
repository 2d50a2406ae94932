"""A server span per HTTP request, when traces are on (core/tracing.py).

app.py wraps the whole WSGI app in :func:`trace_requests` (outside the router, so a request
forwarded to another worker has its span here too) only when traces are on. The span is
the child of the request's ``traceparent`` header, if it has a valid one; it is current in
the request's greenlet while the app runs (the relayed request's span is its child, and log
lines carry its ids), and it ends when the answer's last byte is written, or its client
left: an event stream's span lasts as long as the stream.

Its name is the method and the route that matched (``POST /mcp``), never the query; a path
nothing matched is named by the method alone, with ``url.path`` beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import request

from mcp_proxy.core import tracing


class _Traced:
    """An answer's body that ends its request's span when the server closes it."""

    __slots__ = ("body", "span", "status")

    def __init__(self, body: Iterable[bytes], span, status: list) -> None:
        self.body, self.span, self.status = body, span, status

    def __iter__(self):
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            _end(self.span, self.status)


def _end(span, status: list) -> None:
    code = status[0]
    tracing.end_span(span, f"HTTP {code}" if code >= 500 else None,
                     {"http.response.status_code": code or None})


def name_by_route() -> None:
    """A Flask ``before_request`` hook (app.py, traces on): the request's route names it."""
    rule = request.url_rule
    if rule is not None:
        request.environ["mcp_proxy.rule"] = rule.rule


def _name(span, method: str, environ: dict) -> None:
    """Name the span by the route that matched; say whether another worker served it."""
    rule = environ.get("mcp_proxy.rule")
    if rule is not None:
        span.update_name(f"{method} {rule}")
        tracing.set_attributes(span, {"http.route": rule})
    if environ.get("mcp_proxy.route") == "forwarded":  # by the router, before Flask
        span.update_name(f"{method} {environ.get('PATH_INFO', '/')[:200]}")
        tracing.set_attributes(span, {"mcp.proxy.route": "forwarded"})


def trace_requests(wsgi_app: Callable) -> Callable:
    """``wsgi_app`` with a server span around each request."""

    def traced_app(environ: dict, start_response):
        method = environ.get("REQUEST_METHOD", "?")
        header = environ.get("HTTP_TRACEPARENT")
        parent = None if header is None else tracing.context_from_headers(
            {"traceparent": header, "tracestate": environ.get("HTTP_TRACESTATE", "")})
        span = tracing.start_span(method, parent, "server", {
            "http.request.method": method, "url.path": environ.get("PATH_INFO", "/")[:200],
            "url.scheme": environ.get("wsgi.url_scheme"),
            "client.address": environ.get("REMOTE_ADDR")})
        status = [0]

        def start(line: str, headers, exc_info=None):
            status[0] = int(line[:3])
            return start_response(line, headers, exc_info)

        token = tracing.activate(span)
        try:
            body = wsgi_app(environ, start)
        except BaseException:
            status[0] = status[0] or 500
            _name(span, method, environ)
            _end(span, status)
            raise
        finally:
            tracing.deactivate(token)
        _name(span, method, environ)
        if isinstance(body, (list, tuple)):  # whole, in memory: written at once
            _end(span, status)
            return body
        return _Traced(body, span, status)

    return traced_app
