"""core/greenlets.start: tasks on reused greenlets. A kill stops its own task and never the
next one its greenlet carries; a crash is logged and handed on as spawn's is; a task starts
with empty contextvars, as a new greenlet does. In-process, gevent without monkey-patching."""

from __future__ import annotations

import contextvars
import gc
import logging
import weakref

import gevent
from gevent.event import Event
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_proxy.core import greenlets
from mcp_proxy.core.greenlets import current_task, start

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark")


def settle() -> None:
    for _ in range(5):  # every callback queued so far (a switch, a throw) has run
        gevent.sleep(0)


def test_a_greenlet_is_reused_and_a_late_kill_spares_its_next_task():
    seen, gate = [], Event()
    first = start(seen.append, "first", name="first")
    settle()
    assert not first.running and seen == ["first"]
    second = start(gate.wait, 5, name="second")
    assert second.worker is not None and second.worker.name == "second"
    first.kill()  # the first task has ended: its greenlet now carries the second
    settle()
    assert second.running
    gate.set()
    settle()
    assert not second.running


def test_a_kill_that_lands_after_its_task_ended_touches_nothing():
    """The kill's throw is queued behind the wake that lets the task finish, and a new task
    takes the same greenlet in between: the throw must not reach the new task."""
    gate, later, outcome = Event(), Event(), []

    def waits(label, event):
        try:
            event.wait(5)
            outcome.append(f"{label} done")
        except gevent.GreenletExit:
            outcome.append(f"{label} killed")
            raise

    first = start(waits, "first", gate, name="first")
    settle()
    gate.set()  # the first task's wake is queued...
    hub = gevent.get_hub()
    hub.loop.run_callback(lambda: outcome.append(start(waits, "second", later,
                                                       name="second")))
    first.kill()  # ...and the kill after it, after the second task has taken the greenlet
    settle()
    second = outcome.pop()
    assert outcome == ["first done"] and second.running
    later.set()
    settle()
    assert outcome == ["first done", "second done"]


def test_a_kill_stops_a_running_task():
    outcome = []

    def sleeps():
        try:
            gevent.sleep(30)
        except gevent.GreenletExit:
            outcome.append("killed")
            raise

    task = start(sleeps, name="sleeper")
    settle()
    task.kill()
    settle()
    assert outcome == ["killed"] and not task.running
    again = start(lambda: outcome.append("next"), name="next")  # the greenlet is back in use
    settle()
    assert outcome == ["killed", "next"] and not again.running


def test_a_task_killed_before_its_greenlet_began_it_never_runs():
    """A cancel right after a driver was started (before the hub ran it): without this, the
    request ran anyway, and a driver that answers before its first switch answered a
    cancelled request."""
    seen = []
    for kept in (False, True):  # on a new greenlet, and on a kept one
        settle()
        assert bool(greenlets._Idle.workers) or not kept
        task = start(seen.append, "cancelled", name="cancelled")
        task.kill()
        settle()
        assert seen == [] and not task.running
    start(seen.append, "next", name="next")
    settle()
    assert seen == ["next"]


def test_a_crash_is_logged_and_handed_on_and_the_greenlet_serves_on(caplog):
    seen = []
    with caplog.at_level(logging.ERROR, logger="mcp_proxy.core.greenlets"):
        start(lambda: 1 / 0, name="divider", on_error=seen.append)
        settle()
    assert [type(exc) for exc in seen] == [ZeroDivisionError]
    assert [r.getMessage() for r in caplog.records] == ["divider crashed"]
    after = []
    start(after.append, 1, name="after")
    settle()
    assert after == [1]


def test_a_task_starts_with_empty_contextvars_and_knows_itself():
    seen = []

    def marks(label):
        seen.append((MARK.get(None), current_task().name))
        MARK.set(label)  # never reset: the next task on this greenlet must not see it

    for label in ("a", "b", "c"):
        start(marks, label, name=label)
        settle()
    assert seen == [(None, "a"), (None, "b"), (None, "c")]
    assert current_task() is None


def test_at_most_max_idle_greenlets_are_kept():
    gate = Event()
    tasks = [start(gate.wait, 5, name=f"t{n}") for n in range(greenlets.MAX_IDLE + 8)]
    settle()
    gate.set()
    settle()
    assert not any(task.running for task in tasks)
    idle = greenlets._Idle.workers
    assert len(idle) == greenlets.MAX_IDLE and not any(worker.dead for worker in idle)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["start", "kill", "release", "yield"]),
                          st.integers(0, 5)), max_size=40))
def test_tasks_end_as_they_are_told_in_any_order(steps):
    """Tasks wait for their own release; any interleaving of starts, kills and releases:
    a task never killed finishes, each task sees itself as the current task, and no kill
    lands on a task it was not meant for."""
    gates = {n: Event() for n in range(6)}
    tasks, outcome, killed = {}, {}, set()

    def waits(n):
        me = current_task()
        try:
            gates[n].wait(10)
            outcome[n] = "done" if current_task() is me else "mixed up"
        except gevent.GreenletExit:
            outcome[n] = "killed"
            raise

    for op, n in steps:
        if op == "start" and n not in tasks:
            tasks[n] = start(waits, n, name=f"t{n}")
        elif op == "kill" and n in tasks:
            killed.add(n)
            tasks[n].kill()
        elif op == "release":
            gates[n].set()
        else:
            gevent.sleep(0)
    for gate in gates.values():
        gate.set()
    settle()
    assert set(outcome) | killed >= set(tasks)  # a task killed before it began never runs
    for n, result in outcome.items():
        assert result == "done" if n not in killed else result in ("done", "killed")
    assert not any(task.running for task in tasks.values())


def test_an_ended_task_keeps_nothing_it_served_alive():
    """A kept greenlet and its last task hold no reference to what that task was given (a
    closed session's link and buffers, say) while the greenlet waits for the next task."""

    class Served:
        pass

    served = Served()
    gone = weakref.ref(served)
    task = start(lambda thing: None, served, name="holder")
    settle()
    del served
    gc.collect()
    assert gone() is None and not task.running
