"""How log lines look: the default text, or one JSON object per line (``--log-format json``).

It owns the formatter and the one call that sets up logging on stderr, for the command
(cli.py) and for gunicorn (wsgi.py) alike. It never decides what is logged. A JSON line holds
``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, then what is known of its
context: ``session``, ``server`` and ``trace_id`` when the caller passed them (``extra=``),
else with traces on the ``trace_id`` and ``span_id`` of the span current where the line was
logged (core/tracing.py), ``worker`` (the scale-out tag, for every line of a worker that
has one), any ``fields`` a record carries (the audit line's, server/audit.py), and
``exception`` with the traceback.

A filter on the handler (``core/redact.py``'s ``Redact``) runs before the formatter, so what it
blanks in the message and the traceback is blanked in JSON too.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from mcp_proxy.core import tracing

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
CONTEXT = ("session", "server", "trace_id", "span_id")  # what a record may carry (extra=)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ASCII only, so no character of a message (a newline, a
    U+2028, a lone surrogate) can split or break the line."""

    worker: str | None = None  # this worker's scale-out tag, once it has one
    active = False  # set up as the format of our stderr (children/startup.py asks)

    def format(self, record: logging.LogRecord) -> str:
        found = record.__dict__
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        for key in CONTEXT:
            if found.get(key) is not None:
                entry[key] = found[key]
        if tracing.on and "trace_id" not in entry:  # the span current where it was logged
            ids = tracing.current_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        if self.worker is not None:
            entry["worker"] = self.worker
        fields = found.get("fields")
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``, as text (the format of old) or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    JsonFormatter.active = log_format == "json"
    handler.setFormatter(JsonFormatter() if JsonFormatter.active else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler])


def set_worker(tag: str) -> None:
    """Name this worker (its scale-out tag) on every JSON line from now on."""
    JsonFormatter.worker = tag
