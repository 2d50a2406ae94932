"""The era bridges' transport-neutral half: a 2025-era client in front of a 2026-07-28 peer.

``legacy_face.py`` is the session's face (``initialize`` from ``server/discover``, the
``_meta`` stamp, requests carried in their own greenlets), ``era_probe.py`` the relay until
the peer refuses ``initialize`` and answers ``server/discover``, ``rounds.py`` a request's
``input_required`` rounds, ``listener.py`` the one held ``subscriptions/listen``. Client mode's
``FallForward`` puts it in front of a remote, server mode's ``ModernChildAsLegacy`` in front
of a child; it knows neither: a subclass says how a message reaches the peer and how a
request to it is stopped. It sits above ``upstream/`` (for its backoff) and below
``children/`` and ``client/``.
"""
