"""Secrets blanked out of log records (``Redact``): client mode's remote, and server mode's
remote servers, put theirs (header values, passwords, URL query strings) on every handler.

It knows only strings: which ones are secret is its caller's to say. ``hide`` puts a filter
for secrets not hidden yet on the root logger's handlers (server mode's remote servers, each
as it is made: at start, by ``--check-config``, by a reload).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

_hidden: set[str] = set()  # what hide() has put on the handlers so far


class Redact(logging.Filter):
    """Blank every secret out of log records, tracebacks included: header values, passwords,
    URL query strings."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _redact(self, text: str) -> str | None:
        """``text`` with its secrets blanked, or None if it has none."""
        if not any(secret in text for secret in self.secrets):
            return None
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        text = self._redact(record.getMessage())
        if text is not None:
            record.msg, record.args = text, None
        if record.exc_info and not record.exc_text:
            # formatted here, once, so the handler prints this text rather than its own
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text) or record.exc_text
        return True


def hide(secrets: Iterable[str]) -> None:
    """Keep ``secrets`` out of every log line from now on (each one filtered once)."""
    new = {secret for secret in secrets if secret} - _hidden
    if new:
        _hidden.update(new)
        for handler in logging.getLogger().handlers:
            handler.addFilter(Redact(sorted(new)))
