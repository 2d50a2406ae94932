"""mcp-proxy: bridge MCP transports (stdio, HTTP+SSE, Streamable HTTP) on gevent.

The layers, from the bottom (ARCHITECTURE.md draws them and walks a message through them):
``core`` (messages, links and the bridge), ``config``, ``children`` (server mode's stdio
servers), ``upstream`` (remote servers as links), ``server`` (the HTTP edge; ``scaleout``
under it) and ``client`` (client mode), with the entry points ``cli``, ``wsgi`` and
``gunicorn_conf`` on top. Imports only go down.

The verbs that move a message, one per step; functions use these and no synonyms:

read
    take a message off a wire: an HTTP body, a line of stdin, a frame of a child's stdout,
    an event of a remote's stream.
deliver
    a link hands on what its peer sent, to the bridge that took the link (or its inbox).
relay
    the bridge carries a delivered message to the other link's ``send``, unchanged: it never
    answers, drops or rewrites a message on its own account.
route
    a place many share picks where a message goes (a multiplexer its port, a session its
    stream, the router its worker), rewriting ids only where sharing needs it.
send
    a link takes a message for its peer and writes it (or queues it for the writer).
write
    put bytes on a wire: a child's stdin, an event stream's body, our stdout, a socket.
post
    client mode's HTTP POST of one message to the remote.
forward
    hand a request for a session another worker owns to that worker, over the bus.
publish
    put a frame on a Redis channel (a forwarded request, or an owner's frames back).
answer
    the proxy makes a response itself: an error, a cached ``initialize`` result, a 202.
"""

# Calendar versions (year.month.release): never to be mistaken for the 0.x versions of
# the other project named mcp-proxy on PyPI, whose command line this one keeps.
__version__ = "2026.12.0"
