"""Names of the MCP protocol that both modes check: the eras' versions, the 2026-07-28
``_meta`` keys, and the methods whose params name a tool, a prompt or a resource.

Plain constants, importable by client mode without the server's modules (or Flask).
"""

from __future__ import annotations

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # the 2025 era
MODERN_VERSION = "2026-07-28"

VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_KEY = "io.modelcontextprotocol/subscriptionId"
ENVELOPE = (VERSION_KEY, CAPABILITIES_KEY, CLIENT_INFO_KEY)

# the param that names what the method is about: its value goes in the Mcp-Name header
NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
