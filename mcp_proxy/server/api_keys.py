"""API keys at the edge: which key a request carries, whom it names, and what it opens.

This module owns the keys of one app (``--auth-token``, the config file's ``"auth"``, and
``--auth-token-file``, which it re-reads when it changes) and the verdict on a request:
accepted (``environ["mcp_proxy.auth"]`` set to its caller, ``key:`` and the key's id), 401,
or 403; it logs each refusal once, naming the client's address and a key's id or digest
prefix, never a key. The guard (guard.py) turns a verdict into an answer.

A key arrives as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Each candidate's
SHA-256 is compared with every key's (``hmac.compare_digest``, no early exit), so neither
the time of a refusal nor its length says which key came close. The key file is looked at
(one ``stat``) at most once a second, and read again only when its size, time or inode
changed, or on SIGHUP; a file that became unreadable, empty or wrong keeps the keys it held
before, with one logged error for each such change. A caller whose every key left the file
loses its open sessions (``on_revoked``): a stream must not outlive the key that opened it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable

from mcp_proxy.config.key_file import read_key_file
from mcp_proxy.config.settings import ApiKey, ServerSettings
from mcp_proxy.errors import ConfigError

logger = logging.getLogger(__name__)

ACCEPTED, UNAUTHORIZED, FORBIDDEN = 0, 401, 403
CHECK_EVERY = 1.0  # seconds between two looks at the key file
_SHOWN = 12  # hex digits of an unknown key's SHA-256 that a refusal names


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()


def sent_keys(environ: dict) -> list[str]:
    """The keys a request carries: a Bearer credential, and ``X-API-Key``."""
    sent = []
    authorization = environ.get("HTTP_AUTHORIZATION")
    if authorization:
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            sent.append(credential.strip())
    api_key = environ.get("HTTP_X_API_KEY", "").strip()
    if api_key:
        sent.append(api_key)
    return sent


class KeyRing:
    """The keys of one app; ``check`` gives a request its verdict."""

    def __init__(self, settings: ServerSettings) -> None:
        self.fixed = list(settings.api_keys)
        self.path = settings.auth_token_file
        self.from_file: list[ApiKey] = []
        self._stamp: tuple | None = None
        self._checked = time.monotonic()
        # told the callers whose every key left the file: their sessions end (app.py)
        self.on_revoked: Callable[[set[str]], None] | None = None
        if self.path is not None:
            self._stamp = self._stat()
            self.from_file = read_key_file(self.path)
        self._index()

    def _index(self) -> None:
        fixed = {key.key for key in self.fixed}
        keys = self.fixed + [key for key in self.from_file if key.key not in fixed]
        self.digests = [(_digest(key.key), key) for key in keys]
        self.admin_only = any(key.admin for key in keys)

    def __len__(self) -> int:
        return len(self.digests)

    def callers(self) -> set[str]:
        """Whom the keys name: ``key:`` and each key's id."""
        return {"key:" + key.id for _, key in self.digests}

    # -- the key file -------------------------------------------------------------------

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _look(self) -> None:
        """At most once a second: read the key file again if it changed."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        if self._stat() != self._stamp:
            self.reload("it changed")

    def reload(self, why: str = "SIGHUP") -> None:
        """Read the key file again; if it cannot be used, keep the keys it held."""
        if self.path is None:
            return
        self._stamp = self._stat()  # what is read now: not read again for the same change
        try:
            keys = read_key_file(self.path)
        except ConfigError as exc:
            logger.error("%s; keeping the %d keys it held", exc, len(self.from_file))
            return
        before = self.callers()
        self.from_file = keys
        self._index()
        logger.info("read the key file %s again (%s): %d keys", self.path, why, len(keys))
        revoked = before - self.callers()
        if revoked and self.on_revoked is not None:
            self.on_revoked(revoked)

    # -- a request ------------------------------------------------------------------------

    def match(self, environ: dict) -> tuple[ApiKey | None, str]:
        """The key a request carries, if it is one of ours, and what a refusal names."""
        if self.path is not None:
            self._look()
        found, shown = None, "no key"
        for text in sent_keys(environ):
            digest = _digest(text)
            for known, key in self.digests:  # every key, no early exit
                if hmac.compare_digest(known, digest) and found is None:
                    found = key
            if found is not None:
                break
            shown = f"an unknown key (SHA-256 {digest.hex()[:_SHOWN]}...)"
        return found, shown

    def check(self, environ: dict, server: str | None,
              matched: tuple[ApiKey | None, str] | None = None) -> int:
        """ACCEPTED (the caller named in the environ), UNAUTHORIZED or FORBIDDEN, for a
        request to ``server`` ("" the default one; None for /status); ``matched`` is what
        :meth:`match` found, when the caller asked it first."""
        key, shown = matched or self.match(environ)
        if key is None:
            self._refused(environ, shown)
            return UNAUTHORIZED
        caller = "key:" + key.id
        if server is None:
            if self.admin_only and not key.admin:
                self._refused(environ, f"{caller} is not an admin key")
                return FORBIDDEN
        elif key.servers is not None and server not in key.servers:
            self._refused(environ, f"{caller} does not open "
                          + (f"server {server!r}" if server else "the default server"))
            return FORBIDDEN
        environ["mcp_proxy.auth"] = caller
        return ACCEPTED

    @staticmethod
    def _refused(environ: dict, reason: str) -> None:
        # %r: a path is the client's text, and must not break the log line
        logger.warning("refused %s %r from %s: %s", environ.get("REQUEST_METHOD", "?"),
                       environ.get("PATH_INFO", "?")[:200], environ.get("REMOTE_ADDR") or "?",
                       reason)
