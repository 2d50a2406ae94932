"""A new connection from the session's urllib3 pool, for the POST fast path: the one place that
calls urllib3's private ``HTTPConnectionPool._new_conn``.

Why: the fast path (poster.py) writes its own request head and reads the response itself
(raw_response.py) on connections it keeps; it needs an unconnected ``HTTPConnection`` with
every TLS setting the session gave the pool (verify, CA bundle, client certificate, hostname
and fingerprint checks), and only the pool's ``_new_conn`` builds one. The public
alternatives: the pool's ``urlopen`` for each POST costs 262 us of CPU per POST where the fast
path costs 40 us (and requests' ``session.post`` 981 us): loopback keep-alive server in
another process, a ~100-byte JSON-RPC body and response, 5 interleaved rounds of 2,000 POSTs,
``time.process_time``, medians, 2026-12-03; +222 us is half again what a client-mode call
costs (0.26-0.43 ms, bench/README.md). Building the connection from urllib3's public
``HTTPSConnection`` costs nothing per POST but copies the pool's dozen TLS arguments, which a
urllib3 release may add to without telling us: a setting lost there would be a silent TLS
downgrade. ``_new_conn`` runs once per new connection, never per message (setup.cfg pins
urllib3 2).
"""

from __future__ import annotations

import requests
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool


def pool_for(session: requests.Session, url: str,
             request: requests.PreparedRequest) -> HTTPConnectionPool:
    """The pool the session's adapter uses for ``url``, with the session's TLS settings."""
    return session.get_adapter(url).get_connection_with_tls_context(
        request, session.verify, None, session.cert)


def new_connection(pool: HTTPConnectionPool) -> HTTPConnection:
    """A connection made by ``pool`` (not yet connected), outside its checkout."""
    return pool._new_conn()
