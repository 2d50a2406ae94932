"""``traced``: a span per sign-in step (discovery, registration, a token request, a refresh,
the whole sign-in), when traces are on (core/tracing.py).

A step runs whole in one greenlet, so its span is current while it runs: the steps it calls
are its children, and it is the child of what was current when it began (a request's span,
whose POST met the 401, or the recovery's). A step that raises ends with an error status
saying what it raised: our sign-in errors never hold a token or a secret (wire.py), and URLs
are given without their query. Off, the wrapper is one check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from mcp_proxy.core import tracing


def traced(name: str, before: Callable[..., dict] | None = None,
           after: Callable[[Any], dict] | None = None) -> Callable:
    """Decorate a sign-in step: its span is named ``name``; ``before(*args, **kwargs)`` and
    ``after(result)`` give its attributes."""

    def decorate(step: Callable) -> Callable:
        @functools.wraps(step)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not tracing.on:
                return step(*args, **kwargs)
            span = tracing.start_span(name, attributes=before(*args, **kwargs) if before else None)
            token = tracing.activate(span)
            try:
                result = step(*args, **kwargs)
            except BaseException as exc:
                tracing.deactivate(token)
                tracing.end_span(span, f"{exc.__class__.__name__}: {exc}"[:200])
                raise
            tracing.deactivate(token)
            tracing.end_span(span, attributes=after(result) if after else None)
            return result

        return run

    return decorate


def token_attributes(http, token_url: str, client, form: dict, what: str) -> dict:
    """A token request's attributes: what it is for, its grant type and endpoint."""
    return {"oauth.step": what, "oauth.grant_type": form.get("grant_type"),
            "url.full": tracing.bare_url(token_url), "oauth.client_auth": client.method}
