"""The sign-in cache: per server, tokens and client registrations on disk, and its lock.

Under ``<user config dir>/mcp-proxy/oauth/<hash of the server>/`` (``MCP_PROXY_CONFIG_DIR``
replaces ``<user config dir>/mcp-proxy``): the directory is 0700, every file 0600 and
written atomically (a temporary file, fsync, rename). The lock is a non-blocking ``flock``
on the file ``lock`` there, polled with gevent sleeps, so waiting for another instance never
freezes our hub; the kernel releases it when its holder dies, even by SIGKILL, so a killed
instance never leaves a stale lock behind. The greenlet that holds it may take it again
(another greenlet of ours waits as another process would).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import gevent

from mcp_proxy.errors import AuthError

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock, the callback port still guards
    fcntl = None

logger = logging.getLogger(__name__)


def root() -> Path:
    configured = os.environ.get("MCP_PROXY_CONFIG_DIR")
    if configured:
        return Path(configured) / "oauth"
    import platformdirs

    return platformdirs.user_config_path("mcp-proxy", appauthor=False) / "oauth"


TEXT_FIELDS = ("refresh_token", "scope", "requested_scope", "issuer", "resource",
               "token_endpoint", "client_id", "client_method")


def well_formed(record: dict) -> bool:
    """Whether a tokens.json record is one we could have written: an access token fit for a
    header, text or null in the text fields, a number or null for the expiry."""
    token, expires = record.get("access_token"), record.get("expires_at")
    return isinstance(token, str) and token.isprintable() and bool(token) and not any(
        char.isspace() for char in token) and all(
        isinstance(record.get(name), (str, type(None))) for name in TEXT_FIELDS) and (
        expires is None or (isinstance(expires, (int, float)) and not isinstance(expires, bool)
                            and math.isfinite(expires)))


def token_record(answer: dict, found: Any, requested: str | None, client: Any,
                 old: dict | None = None) -> dict:
    """What we keep of a token response, from any sign-in (``found``: its discovery, ``client``:
    its wire.Client): an omitted refresh token or scope stays as was; an ``expires_in`` that
    is not a positive number of seconds (under 10^9) is no expiry known."""
    old = old or {}
    lifetime = answer.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) \
            or not 0 < lifetime < 10**9:
        lifetime = None
    granted = answer.get("scope")
    return {
        "access_token": answer["access_token"],
        "refresh_token": answer.get("refresh_token") or old.get("refresh_token"),
        "expires_at": time.time() + lifetime if lifetime else None,
        "scope": granted if isinstance(granted, str) and granted
        else old.get("scope") or requested,
        "requested_scope": requested, "issuer": found.issuer, "resource": found.resource,
        "token_endpoint": found.endpoint("token_endpoint"), "client_id": client.client_id,
        "client_method": client.method,
    }


def server_key(url: str, client_source: str = "") -> str:
    return hashlib.sha256(f"{url}|{client_source}".encode()).hexdigest()[:32]


class Store:
    """The cache directory of one server (one URL and client choice)."""

    def __init__(self, url: str, client_source: str = "") -> None:
        self.key = server_key(url, client_source)
        self.path = root() / self.key
        self.url = url
        self._holder: tuple[gevent.Greenlet, int] | None = None  # (who, how deep)

    def _ensure(self) -> None:
        if (self.path / "server.json").exists():
            return
        self.path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.path.parent, self.path):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        self._save("server.json", {"url": self.url})

    def read(self, name: str) -> dict | None:
        try:
            with open(self.path / name, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[...
            logger.warning("oauth cache: ignoring unreadable %s (%s)", self.path / name,
                           exc.__class__.__name__)
            return None
        if not isinstance(data, dict):
            logger.warning("oauth cache: ignoring %s (not a JSON object)", self.path / name)
            return None
        return data

    def tokens(self) -> dict | None:
        """tokens.json, unless missing or malformed (then replaced at the next sign-in)."""
        record = self.read("tokens.json")
        if record is not None and not well_formed(record):
            logger.warning("oauth cache: ignoring malformed %s", self.path / "tokens.json")
            return None
        return record

    def write(self, name: str, data: dict) -> None:
        try:
            self._ensure()
            self._save(name, data)
        except OSError as exc:  # a full disk, a read-only home: the sign-in still holds
            logger.warning("oauth cache: cannot write %s (%s); it holds for this run only",
                           self.path / name, exc.strerror or exc.__class__.__name__)

    def _save(self, name: str, data: dict) -> None:
        target = self.path / name
        temporary = self.path / f".{name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / name)

    @contextlib.contextmanager
    def lock(self, timeout: float):
        """Hold the cross-process lock of this server (waiting at most ``timeout`` s)."""
        me = gevent.getcurrent()
        if self._holder and self._holder[0] is me:  # a second flock would wait for us
            self._holder = (me, self._holder[1] + 1)
            try:
                yield
            finally:
                self._holder = (me, self._holder[1] - 1)
            return
        try:
            self._ensure()
            fd = os.open(self.path / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:  # a directory named lock, a cache we may not write...
            raise AuthError(f"cannot use the sign-in cache's lock file {self.path / 'lock'}: "
                            f"{exc.strerror or exc.__class__.__name__}") from None
        try:
            if fcntl is not None:
                deadline, waited = time.monotonic() + timeout, False
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not waited:
                            waited = True
                            logger.info("waiting for another mcp-proxy signing in to %s",
                                        self.url)
                        if time.monotonic() > deadline:
                            raise AuthError(f"another mcp-proxy is still signing in to "
                                            f"{self.url}; gave up waiting after {timeout:g} "
                                            f"s (--oauth-timeout)") from None
                        gevent.sleep(0.1)
            self._holder = (me, 1)
            yield
        finally:
            if self._holder and self._holder[0] is me:
                self._holder = None
            os.close(fd)  # releases the flock


def logout(url: str) -> int:
    """Forget every cached sign-in for ``url`` (any client choice); return how many."""
    base, count = root(), 0
    if not base.is_dir():
        return 0
    for folder in base.iterdir():
        try:
            with open(folder / "server.json", encoding="utf-8") as handle:
                known = json.load(handle).get("url")
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
        if known == url:
            shutil.rmtree(folder, ignore_errors=True)
            count += 1
    return count
