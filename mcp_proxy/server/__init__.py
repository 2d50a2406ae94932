"""Server mode's HTTP edge: the Flask app, its guard, sessions and streams, the two
transports, the 2026-07-28 relay, probes, status and metrics; scale-out in ``scaleout/``.

From the bottom: ``responses``, ``streams``, ``metrics`` and ``url_adapter`` (Werkzeug's
adapter); ``era``, ``sessions``, ``guard``, ``probes``; ``streamable_session``,
``request_port``, ``status``, ``sse_transport``; ``relay``, then ``streamable_transport``,
which app.py hands the relay; ``app`` on top. Beside them, ``wsgi_server`` runs the app that
cli.py builds on pywsgi (``pywsgi_handler``: pywsgi's internals).
"""
