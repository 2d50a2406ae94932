"""A real forward proxy and a private CA for the tests (a pytest plugin:
``pytest_plugins = ["forward_proxy"]``).

``tinyproxy`` (Debian's; .ci/deps installs it) runs on a free loopback port with a config the
test writes. Its outgoing connections leave from 127.0.0.2 (``Bind``), so a server on
127.0.0.1 tells a request that came through the proxy (peer 127.0.0.2) from one that came
directly (peer 127.0.0.1); its log names each request (``CONNECT host:port``, or the
absolute-form ``POST http://...`` of plain http).

The CA is made with the openssl CLI: a root, and a certificate for 127.0.0.1 that it signed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port

TINYPROXY = shutil.which("tinyproxy") or shutil.which("tinyproxy", path="/usr/sbin:/sbin")
PROXIED_FROM = "127.0.0.2"  # where the proxy's own connections come from


class Tinyproxy:
    """``tinyproxy -d`` with this config; ``url`` is the proxy URL for HTTP(S)_PROXY."""

    def __init__(self, folder: Path, connect_ports=(), basic_auth: tuple | None = None) -> None:
        assert TINYPROXY, "tinyproxy is not installed: run .ci/deps (as root it installs it)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"tinyproxy-{self.port}.log"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", f"Bind {PROXIED_FROM}", "Timeout 30",
                 f'LogFile "{self.log_path}"', "LogLevel Info", "MaxClients 100",
                 "Allow 127.0.0.1", *(f"ConnectPort {port}" for port in connect_ports)]
        if basic_auth:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        config = folder / f"tinyproxy-{self.port}.conf"
        config.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                assert time.monotonic() < deadline, "tinyproxy did not listen within 10 s"
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stderr.close()


@pytest.fixture
def tinyproxy(tmp_path):
    started: list[Tinyproxy] = []

    def start(**options) -> Tinyproxy:
        proxy = Tinyproxy(tmp_path, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def dead_port_url(user: str = "") -> str:
    """A proxy URL where nothing listens."""
    return f"http://{user}127.0.0.1:{free_port()}"


@dataclass
class PrivateCa:
    ca: str  # the root's certificate: the bundle a client needs
    cert: str  # 127.0.0.1's certificate, signed by the root
    key: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory) -> PrivateCa:
    folder = tmp_path_factory.mktemp("private-ca")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=mcp-proxy tests private CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "server.pem",
             cwd=folder)
    return PrivateCa(str(folder / "ca.pem"), str(folder / "server.pem"),
                     str(folder / "server.key"))
