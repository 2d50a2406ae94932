"""Run the real ``mcp-proxy`` (or gunicorn) with every span written to a file as it ends.

``python tests/span_file.py SPANS cli ARGS...`` runs the command's ``main``;
``python tests/span_file.py SPANS gunicorn ARGS...`` runs gunicorn. Before that it replaces
``core.trace_setup.configure`` with one that hands the SDK an exporter writing one JSON line per
span to ``SPANS`` (each process appends with one write per span: gunicorn's workers share
it). The product's code runs unchanged; only the exporter differs, where the SDK's in-memory
exporter would lose what a killed worker held.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class FileExporter:
    """An OpenTelemetry span exporter (duck-typed: the SDK only calls these) to JSON lines."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = b"".join(json.dumps(as_dict(span)).encode() + b"\n" for span in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def as_dict(span) -> dict:
    context = span.get_span_context()
    return {"name": span.name, "kind": span.kind.name.lower(), "pid": os.getpid(),
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
            "parent_id": None if span.parent is None else format(span.parent.span_id, "016x"),
            "status": span.status.status_code.name.lower(),
            "description": span.status.description, "attributes": dict(span.attributes),
            "service": span.resource.attributes.get("service.name")}


def install(path: str) -> None:
    from mcp_proxy.core import trace_setup

    original = trace_setup.configure

    def configure(service_name: str = "mcp-proxy", environ=os.environ, exporter=None):
        return original(service_name, environ, exporter or FileExporter(path))

    trace_setup.configure = configure


def read_spans(path: Path, until=lambda spans: True, timeout: float = 15.0) -> list[dict]:
    """The spans in ``path`` once ``until(spans)`` holds (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        # a line still being written (no newline yet) is read on the next round
        spans = [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]
        if until(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


if __name__ == "__main__":
    spans, what, *args = sys.argv[1:]
    sys.argv = [what, *args]
    if what == "cli":
        from mcp_proxy import cli  # monkey-patches first, as `python -m mcp_proxy` does

        install(spans)
        sys.exit(cli.main(args))
    from gunicorn.app.wsgiapp import run  # the master stays unpatched; workers patch

    install(spans)
    sys.exit(run())
