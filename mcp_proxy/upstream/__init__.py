"""Client mode: upstream links to remote SSE and Streamable HTTP servers."""
