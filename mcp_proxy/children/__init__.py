"""Server mode's stdio servers: a child process, the multiplexer that shares one child among
sessions through ports, the 2026-07-28 lane, their health, and the supervisor that owns them.

From the bottom: ``health`` and ``request_state`` (no imports of the package), ``startup``
and ``framing`` (a starting child's stderr and watch; its stdout's frames), ``sharing`` (what
the sessions on a shared child hold of it), ``process`` (``StdioChild``), ``port`` (a
session's link to a shared child), ``fanin``/``fanout`` (the multiplexer's routing, as
mixins), ``multiplexer``, ``lane`` (``ModernLane``, a multiplexer), ``modern_child`` (the era bridge
in front of a 2026-07-28-only child or lane port), and ``supervisor``, which
imports none of the classes it starts: the app hands them to it.

Knows nothing of HTTP: the server's edge hands it sessions as links.
"""
