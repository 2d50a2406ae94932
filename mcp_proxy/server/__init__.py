"""Server mode's HTTP edge: the Flask app, its guard, sessions and streams, the two
transports, the 2026-07-28 relay, probes, status and metrics; scale-out in ``scaleout/``.
"""
