"""The wait between two tries at the remote: exponential, capped, jittered.

Used by the recovery loop (remote_link.py), the event streams (event_streams.py) and the
era bridges' listen (bridging/listener.py); it never sleeps itself.
"""

from __future__ import annotations

import random


def backoff(attempt: int, cap: float = 10.0) -> float:
    """Seconds to wait before try ``attempt + 1``: 0.25 s doubling up to ``cap``, +-25 %."""
    return min(cap, 0.25 * 2 ** attempt) * (0.75 + random.random() / 2)
