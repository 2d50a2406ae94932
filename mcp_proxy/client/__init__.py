"""Client mode: our stdio bridged to one remote MCP server (an ``upstream/`` link).

``run.py`` starts it (connect, choose the transport, bridge, exit status); ``stdio.py`` is
our stdin and stdout as a link; ``fallforward.py`` bridges a 2025-era desktop client to a
remote that speaks only 2026-07-28, on the era bridge server mode shares (``bridging/``).
Nothing here speaks HTTP itself.
"""
