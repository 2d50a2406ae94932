"""The user's ID token for enterprise sign-in: read from ``--id-token FILE`` or printed by
``--id-token-command CMD``, afresh each time one is needed (a company tool may renew it).

The command runs without a shell (``sh -c '...'`` for a pipeline), with no stdin (ours is
the MCP stream) and our stderr (its messages reach the desktop client's log), bounded by
``--oauth-timeout``. A failure is one line that never holds the token.
"""

from __future__ import annotations

import logging
import re

import gevent
from gevent import subprocess

from mcp_proxy.errors import AuthError

logger = logging.getLogger(__name__)

LONGEST = 64 << 10  # an ID token is a few KiB; more is not one
# a JWS (three base64url parts) or a JWE (five), as an OpenID Connect ID token is
JWT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){2}((\.[A-Za-z0-9_-]*){2})?")


def is_jwt(text: str) -> bool:
    return len(text) <= LONGEST and JWT.fullmatch(text) is not None


class IdTokenSource:
    """Where the ID token comes from (the flag's name goes in every error)."""

    def __init__(self, path: str | None, command: list[str] | None, timeout: float) -> None:
        self.path, self.command, self.timeout = path, command, timeout
        self.flag = "--id-token-command" if self.command else "--id-token"

    def read(self) -> str:
        raw = self._run() if self.command else self._file()
        text = raw.decode("ascii", "replace").strip()
        if not text:
            raise AuthError(f"{self.flag} gave no ID token (empty)")
        if not is_jwt(text):
            raise AuthError(f"{self.flag} gave no ID token: what it gave is not a JWT "
                            f"(base64url parts joined by dots)")
        return text

    def _file(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                return handle.read(LONGEST + 1)
        except OSError as exc:
            raise AuthError(f"--id-token: cannot read {self.path}: "
                            f"{exc.strerror or exc.__class__.__name__}") from None

    def _run(self) -> bytes:
        name = self.command[0]
        try:
            process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=None)
        except OSError as exc:
            raise AuthError(f"--id-token-command: cannot run {name!r}: "
                            f"{exc.strerror or exc.__class__.__name__}") from None
        try:
            with gevent.Timeout(self.timeout, False):
                out = process.stdout.read(LONGEST + 1)
                if len(out) > LONGEST:
                    raise AuthError(f"--id-token-command printed over {LONGEST >> 10} KiB: "
                                    f"not an ID token")
                status = process.wait()
                logger.debug("--id-token-command exited with status %s", status)
                if status != 0:
                    raise AuthError(f"--id-token-command {name!r} failed (exit status "
                                    f"{status}; its messages are in the log above)")
                return out
            raise AuthError(f"--id-token-command {name!r} did not finish within "
                            f"{self.timeout:g} s (--oauth-timeout)")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
