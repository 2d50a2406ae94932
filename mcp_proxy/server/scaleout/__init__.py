"""Scale-out (``--redis-url``): which worker serves a request, forwarding it to the session's
owner over a Redis bus, and the owner's side that runs it and streams the answer back.

From the top: ``router`` (dispatches requests and inbox frames, wires the rest),
``forwarder`` (this worker's calls at others) with ``owner_watch`` (do their owners still
listen?), ``owner`` (others' calls served here), ``bus`` (the worker's tag, inbox and
publishing), ``frames`` (what a frame holds) and ``redis_wire`` (RESP on the hot path).
"""
