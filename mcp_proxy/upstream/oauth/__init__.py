"""Client-mode OAuth: signing in to remote MCP servers (authorization code with PKCE, or a code
entered on another device).

``auth.py`` (``OAuthSignIn``, the requests auth that carries the bearer token and reacts to a
refusal) drives ``discovery.py`` (which authorization server), ``signin.py`` (one sign-in:
the client, the authorization request, the code exchange) with ``browser.py`` (the browser
and the callback on 127.0.0.1), or ``device.py`` (sign-in with a code, RFC 8628, where no
browser opens), and ``store.py`` (the token cache on disk and its lock);
``credentials.py`` is the client credentials grant, and the enterprise sign-in
(``enterprise.py``: the user's ID token, from ``id_token.py``, exchanged for an ID-JAG at the
company identity provider, then the ``jwt-bearer`` grant) as that client; ``wire.py`` the
OAuth wire details all use. No token or secret ever reaches a log line.
"""
