"""Scale-out (``--redis-url``): which worker serves a request, forwarding it to the session's
owner over a Redis bus, and the owner's side that runs it and streams the answer back.
"""
