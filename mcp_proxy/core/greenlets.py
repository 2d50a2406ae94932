"""Background greenlets that cannot die silently: ``spawn(func, ..., name=, on_error=)``.

A bare ``gevent.spawn`` that raises prints a traceback on stderr and ends, leaving whatever it
served half-alive (a link nobody reads, a recovery that never finishes). Here an unexpected
exception is logged once, with its traceback, at ERROR, and handed to ``on_error`` (usually
the owning link's close), so the bridge answers what is in flight and recovery or exit
follows. ``on_error`` runs in a greenlet of its own: it may block (a DELETE on close), and it
may kill the greenlet that failed without cutting its own work short.

``start(func, ..., name=, on_error=)`` does the same for a task of one request, on a greenlet
kept from an earlier task where one is idle: a new greenlet costs ~20 us on the bench machine,
most of it the interpreter's first frame chunk, an mmap and a munmap of 16 KiB per greenlet
(bench/README.md, "Era bridges"). The task's ``kill()`` stops it, and only it: the greenlet
may be carrying another task by the time a late kill would land.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable

import gevent
from gevent import GreenletExit

logger = logging.getLogger(__name__)

ErrorHandler = Callable[[BaseException], None]

MAX_IDLE = 32  # greenlets kept for the next task (each ~20 KiB: its stack copy, its frames)


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


class Task:
    """One ``start``: ``running`` while its greenlet carries it; ``kill()`` ends it there."""

    __slots__ = ("func", "args", "name", "on_error", "worker", "killed")

    def __init__(self, func: Callable, args: tuple, name: str,
                 on_error: ErrorHandler | None) -> None:
        self.func, self.args, self.name, self.on_error = func, args, name, on_error
        self.worker: _Worker | None = None
        self.killed = False

    @property
    def running(self) -> bool:
        return self.worker is not None

    def kill(self, block: bool = False) -> None:
        """Raise GreenletExit in the task, soon (never waits: ``block`` is gevent's word); a
        task its greenlet has not begun yet never runs."""
        self.killed = True
        if self.worker is not None:
            gevent.get_hub().loop.run_callback(self._throw)

    def _throw(self) -> None:  # in the hub, the worker suspended: still this task's?
        worker = self.worker
        if worker is not None:
            worker.throw(GreenletExit)


class _Worker(gevent.Greenlet):
    task: Task | None = None


class _Idle:
    hub = None  # the hub the idle workers belong to (one per thread; a new one starts empty)
    workers: list[_Worker] = []


def start(func: Callable, *args, name: str, on_error: ErrorHandler | None = None) -> Task:
    """``spawn``, on an idle greenlet if there is one; ``current_task()`` names it inside."""
    task = Task(func, args, name, on_error)
    hub = gevent.get_hub()
    if _Idle.hub is hub and _Idle.workers:
        worker = _Idle.workers.pop()
        worker.task, task.worker, worker.name = task, worker, name
        hub.loop.run_callback(worker.switch)
    else:
        worker = _Worker(_work)
        worker.task, task.worker, worker.name = task, worker, name
        worker.start()
    return task


def current_task() -> Task | None:
    """The task the calling greenlet carries (None outside ``start``'s)."""
    return getattr(gevent.getcurrent(), "task", None)


def _work() -> None:
    me = gevent.getcurrent()
    hub = me.parent
    while True:
        task = me.task
        try:
            if not task.killed:
                contextvars.Context().run(task.func, *task.args)  # as empty as a new one's
        except GreenletExit:
            pass
        except Exception as exc:  # nothing here switches: a late kill cannot land in it
            logger.exception("%s crashed", task.name)
            if task.on_error is not None:
                gevent.spawn(_handle, task.name, task.on_error, exc)
        finally:
            task.worker = me.task = None
            task.func, task.args = None, ()  # what it served is not kept alive by it...
        task = None  # ...nor by this greenlet while it waits for the next one
        if _Idle.hub is not hub:
            _Idle.hub, _Idle.workers = hub, []
        if len(_Idle.workers) >= MAX_IDLE:
            return
        _Idle.workers.append(me)
        try:
            hub.switch()  # until start() hands over the next task
        except BaseException:
            if me in _Idle.workers:  # not to be handed a task it could not run
                _Idle.workers.remove(me)
            raise


def _handle(name: str, on_error: ErrorHandler, exc: BaseException) -> None:
    try:
        on_error(exc)
    except Exception:  # the handler is the last line: report, never re-raise into the hub
        logger.exception("%s: handling its crash failed", name)


def closing(link) -> ErrorHandler:
    """An ``on_error`` that closes ``link`` (anything with ``close(reason)``), naming the error."""
    return lambda exc: link.close(f"proxy error: {exc.__class__.__name__} in a background task")
