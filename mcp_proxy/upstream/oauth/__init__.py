"""Client-mode OAuth: signing in to remote MCP servers (authorization code with PKCE)."""
