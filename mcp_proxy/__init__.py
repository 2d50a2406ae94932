"""mcp-proxy: bridge MCP transports (stdio, HTTP+SSE, Streamable HTTP) on gevent."""

__version__ = "0.1.0"
