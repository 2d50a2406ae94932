"""Remote MCP servers as links: HTTP+SSE and Streamable HTTP, with recovery and auth.

Client mode bridges our stdio to one of them (``client/``); server mode will hand such a link
to its sessions as it hands them a child (DESIGN.md §3.1). Nothing here knows which side of
the bridge it is on, and nothing here imports ``client/`` or ``server/``.
"""
