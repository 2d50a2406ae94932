"""Reading the remote's HTTP responses: what a status means (``check_status``), the
server-sent events of a stream (``events``), and whether an endpoint is on the remote's
origin (``same_origin``).

It sends nothing and never logs a header value.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
from sseclient import SSEClient

from mcp_proxy.errors import NO_TOKEN, AuthError, Refused, UpstreamError

# A 4xx that may heal: the route may appear (404, 405), the remote was slow (408) or busy
# (429). Any other one says the URL or the request is wrong, and will stay so.
HEALING = (404, 405, 408, 429)


def check_status(response: requests.Response, what: str, http=None) -> None:
    """Raise AuthError for 401/403, Refused for a 4xx that cannot heal, UpstreamError for any
    other non-2xx status. ``http``, the session, tells whether we sent credentials at all."""
    status = response.status_code
    if status in (401, 403):
        if http is not None and not has_credentials(http):
            raise AuthError(f"{what}: the remote wants credentials ({status}) and we sent "
                            f"no Authorization header: {NO_TOKEN}")
        raise AuthError(f"{what}: the remote refused our credentials ({status})")
    if 400 <= status < 500 and status not in HEALING:
        raise Refused(f"{what}: HTTP {status} {response.reason}")
    if status >= 300:
        raise UpstreamError(f"{what}: HTTP {status} {response.reason}")


def has_credentials(http: requests.Session) -> bool:
    """Whether our requests carry any: an auth of ours, or an Authorization header."""
    return http.auth is not None or "Authorization" in http.headers


def events(response: requests.Response) -> Iterator:
    """Server-sent events of a streaming response, fed from ``raw.read1`` (not 128-byte reads)."""
    raw = response.raw

    def chunks() -> Iterator[bytes]:
        while True:
            chunk = raw.read1(65536)
            if not chunk:
                return
            yield chunk

    try:
        yield from SSEClient(chunks()).events()
    except (requests.RequestException, OSError, ValueError) as exc:
        raise UpstreamError(f"event stream broken: {exc.__class__.__name__}") from exc
    except Exception as exc:  # urllib3 protocol errors surface as their own classes
        if exc.__class__.__module__.startswith("urllib3"):
            raise UpstreamError(f"event stream broken: {exc.__class__.__name__}") from exc
        raise


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (pa.scheme, pa.hostname, pa.port or default.get(pa.scheme)) == \
        (pb.scheme, pb.hostname, pb.port or default.get(pb.scheme))
