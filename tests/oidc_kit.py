"""A real authorization server for the resource-server tests: npm ``oidc-provider`` (9.x,
a certified OpenID Provider) run by ``servers/oidc_provider.mjs`` on a loopback port.

On first use the package is installed from the npm registry into ``.cache/oidc`` (git-ignored,
about 2 MB and a few seconds); it runs on the machine's Node (20 or later). The test gives the
provider its clients, its scopes and two RSA signing keys (``rotate()`` moves it to the
second); ``token()`` mints an access token with the client credentials grant for a resource
(RFC 8707), a JWT whose audience is that resource.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conftest import TESTS, free_port

CACHE = Path(__file__).parents[1] / ".cache" / "oidc"
PACKAGE = "oidc-provider@9.13.3"
MODULE = CACHE / "node_modules" / "oidc-provider" / "lib" / "index.js"
SCRIPT = TESTS / "servers" / "oidc_provider.mjs"
SCOPES = ["mcp:tools", "mcp:admin"]
CLIENT = {"client_id": "proxy-tests", "client_secret": "s3cret-for-tests",
          "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
          "response_types": ["code"], "token_endpoint_auth_method": "client_secret_post",
          "redirect_uris": ["http://127.0.0.1:33418/callback"],
          "scope": " ".join(["openid", "offline_access", *SCOPES])}
OTHER = {**CLIENT, "client_id": "other-client", "client_secret": "other-s3cret",
         "redirect_uris": ["http://127.0.0.1:33419/callback"]}  # a second subject
OFFLINE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH")


def install() -> None:
    """Install oidc-provider into .cache/oidc once (skip the test when that cannot be)."""
    if MODULE.exists():
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed to run the tests' authorization server")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE),
                           PACKAGE], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and OFFLINE.search(done.stderr):
        pytest.skip("the npm registry is unreachable: " + done.stderr.strip()[-300:])
    assert done.returncode == 0, done.stderr[-3000:]


def private_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict]:
    """An RSA key and its private JWK (with ``kid``, ``alg`` and ``use``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    return key, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class Provider:
    """One running oidc-provider; ``issuer`` is its URL, ``keys`` its private keys by kid."""

    def __init__(self, workdir: Path, ttl: int = 600, opaque: bool = False,
                 clients: list[dict] | None = None) -> None:
        install()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        pairs = [private_key(kid) for kid in ("k1", "k2")]
        self.keys = {jwk["kid"]: key for key, jwk in pairs}
        self.signing = "k1"
        config = {"port": self.port, "ttl": ttl, "opaque": opaque, "scopes": SCOPES,
                  "clients": clients or [CLIENT], "keys": [jwk for _, jwk in pairs]}
        path = workdir / "oidc-config.json"
        path.write_text(json.dumps(config))
        self.lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "OIDC_PROVIDER_MODULE": MODULE.as_uri()})
        self.errors: list[str] = []
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.errors.append),
                         daemon=True).start()
        self.expect("listening ")

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"oidc-provider said no {prefix!r} in {timeout}s: "
                                     + "\n".join(self.errors[-20:])) from None
            if line.startswith(prefix):
                return line

    def rotate(self) -> str:
        """Sign with the next key from now on; return its kid."""
        self.process.stdin.write("rotate\n")
        self.process.stdin.flush()
        self.signing = self.expect("rotated ").split()[1]
        return self.signing

    def token(self, resource: str, scope: str = " ".join(SCOPES), client: dict = CLIENT,
              **extra) -> str:
        """An access token for ``resource`` by the client credentials grant (of ``client``,
        whose id is the token's subject)."""
        answer = requests.post(f"{self.issuer}/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client["client_id"],
            "client_secret": client["client_secret"], "resource": resource, "scope": scope,
            **extra})
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def forge(self, claims: dict, kid: str | None = None, key=None, **headers) -> str:
        """A JWT signed with one of the provider's keys (or ``key``): claims the provider
        itself would not put in a token (an ``exp`` in the past), for refusals."""
        now = int(time.time())
        body = {"iss": self.issuer, "sub": "forged", "iat": now, "exp": now + 300, **claims}
        kid = kid or self.signing
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256",
                          headers={"kid": kid, "typ": "at+jwt", **headers})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def oidc(tmp_path):
    """Start providers (``oidc(ttl=..., opaque=...)``); all are stopped after the test."""
    started: list[Provider] = []

    def start(**options) -> Provider:
        provider = Provider(tmp_path, **options)
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()
