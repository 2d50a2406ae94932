"""What checking an OAuth access token costs a call (issue 22): the proxy as a resource server.

Two CLI proxies over raw_server: one with no auth, one with ``--oauth-issuer`` pointing at a
tiny authorization server the bench serves itself on loopback (RFC 8414 metadata and a JWKS
with one RSA key; the bench signs the token with PyJWT, RS256, its audience the endpoint's
URL). The same small echo call is timed on a Streamable HTTP session of each, in rounds that
alternate the two so that machine noise hits both alike. The token's signature is verified
on its first request and the result cached until it expires, so the target is on the p50
added: at most 0.05 ms. On a shared machine that difference drowns in noise; the CPU each
proxy spent per call, and the in-process time of the check of a known token, say more.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from clients import HOST, KEEPALIVE, Proxy, StreamableSession
from measure import summary
from procs import BenchError, Processes, log
from scaleout import alternate

TARGET_OAUTH_P50_MS = 0.05


class Issuer:
    """Metadata and JWKS of one RSA key, served on loopback; ``token(aud)`` signs a JWT."""

    def __init__(self) -> None:
        import jwt  # the test extra has PyJWT[crypto] (make install)
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self._jwt = jwt
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = {**json.loads(RSAAlgorithm.to_jwk(self.key.public_key())), "kid": "bench",
                  "alg": "RS256", "use": "sig"}
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = documents.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        documents["/.well-known/oauth-authorization-server"] = json.dumps(
            {"issuer": self.url, "jwks_uri": self.url + "/jwks"}).encode()
        documents["/jwks"] = json.dumps({"keys": [public]}).encode()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, audience: str) -> str:
        now = int(time.time())
        return self._jwt.encode({"iss": self.url, "sub": "bench", "aud": audience, "iat": now,
                                 "exp": now + 3600, "scope": "mcp:tools"}, self.key,
                                algorithm="RS256", headers={"kid": "bench"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BearerSession(StreamableSession):
    """A Streamable HTTP session whose every POST carries the token."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port)
        self.bearer = f"Bearer {token}"

    def _post(self, body: bytes):
        self.headers["Authorization"] = self.bearer
        return super()._post(body)


def oauth_latency(procs: Processes, calls: int, warmup: int, rounds: int = 10) -> dict:
    """The echo p50 through a proxy with no auth and through one that checks a JWT."""
    issuer = Issuer()
    started: list = []
    try:
        extra = ("--keepalive", str(KEEPALIVE))
        plain = Proxy(procs, "proxy-noauth", extra)
        checked = Proxy(procs, "proxy-oauth", (*extra, "--oauth-issuer", issuer.url,
                                               "--oauth-scope", "mcp:tools"))
        log("oauth: echo latency, no auth / a validated JWT (alternating rounds)")
        sessions = {"none": StreamableSession(plain.port),
                    "jwt": BearerSession(checked.port, issuer.token(f"{checked.url}/mcp"))}
        for session in sessions.values():
            session.initialize()
            started.append(session)
        samples, cpu = alternate(sessions, calls, warmup, rounds,
                                 {"none": plain.pid, "jwt": checked.pid})
        figures = {name: summary(samples[name]) for name in sessions}
        figures["added_p50_ms"] = figures["jwt"]["p50_ms"] - figures["none"]["p50_ms"]
        figures["cpu_ms_per_call"] = {name: 1000 * cpu[name][name] / len(samples[name])
                                      for name in sessions}
        figures["cached_check_us"] = cached_check_us(issuer)
        figures["rounds"] = rounds
        return figures
    except BenchError:
        raise
    finally:
        for session in started:
            session.close()
        issuer.close()


def cached_check_us(issuer: Issuer, checks: int = 20_000) -> float:
    """Microseconds of the proxy's token check (resource_meta.py) of a token already verified,
    in this process: what each request with a known token pays, without the machine's noise."""
    from mcp_proxy.config.settings import ResourceSettings, ServerSettings, ServerSpec
    from mcp_proxy.server.resource_meta import ResourceServer

    class App:  # what ResourceServer asks of Flask: its routes, unused here
        def add_url_rule(self, *args, **kwargs) -> None:
            pass

    settings = ServerSettings(servers={"": ServerSpec("raw_server")},
                              oauth=ResourceSettings(issuer=issuer.url))
    server = ResourceServer(App(), settings)
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:1", "SERVER_PORT": "1",
               "PATH_INFO": "/mcp",
               "REQUEST_METHOD": "POST",
               "HTTP_AUTHORIZATION": f"Bearer {issuer.token('http://127.0.0.1:1/mcp')}"}
    if server.check(dict(environ)) is not None:
        raise BenchError("the bench's token was refused in process")
    started = time.perf_counter()
    for _ in range(checks):
        server.check(dict(environ))
    return (time.perf_counter() - started) / checks * 1e6


def oauth_lines(figures: dict) -> list[str]:
    ok = figures["added_p50_ms"] <= TARGET_OAUTH_P50_MS
    return [f"OAuth resource server (issue 22): echo over /mcp, {figures['none']['calls']} calls "
            f"each in {figures['rounds']} alternating rounds",
            f"  no auth p50 {figures['none']['p50_ms']:.3f} ms, validated JWT p50 "
            f"{figures['jwt']['p50_ms']:.3f} ms: adds {figures['added_p50_ms']:+.3f} ms "
            f"(target <= {TARGET_OAUTH_P50_MS} ms) {'PASS' if ok else 'FAIL'}",
            f"  proxy CPU per call: no auth {figures['cpu_ms_per_call']['none']:.3f} ms, "
            f"validated JWT {figures['cpu_ms_per_call']['jwt']:.3f} ms; the check of a "
            f"known token in process: {figures['cached_check_us']:.1f} us"]
