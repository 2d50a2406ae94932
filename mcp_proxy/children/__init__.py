"""Server mode's stdio servers: a child process, the multiplexer that shares one child among
sessions through ports, the 2026-07-28 lane, their health, and the supervisor that owns them.

Knows nothing of HTTP: the server's edge hands it sessions as links.
"""
