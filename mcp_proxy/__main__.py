"""Allow ``python -m mcp_proxy``."""

from mcp_proxy.cli import main

raise SystemExit(main())
