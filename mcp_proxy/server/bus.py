"""The bus between workers (``--redis-url``): this worker's tag, its Redis inbox, and frames.

Every worker picks a random 8-character tag after fork (the app is built in the worker), and
claims ``mcpp:worker:<tag>`` for 15 s, refreshed every 5 s; the tag starts the id of every
session it owns. Its inbox is one pub/sub channel, ``mcpp:in:<tag>``, read by one supervised
greenlet that never blocks on a frame: it hands each to ``on_frame``. A lost connection is
retried with jittered backoff capped at 1 s; any other failure of the reader is fatal
(``on_fatal`` exits the worker), so a worker never lives on as an owner nobody can reach.

A frame is a small JSON header, a newline, and the payload bytes as they are (a body, an SSE
chunk): no re-encoding. A frame over 256 KiB travels by reference (``mcpp:blob:<uuid>``, 60 s)
to keep far from Redis' pub/sub output-buffer cut (32 MB), and is taken with GETDEL.
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
from redis.backoff import NoBackoff
from redis.retry import Retry

from mcp_proxy import supervise
from mcp_proxy.server.resp import BusDown, Inbox, Publisher

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


class BlobLost(Exception):
    """A frame's payload key expired (or was taken) before it was read."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode(data: bytes) -> tuple[dict, bytes]:
    head, _, payload = data.partition(b"\n")
    return json.loads(head), payload


def inbox(tag: str) -> str:
    return f"mcpp:in:{tag}"


def new_tag() -> str:
    return "".join(random.SystemRandom().choice(_TAG_ALPHABET) for _ in range(TAG_LENGTH))


class Bus:
    """One worker's end of Redis: publish to a tag, receive on its own inbox."""

    def __init__(self, url: str, on_frame: Callable[[bytes], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.tag = new_tag()
        self.state = "connecting"  # connected | disconnected
        self.on_frame = on_frame
        self.on_fatal = on_fatal
        # no retries: a PUBLISH retried after a lost reply could deliver a message twice;
        # RESP2: a subscribed connection's messages are plain arrays (resp.py)
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
            supervise.spawn(self._read, name="bus inbox reader", on_error=self._fatal),
            supervise.spawn(self._keep_claim, name="bus worker key", on_error=self._fatal),
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

    # -- sending ------------------------------------------------------------------------

    def prepare(self, header: dict, payload: bytes = b"") -> bytes:
        """The frame's bytes; a large payload is stored first and the frame refers to it."""
        if len(payload) > BLOB_OVER:
            key = f"mcpp:blob:{uuid.uuid4().hex}"
            try:
                self.redis.set(key, payload, ex=BLOB_TTL)
            except redis.RedisError as exc:
                raise BusDown(str(exc)) from exc
            header = {**header, "b": key}
            payload = b""
        return encode(header, payload)

    def send(self, tag: str, frame: bytes) -> int:
        """PUBLISH to a worker's inbox: how many readers got it (0: none is listening)."""
        return self.publisher.publish(inbox(tag).encode(), frame)

    def post(self, tag: str, header: dict, payload: bytes = b"", grace: float = 0.0) -> bool:
        """Send a frame; while no reader got it, send it again for up to ``grace`` seconds
        (a count of 0 means nobody received it, so resending cannot duplicate it)."""
        frame = self.prepare(header, payload)
        deadline = time.monotonic() + grace
        while not self.send(tag, frame):
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(RESEND_EVERY)
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

    # -- receiving ----------------------------------------------------------------------

    def _read(self) -> None:
        backoff = 0.05
        while True:
            messages = Inbox(self.inbox_pool, inbox(self.tag), REFRESH).messages()
            try:
                for data in messages:
                    if self.state != "connected":
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
        else:
            logger.warning("worker %s: cannot reach Redis (%s); requests for sessions of other "
                           "workers get 503 until it is back", self.tag, exc)
        self.state = state

    def _keep_claim(self) -> None:
        """Claim this worker's key, then keep it alive; a clash (one in 36^8) is fatal."""
        key, claimed = f"mcpp:worker:{self.tag}", False
        while True:
            try:
                if self.redis.set(key, self.info, ex=WORKER_TTL, nx=not claimed) is None:
                    raise RuntimeError(f"worker tag {self.tag} is held by another worker")
                claimed = True
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # the reader reports the outage
            gevent.sleep(REFRESH)
