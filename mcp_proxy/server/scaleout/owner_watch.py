"""The receiving worker's watch over the owners of its forwarded calls: do they still listen?

It owns what is known of owners that may be gone (``vanished``: since when an owner's inbox
has had no reader) and of this worker's own deafness (``napping_since``); the calls it
watches are the Forwarder's (forwarder.py), which it only reads, vouches for while this
worker could not hear, and ends as gone. It never publishes anything but a probe.

Whether an owner still answers is watched a few times a second. An owner whose inbox has no
reader while a call waits on it (a probe frame, which every worker drops, is counted 0 by
PUBLISH) is dying or reconnecting: after the bus grace (at once if its worker key is gone)
its calls end as for an unknown session (404), not after three missed pings; a killed worker
stays subscribed for a moment as the kernel tears it down, so a request sent then reached
nobody although PUBLISH counted it. A call's owner is never judged silent while this worker
could not have heard it: while its own inbox is down (up to the bus ``OUTAGE``), or right
after the process was stopped (SIGSTOP, a suspended VM), when every timer is overdue at once.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import gevent

from mcp_proxy.errors import BusDown
from mcp_proxy.server.scaleout.bus import GRACE, OUTAGE, Bus
from mcp_proxy.server.scaleout.frames import encode

logger = logging.getLogger(__name__)

TICK = 0.2  # how often owners are watched
QUIET = 0.1  # a call that heard nothing for this long has its owner's inbox checked
STALLED = 1.0  # a tick this late means the process was not running
_PROBE = encode({"k": "probe"})  # no call's frame: its owner drops it


class Watched(Protocol):
    """What the watch reads of a forwarded call (forwarder.ForwardedCall)."""

    owner: str  # its owner's tag
    seen: float  # when its owner was last heard of, or the watch vouched for it
    heard: bool  # its owner confirmed it (a frame, an ``alive``)

    def deliver(self, header: dict, payload: bytes) -> None: ...


class OwnerWatch:
    """Probes the owners of unconfirmed calls; ends the calls of owners that stopped listening."""

    def __init__(self, calls: dict[str, Watched], bus: Bus) -> None:
        self.calls = calls  # the Forwarder's, by number: read here, never changed
        self.bus = bus
        self.napping_since: float | None = None  # when the watch went to sleep
        self.vanished: dict[str, float] = {}  # owner tag -> since when its inbox has no reader

    def may_judge(self, call: Watched) -> bool:
        """Whether ``call``'s silence may be held against its owner now: not while the
        process has just resumed (every timer is overdue at once, before the watch has
        run), nor while the owner's inbox has no reader (the watch ends it as gone)."""
        since = self.napping_since
        awake = since is None or time.monotonic() - since < TICK + STALLED
        return awake and call.owner not in self.vanished

    def run(self) -> None:
        deaf_since: float | None = None
        while True:
            self.napping_since = time.monotonic()
            gevent.sleep(TICK)
            now = time.monotonic()
            stalled = now - self.napping_since > TICK + STALLED
            self.napping_since = None
            if not self.bus.listening.is_set():
                deaf_since = deaf_since or now
            elif deaf_since is not None:
                deaf_since, stalled = None, True  # frames sent meanwhile came to nobody
            if stalled or (deaf_since is not None and now - deaf_since < OUTAGE):
                for call in list(self.calls.values()):  # we could not hear: not their fault
                    call.seen = now
            if deaf_since is not None:
                self.vanished.clear()  # nothing is known of any owner now
            elif not stalled:
                self._check_owners(now)

    def _check_owners(self, now: float) -> None:
        """End the calls of owners whose inbox has had no reader for the grace."""
        waiting: dict[str, list] = {}
        for call in list(self.calls.values()):
            # only a call its owner never confirmed (no frame, no ``alive``): one it did has
            # reached the owner, which the heartbeat rule judges (an answer, never a 404)
            if not call.heard and now - call.seen > QUIET:
                waiting.setdefault(call.owner, []).append(call)
        for tag in self.vanished.keys() - waiting.keys():
            del self.vanished[tag]  # it answered, or nothing waits on it: start afresh
        if not waiting:
            return
        for tag, calls in waiting.items():
            try:  # how many read its inbox: a frame every owner ignores, as PUBLISH counts
                if self.bus.publish_frame(tag, _PROBE):
                    self.vanished.pop(tag, None)
                    continue
            except BusDown:
                return  # the inbox reader sees the outage
            since = self.vanished.setdefault(tag, now)
            if now - since >= GRACE or not self.bus.claimed(tag):
                logger.warning("worker %s has stopped listening on Redis: its sessions are "
                               "gone", tag)
                self.vanished.pop(tag, None)
                for call in calls:
                    call.deliver({"k": "gone"}, b"")
