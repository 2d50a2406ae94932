"""OpenTelemetry traces, when the ``otel`` extra is installed and the ``OTEL_*`` variables ask.

Everything else in the package calls these functions and never imports ``opentelemetry``.
:func:`configure` sets up the SDK once, from the standard variables: the exporter
(``OTEL_TRACES_EXPORTER``: ``otlp``, the default, ``console`` or ``none``), the OTLP endpoint,
protocol (``http/protobuf``; ``grpc`` with its own exporter installed), headers and timeout
(``OTEL_EXPORTER_OTLP[_TRACES]_*``), the service name (``OTEL_SERVICE_NAME``, else ours) and
the sampler (``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``). Traces are on only when
the SDK imports AND an endpoint or an exporter is set, and ``OTEL_SDK_DISABLED`` is not
``true``. Off, ``on`` is False and every caller checks it before doing anything: one
attribute read per message, nothing imported.

Spans are started and ended explicitly, never as context managers: a relayed request's span
ends when its answer leaves, usually in another greenlet. Under gevent each greenlet has its
own ``contextvars`` (a new greenlet starts empty), so the *current* span does not follow a
message from greenlet to greenlet: a caller passes the parent's context (:func:`context_of`)
where a message crosses. Context comes in and goes out as W3C trace context: a
``traceparent`` (and ``tracestate``) header, or the same two keys in a request's
``params._meta`` (MCP 2026-07-28), whatever ``OTEL_PROPAGATORS`` says.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

on = False  # True once trace_setup.configure() has set up the SDK; read it before any other call
_tracer: Any = None
_provider: Any = None
_propagator: Any = None
_kinds: dict[str, Any] = {}
_api: dict[str, Any] = {}  # the few API names the calls use, bound once by configure()

FIELDS = ("traceparent", "tracestate")  # the W3C trace context keys, in a header or _meta


def install(provider: Any, service_api: dict[str, Any], kinds: dict[str, Any],
            propagator: Any) -> None:
    """Turn traces on with a configured SDK provider (``trace_setup.configure`` calls it)."""
    global on, _tracer, _provider, _propagator
    _provider, _tracer, _propagator = provider, provider.get_tracer("mcp_proxy"), propagator
    _kinds.update(kinds)
    _api.update(service_api)
    on = True
    atexit.register(shutdown)


def shutdown() -> None:
    """Export what is still queued and stop (at exit; tests call it to start anew)."""
    global on, _tracer, _provider
    provider, _provider, _tracer, on = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


def start_span(name: str, parent: Any = None, kind: str = "internal",
               attributes: Mapping[str, Any] | None = None) -> Any:
    """A started span (None when traces are off), child of the ``parent`` context if given.

    ``kind``: ``server``, ``client``, ``internal``, ``producer`` or ``consumer``. Attributes
    whose value is None are left out.
    """
    if not on:
        return None
    return _tracer.start_span(name, context=parent, kind=_kinds[kind], attributes={
        key: value for key, value in attributes.items() if value is not None}
        if attributes else None)


def set_attributes(span: Any, attributes: Mapping[str, Any]) -> None:
    if span is not None:
        span.set_attributes({key: value for key, value in attributes.items()
                             if value is not None})


def end_span(span: Any, error: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> None:
    """End ``span`` (None is fine), with an error status saying ``error`` if given."""
    if span is None:
        return
    if attributes:
        set_attributes(span, attributes)
    if error is not None:
        span.set_status(_api["error"](error[:200]))
    span.end()


def context_of(span: Any) -> Any:
    """The context whose current span is ``span``: the parent to hand across greenlets."""
    return None if span is None else _api["in_context"](span)


def context_from_headers(headers: Mapping[str, str]) -> Any:
    """The context a ``traceparent`` header names (None if none or malformed).

    ``headers`` maps lower-case names to values (``{"traceparent": ...}``).
    """
    if not on or not headers.get("traceparent"):
        return None
    return _extract({key: headers[key] for key in FIELDS if isinstance(headers.get(key), str)})


def context_from_meta(params: Any) -> Any:
    """The context in a request's ``params._meta`` (``traceparent``, ``tracestate``)."""
    if not on or not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
        return None
    return _extract({key: meta[key] for key in FIELDS if isinstance(meta.get(key), str)})


def _extract(carrier: dict[str, str]) -> Any:
    found = _propagator.extract(carrier)
    return found if _api["current"](found).get_span_context().is_valid else None


def inject(span: Any, carrier: dict) -> dict:
    """Write ``span``'s ``traceparent`` (and ``tracestate``) into ``carrier``: a request's
    ``_meta`` dict or a dict of headers. Returns ``carrier``; None leaves it as it is."""
    if span is not None:
        for key in FIELDS:
            carrier.pop(key, None)  # a client's own context is replaced, not merged
        _propagator.inject(carrier, context=context_of(span))
    return carrier


def activate(span: Any) -> Any:
    """Make ``span`` current in this greenlet (log lines then carry its ids); a token for
    :func:`deactivate`, or None."""
    return None if span is None else _api["attach"](context_of(span))


def deactivate(token: Any) -> None:
    if token is not None:
        _api["detach"](token)


def current_ids() -> tuple[str, str] | None:
    """The trace and span ids of this greenlet's current span, in hex, if it has one."""
    if not on:
        return None
    found = _api["current"]().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def current_span() -> Any:
    """This greenlet's current span, or None (none, or traces off)."""
    if not on:
        return None
    span = _api["current"]()
    return span if span.get_span_context().is_valid else None


def ids_of(span: Any) -> tuple[str, str] | None:
    """``span``'s trace and span ids in hex (None for None)."""
    if span is None:
        return None
    found = span.get_span_context()
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def bare_url(url: str) -> str:
    """``url`` without what may hold a secret: its user and password, query and fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "(not a URL)"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))
