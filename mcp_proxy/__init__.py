"""mcp-proxy: bridge MCP transports (stdio, HTTP+SSE, Streamable HTTP) on gevent."""

# Calendar versions (year.month.release): never to be mistaken for the 0.x versions of
# the other project named mcp-proxy on PyPI, whose command line this one keeps.
__version__ = "2026.12.0"
