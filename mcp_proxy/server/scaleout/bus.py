"""The bus between workers (``--redis-url``): this worker's tag, its Redis inbox, and frames.

It owns the worker's Redis connections, its key and its inbox reader, and publishes frames;
what a frame means is its callers' (router.py dispatches what the inbox reads). It never
blocks the inbox reader on a frame, and never publishes twice what a reader may have got.

Every worker picks a random 8-character tag after fork (the app is built in the worker), and
claims ``mcpp:worker:<tag>`` for 15 s, refreshed every 5 s; the tag starts the id of every
session it owns. Its inbox is one pub/sub channel, ``mcpp:in:<tag>``, read by one supervised
greenlet that never blocks on a frame: it hands each to ``on_frame``. A lost connection is
retried with jittered backoff capped at 1 s, and the key is claimed again at once (a
restarted Redis has lost it); any other failure of the reader is fatal (``on_fatal`` exits
the worker), so a worker never lives on as an owner nobody can reach.

A frame nobody received (PUBLISH counted 0) is sent again for the grace while its worker's
key exists: a worker whose inbox reconnects keeps its key, a made-up or long-dead one has
none, and gets its answer at once. Right after this worker's own reconnect a missing key
proves nothing (a restarted Redis has none yet), so the whole grace is given then. An owner's
frame back to the receiving worker (``publish_back``) is also sent again while Redis cannot be
reached, for up to ``OUTAGE``: the request it answers has run, and losing its answer to a blip
would fail a delivered message.

A frame (frames.py) over 256 KiB travels by reference (``mcpp:blob:<uuid>``, 60 s) to keep
far from Redis' pub/sub output-buffer cut (32 MB), and is read once, with GETDEL. PUBLISH
and the inbox talk RESP on redis-py's connections directly (redis_wire.py).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import string
import time
import uuid
from collections.abc import Callable

import gevent
import redis
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.retry import Retry

from mcp_proxy.core import greenlets
from mcp_proxy.errors import BlobLost, BusDown
from mcp_proxy.server.scaleout.frames import encode
from mcp_proxy.server.scaleout.redis_wire import Inbox, Publisher

logger = logging.getLogger(__name__)

TAG_LENGTH = 8
_TAG_ALPHABET = string.digits + string.ascii_lowercase
BLOB_OVER = 256 << 10  # payloads larger than this go as a key, not through the channel
BLOB_TTL = 60
WORKER_TTL = 15
REFRESH = 5.0
_BACKOFF_CAP = 1.0
GRACE = 2.0  # how long a worker whose inbox reconnects may miss frames: they are resent
RESEND_EVERY = 0.05
OUTAGE = 5.0  # how long an answer waits for Redis to come back
# frames whose second copy the receiving worker ignores: resent even when the first may
# have gone out (a second ``data`` would be a second event)
_IDEMPOTENT = {"resp", "head", "end", "alive"}


def inbox(tag: str) -> str:
    return f"mcpp:in:{tag}"


def new_tag() -> str:
    return "".join(random.SystemRandom().choice(_TAG_ALPHABET) for _ in range(TAG_LENGTH))


class Bus:
    """One worker's end of Redis: publish to a tag, read its own inbox."""

    def __init__(self, url: str, on_frame: Callable[[bytes], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.tag = new_tag()
        self.state = "connecting"  # connected | disconnected
        self.listening = Event()  # set while the inbox is subscribed
        self.reconnected = -GRACE  # when the inbox last came back after losing Redis
        self._claim_now = Event()
        self.on_frame = on_frame
        self.on_fatal = on_fatal
        # no retries: a PUBLISH retried after a lost reply could deliver a message twice;
        # RESP2: a subscribed connection's messages are plain arrays (redis_wire.py)
        self.redis = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10,
            retry=Retry(NoBackoff(), 0), max_connections=64, protocol=2)
        self.publisher = Publisher(self.redis.connection_pool)
        # the inbox's own pool: its socket timeout (three pings) bounds every read, with no
        # per-read timeout to set and reset
        self.inbox_pool = redis.ConnectionPool.from_url(
            url, socket_connect_timeout=2, socket_timeout=3 * REFRESH, protocol=2,
            max_connections=4)
        self.info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "started": time.time()})
        self._greenlets: list[gevent.Greenlet] = []
        self.stopping = False

    def start(self) -> None:
        self._greenlets = [
            greenlets.spawn(self._read, name="bus inbox reader", on_error=self._fatal),
            greenlets.spawn(self._keep_claim, name="bus worker key", on_error=self._fatal),
        ]

    def stop(self) -> None:
        self.stopping = True  # what fails from here on is the shutdown, not the inbox
        gevent.killall(self._greenlets, block=True, timeout=1)
        try:
            self.redis.delete(f"mcpp:worker:{self.tag}")
        except redis.RedisError:
            pass
        self.publisher.close()
        self.redis.close()
        self.inbox_pool.disconnect()

    def _fatal(self, exc: BaseException) -> None:
        if self.stopping:
            return
        self.state = "failed"
        self.on_fatal(exc)

    # -- publishing ---------------------------------------------------------------------

    def prepare(self, header: dict, payload: bytes = b"") -> bytes:
        """The frame's bytes; a large payload is stored first and the frame refers to it."""
        if len(payload) > BLOB_OVER:
            key = f"mcpp:blob:{uuid.uuid4().hex}"
            try:
                self.redis.set(key, payload, ex=BLOB_TTL)
            except redis.RedisError as exc:
                raise BusDown(str(exc)) from exc
            header = {**header, "b": key, "n": len(payload)}  # its weight (forwarder.py)
            payload = b""
        return encode(header, payload)

    def publish_frame(self, tag: str, frame: bytes) -> int:
        """PUBLISH to a worker's inbox: how many readers got it (0: none is listening)."""
        return self.publisher.publish(inbox(tag).encode(), frame)

    def publish(self, tag: str, header: dict, payload: bytes = b"", grace: float = 0.0) -> bool:
        """Publish a frame; while no reader got it, again for up to ``grace`` seconds
        (a count of 0 means nobody received it, so resending cannot duplicate it), unless
        the worker ``tag`` has no key: then it is gone, or never was."""
        return self.publish_prepared(tag, self.prepare(header, payload), grace)

    def publish_prepared(self, tag: str, frame: bytes, grace: float = 0.0) -> bool:
        """``publish`` of a frame ``prepare`` made (its blob, if any, stored once)."""
        deadline = time.monotonic() + grace
        if self.publish_frame(tag, frame):
            return True
        if not grace or not self.claimed(tag):
            return False
        while not self.publish_frame(tag, frame):
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(RESEND_EVERY)
        return True

    def publish_back(self, tag: str, header: dict, payload: bytes = b"", grace: float = 0.0
                     ) -> bool:
        """``publish`` an owner's frame back, again while Redis cannot be reached (up to
        ``OUTAGE``) unless it may have gone out and a second copy would not be ignored."""
        deadline, pause = time.monotonic() + OUTAGE, RESEND_EVERY
        frame = None  # prepared once: each retry storing its own copy of a blob left them
        while True:  # to expire in Redis, a payload's size each
            try:
                if frame is None:
                    frame = self.prepare(header, payload)
                return self.publish_prepared(tag, frame, grace)
            except BusDown as exc:
                if time.monotonic() >= deadline or self.stopping or (
                        exc.unsure and header["k"] not in _IDEMPOTENT):
                    raise
            gevent.sleep(pause)
            pause = min(pause * 2, 0.5)

    def claimed(self, tag: str) -> bool:
        """Whether worker ``tag`` may be alive: its key exists, or cannot be known to be gone."""
        if time.monotonic() - self.reconnected < GRACE:
            return True  # Redis may have restarted empty: live workers are still re-claiming
        try:  # GET, not EXISTS: the README's ACL user may run it
            return self.redis.get(f"mcpp:worker:{tag}") is not None
        except (redis.ConnectionError, redis.TimeoutError):
            return True
        except redis.RedisError as exc:  # a refusal: the ACL lacks a command
            logger.warning("worker %s: Redis refused to read a worker key (%s); a request "
                           "for a gone worker's session waits out the grace", self.tag, exc)
            return True

    def payload(self, header: dict, payload: bytes) -> bytes:
        """A received frame's payload, fetched (once) if it came by reference."""
        key = header.get("b")
        if key is None:
            return payload
        try:
            data = self.redis.getdel(key)
        except redis.RedisError as exc:
            raise BusDown(str(exc)) from exc
        if data is None:
            raise BlobLost(f"payload {key} expired before it was read")
        return data

    # -- reading the inbox --------------------------------------------------------------

    def _read(self) -> None:
        backoff = 0.05
        while True:
            messages = Inbox(self.inbox_pool, inbox(self.tag), REFRESH).messages()
            try:
                for data in messages:
                    if self.state != "connected":
                        if self.state == "disconnected":
                            self.reconnected = time.monotonic()
                            self._claim_now.set()
                        self._set_state("connected")
                        backoff = 0.05
                    if data:  # the first, empty, says the subscription is in place
                        self.on_frame(data)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._set_state("disconnected", exc)
            finally:
                messages.close()
            gevent.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _BACKOFF_CAP)

    def _set_state(self, state: str, exc: BaseException | None = None) -> None:
        if state == self.state:
            return
        if state == "connected":
            logger.info("worker %s: listening on Redis (%s)", self.tag, inbox(self.tag))
            self.listening.set()
        else:
            self.listening.clear()
            logger.warning("worker %s: cannot reach Redis (%s); requests for sessions of other "
                           "workers get 503 until it is back", self.tag, exc)
        self.state = state

    def _keep_claim(self) -> None:
        """Claim this worker's key, then keep it alive; a clash (one in 36^8) is fatal."""
        key, claimed = f"mcpp:worker:{self.tag}", False
        while True:
            wait = REFRESH
            try:
                if self.redis.set(key, self.info, ex=WORKER_TTL, nx=not claimed) is None:
                    raise RuntimeError(f"worker tag {self.tag} is held by another worker")
                claimed = True
            except (redis.ConnectionError, redis.TimeoutError):
                # the reader reports the outage; the key is wanted back as soon as Redis is
                wait = 5 * RESEND_EVERY
            self._claim_now.wait(wait)  # or at once when the inbox is back
            self._claim_now.clear()
