"""Background greenlets that cannot die silently: ``spawn(func, ..., name=, on_error=)``.

A bare ``gevent.spawn`` that raises prints a traceback on stderr and ends, leaving whatever it
served half-alive (a link nobody reads, a recovery that never finishes). Here an unexpected
exception is logged once, with its traceback, at ERROR, and handed to ``on_error`` (usually
the owning link's close), so the bridge answers what is in flight and recovery or exit
follows. ``on_error`` runs in a greenlet of its own: it may block (a DELETE on close), and it
may kill the greenlet that failed without cutting its own work short.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import gevent

logger = logging.getLogger(__name__)

ErrorHandler = Callable[[BaseException], None]


def untracked() -> None:
    """Greenlets made from now on skip gevent's record of their spawning tree (the spawner,
    its locals, and the spawning stack with a line number per frame): about 18 k of the
    ~600 k instructions of a bridged call, which spawns one (bench/README.md). The record
    only serves debugging: ``GEVENT_TRACK_GREENLET_TREE=1`` keeps it."""
    if "GEVENT_TRACK_GREENLET_TREE" not in os.environ:
        gevent.config.track_greenlet_tree = False


def spawn(func: Callable, *args, name: str,
          on_error: ErrorHandler | None = None) -> gevent.Greenlet:
    """Start ``func(*args)`` in a greenlet named ``name`` whose unexpected exception is logged
    and passed to ``on_error``; a kill (``GreenletExit``) is an ordinary end."""

    def run():
        try:
            return func(*args)
        except Exception as exc:  # GreenletExit is a BaseException: kills pass through
            logger.exception("%s crashed", name)
            if on_error is not None:
                gevent.spawn(_handle, name, on_error, exc)
            return None

    greenlet = gevent.Greenlet(run)
    greenlet.name = name
    greenlet.start()
    return greenlet


def _handle(name: str, on_error: ErrorHandler, exc: BaseException) -> None:
    try:
        on_error(exc)
    except Exception:  # the handler is the last line: report, never re-raise into the hub
        logger.exception("%s: handling its crash failed", name)


def closing(link) -> ErrorHandler:
    """An ``on_error`` that closes ``link`` (anything with ``close(reason)``), naming the error."""
    return lambda exc: link.close(f"proxy error: {exc.__class__.__name__} in a background task")
