"""What a flag's value must be: the parsers of values, the URL of client mode, and the
parser whose refusal is one line naming the fix (not a 30-line usage dump above it).

Every refusal names the value given and what to give instead.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from urllib.parse import urlsplit

from mcp_proxy.config.settings import MiB
from mcp_proxy.errors import ConfigError

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP field name (RFC 9110)
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def size(text: str) -> int:
    """Parse a byte count: ``4194304``, ``4MiB``, ``512k``, ``1G``."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4MiB or 4194304)")
    unit = (match.group(2) or "b")[0].lower()
    return int(match.group(1)) * {"b": 1, "k": 1 << 10, "m": MiB, "g": 1 << 30}[unit]


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds greater than 0")
    return value


def host_address(text: str) -> str:
    """An address to bind: an empty one would bind every interface, which nobody means by
    leaving the value out (``--host "$HOST"`` with HOST unset)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty address would listen on every interface: "
                                         "give 127.0.0.1, or 0.0.0.0 to listen on all")
    return text


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 to 65535 (0 picks a "
                                         "free one)")
    return value


class Parser(argparse.ArgumentParser):
    """``error`` in one line, with the flag meant when an unknown one is close to it."""

    def error(self, message: str):
        unknown = message.partition("unrecognized arguments: ")[2].split()
        flags = [flag for action in self._actions for flag in action.option_strings]
        for word in unknown:
            name = word.partition("=")[0]
            longer = [flag for flag in flags if flag.startswith(name) and name[:2] == "--"]
            near = difflib.get_close_matches(name, flags, 1, cutoff=0.75)
            if longer:
                message += f" (flags are never abbreviated: write {' or '.join(longer[:3])})"
            elif near:
                message += f" (did you mean {near[0]}?)"
            if longer or near:
                break
        sys.stderr.write(f"{self.prog}: error: {message}; see {self.prog} --help\n")
        sys.exit(2)


def check_url(url: str) -> None:
    """Refuse at once, naming the fix, a URL that no retry can make work."""
    shown = re.sub(r"//[^/?#]*@", "//***@", url.split("?", 1)[0]) + ("?***" if "?" in url else "")
    example = "write it as http://HOST:PORT/PATH, e.g. http://127.0.0.1:8080/mcp"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # brackets: left open, or not around an IPv6 address
        if "]" not in url:
            raise ConfigError(f"URL {shown!r} is malformed: '[' without ']' (an IPv6 address "
                              f"is written in brackets: http://[::1]:8080/mcp)") from None
        raise ConfigError(f"URL {shown!r} is malformed ({exc}): {example}") from None
    raw_port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname:
        raise ConfigError(f"URL {shown!r} names no host: {example}")
    if raw_port and not port:
        raise ConfigError(f"URL {shown!r}: port {raw_port!r} is not a port (1 to 65535): "
                          f"{example}")
    from requests.models import PreparedRequest  # lazy: server mode never needs requests

    try:
        PreparedRequest().prepare_url(url, None)
    except Exception:  # InvalidURL, or urllib3's LocationParseError and kin
        raise ConfigError(f"URL {shown!r} is malformed: {example}") from None


def check_headers(headers: list[tuple[str, str]]) -> None:
    """Refuse a -H that no request could carry (the value, maybe a secret, is not shown)."""
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"-H {name!r}: not a header name (letters, digits and "
                              f"!#$%&'*+-.^_`|~, no spaces or colon): e.g. -H Authorization "
                              f"'Bearer TOKEN'")
        if any(c in value for c in "\r\n\0") or value[:1] in (" ", "\t"):
            raise ConfigError(f"-H {name!r}: the value has a line break, a NUL or leading "
                              f"blanks: give it on one line, trimmed")
        check_latin1(f"-H {name!r}: the value", value)


def check_latin1(what: str, value: str | None) -> None:
    """Refuse a credential or header value HTTP cannot carry: requests sends header values
    (and the Basic credentials) as Latin-1, and would fail on every request with a traceback."""
    if value is None:
        return
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{what} has a character an HTTP header cannot carry "
                          f"(at position {exc.start}; only Latin-1): "
                          f"percent-encode it, or give its ASCII form") from None

