"""Traces turned on from the standard ``OTEL_*`` variables (the span helpers: tracing.py).

``configure`` is called once at start by the CLI, each gunicorn worker and client mode. A
setting the SDK cannot honour is a :class:`ConfigError` with a one-line reason; the extra
missing is a warning. Kept apart from tracing.py, which the relay's modules import, so that
those stay near the bottom of the layers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from mcp_proxy.core import tracing
from mcp_proxy.errors import ConfigError

logger = logging.getLogger("mcp_proxy.core.tracing")

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
EXTRA_HINT = "pip install 'mcp-proxy-gevent[otel]'"


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (whether or not the extra is installed)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(environ)
    if exporters == ["none"]:
        return False
    return bool(exporters) or any(environ.get(name, "").strip() for name in ENDPOINTS)


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    return [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
            if name.strip()]


def configure(service_name: str = "mcp-proxy", environ: Mapping[str, str] = os.environ,
              exporter: Any = None) -> bool:
    """Set up traces if the environment asks and the SDK is there; whether they are on.

    ``exporter`` (tests, or an embedding program) is used instead of the one the variables
    name, each span exported as it ends. A setting the SDK cannot honour raises
    :class:`ConfigError` with a one-line reason; the extra missing is a warning, not an error.
    """
    if tracing.on or (exporter is None and not wanted(environ)):
        return tracing.on
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        logger.warning("OTEL_* variables ask for traces, but the OpenTelemetry SDK is not "
                       "installed: no traces (%s)", EXTRA_HINT)
        return False
    own = {} if environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", "") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(own))  # the sampler from OTEL_TRACES_*
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for made in _exporters(environ):
            provider.add_span_processor(BatchSpanProcessor(made))
    from opentelemetry import context

    tracing.install(provider, {
        "in_context": trace.set_span_in_context, "current": trace.get_current_span,
        "error": lambda text: trace.Status(trace.StatusCode.ERROR, text),
        "attach": context.attach, "detach": context.detach,
    }, {kind.name.lower(): kind for kind in trace.SpanKind}, TraceContextTextMapPropagator())
    return True


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    made = []
    for name in _exporter_names(environ) or ["otlp"]:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            made.append(ConsoleSpanExporter())
        elif name == "otlp":
            made.append(_otlp_exporter(environ))
        elif name != "none":
            raise ConfigError(f"OTEL_TRACES_EXPORTER: {name[:40]!r} is not one we know "
                              "(otlp, console or none)")
    return made


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("OTEL_TRACES_EXPORTER=otlp needs "
                              f"opentelemetry-exporter-otlp-proto-http ({EXTRA_HINT})") from None
    elif protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs "
                              "opentelemetry-exporter-otlp-proto-grpc installed; the otel "
                              "extra sends http/protobuf") from None
    else:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol[:40]!r} is not supported "
                          "(http/protobuf, or grpc with its exporter installed)")
    try:
        return OTLPSpanExporter()  # endpoint, headers, timeout: from the variables
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the OTLP exporter refuses its OTEL_EXPORTER_OTLP_* settings: "
                          f"{str(exc)[:200]}") from None


