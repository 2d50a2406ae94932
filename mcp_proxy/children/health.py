"""What each configured server's children did lately, for the readiness probe and ``/status``.

A server is not ready when its last spawn failed (for ``SPAWN_HOLD`` seconds or until a spawn
succeeds), or when it is in a crash loop: its last ``CRASH_STREAK`` children each exited with
an error status (a code > 0) within ``EARLY_EXIT`` seconds of their start, all inside the last
``CRASH_WINDOW`` seconds. Any other exit (a clean one, one after a long life) ends the streak;
a death by signal does not count, because we signal children ourselves when they ignore the
end of their stdin.
"""

from __future__ import annotations

import time
from collections import deque

SPAWN_HOLD = 30.0
CRASH_STREAK = 3
EARLY_EXIT = 10.0
CRASH_WINDOW = 60.0


class ServerHealth:
    """What one configured server's children did lately: spawn failures and early crashes."""

    def __init__(self) -> None:
        self.spawn_error: str | None = None
        self.spawn_error_at = 0.0
        self.last_exit: int | None = None
        self._crashes: deque[float] = deque(maxlen=CRASH_STREAK)

    def spawned(self) -> None:
        self.spawn_error = None

    def spawn_failed(self, error: str) -> None:
        self.spawn_error, self.spawn_error_at = error, time.monotonic()

    def exited(self, code: int | None, lifetime: float) -> None:
        """Record a reaped child that ran ``lifetime`` seconds."""
        self.last_exit = code
        if code is not None and code > 0 and lifetime <= EARLY_EXIT:
            self._crashes.append(time.monotonic())
        else:
            self._crashes.clear()

    def problems(self, now: float) -> list[str]:
        found = []
        if self.spawn_error is not None and now - self.spawn_error_at < SPAWN_HOLD:
            found.append(f"spawn failed {now - self.spawn_error_at:.0f} s ago: "
                         f"{self.spawn_error}")
        crashes = self._crashes
        if len(crashes) == CRASH_STREAK and now - crashes[0] <= CRASH_WINDOW:
            found.append(f"crash loop: the last {CRASH_STREAK} server processes exited with "
                         f"an error within {EARLY_EXIT:g} s of their start (last exit code "
                         f"{self.last_exit})")
        return found
