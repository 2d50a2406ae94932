"""Client mode: our own stdio as a link, bridged to a remote upstream; the fall-forward
bridge for a 2025-era desktop client in front of a 2026-07-28-only remote.
"""
