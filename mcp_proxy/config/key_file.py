"""API keys as text: the rule a key follows, its default id, and ``--auth-token-file``.

This module owns reading keys, never checking a request against them (server/api_keys.py
does). A key is what a client sends in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, so
it is visible ASCII without spaces (``!`` to ``~``). Its id, unless the config file gives one,
is the first 12 hex digits of its SHA-256: a name for logs and sessions that is not the key.

The key file holds one key a line; blank lines and lines whose first non-blank character is
``#`` are skipped, and a line's surrounding blanks are not part of its key (a ``#`` inside a
key is part of it: there are no trailing comments). A line that is not a key is an error
naming the line's number, never its text.
"""

from __future__ import annotations

import hashlib
import re

from mcp_proxy.config.settings import ApiKey
from mcp_proxy.errors import ConfigError

KEY_TEXT = re.compile(r"[!-~]+")
KEY_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MAX_FILE = 1 << 20  # a key file is a few lines: a bigger one is a mistake (a wrong path)


def key_id(key: str) -> str:
    """A key's default id: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def check_key(key: str, where: str) -> None:
    """Refuse a key no client can send in a header (the message never holds the key)."""
    if not KEY_TEXT.fullmatch(key):
        raise ConfigError(f"{where}: an API key is visible ASCII characters without spaces "
                          f"('!' to '~'), and not empty")


def flag_keys(tokens: list[str]) -> list[ApiKey]:
    """The keys of ``--auth-token`` (each opens every server)."""
    keys = []
    for token in tokens:
        check_key(token, "--auth-token")
        keys.append(ApiKey(token, key_id(token)))
    return keys


def parse_key_file(text: str, path: str) -> list[ApiKey]:
    """The keys of a key file's text; a line that is not a key is a ConfigError."""
    keys, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        check_key(key, f"{path}, line {number}")
        if key not in seen:
            seen.add(key)
            keys.append(ApiKey(key, key_id(key)))
    if not keys:
        raise ConfigError(f"{path} holds no key (one a line; '#' starts a comment)")
    return keys


def read_key_file(path: str) -> list[ApiKey]:
    """The keys of ``--auth-token-file``; a ConfigError if it cannot be read or holds none."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"the key file {path} is over {MAX_FILE >> 20} MiB: not a key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the key file {path} is not UTF-8 text") from None
    return parse_key_file(text, path)
