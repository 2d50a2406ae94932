"""The core both modes stand on: JSON-RPC messages, links and the bridge, strict HTTP/1.1 and
JSON parsing, MCP's protocol names, and background greenlets that cannot die silently.

Imports nothing else of the package but :mod:`mcp_proxy.errors`.
"""
