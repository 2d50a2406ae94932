"""Every option of the proxy as a dataclass (config_file.py reads the named-server file).

Settings are plain data: building them never starts a process or opens a socket.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field

from mcp_proxy.errors import ConfigError

MiB = 1 << 20
_SERVER_NAME = re.compile(r"[A-Za-z0-9._-]+")

# What a child sees of our environment without --pass-environment (as the official SDK does).
SAFE_ENV_KEYS = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL",
                 "TMPDIR", "SYSTEMROOT")
# ... plus, unless --no-pass-network, what a uvx or npx server needs to reach its package
# registry behind a corporate proxy or TLS inspection: without them it fails on an unknown
# certificate issuer or retries forever before it answers initialize.
NETWORK_ENV_KEYS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY",
                    "no_proxy", "ALL_PROXY", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR",
                    "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_INDEX_URL",
                    "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
                    "UV_EXTRA_INDEX_URL", "UV_NATIVE_TLS", "npm_config_registry",
                    "NPM_CONFIG_REGISTRY")


@dataclass
class ServerSpec:
    """How to start one stdio MCP server."""

    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    pass_environment: bool = False
    shared: bool = False  # one process shared by every session, not one per session
    max_sessions: int | None = None  # this server's own cap ("maxSessions" in the config file)
    pass_network: bool = True  # the NETWORK_ENV_KEYS too, when not the whole environment
    audit: bool = False  # an audit line per call (--log-calls, "audit" in the config file)

    def argv(self) -> list[str]:
        return [self.command, *self.args]

    def display(self) -> str:
        return shlex.join(self.argv())

    def child_env(self) -> dict[str, str]:
        if self.pass_environment:
            env = dict(os.environ)
        else:
            keys = SAFE_ENV_KEYS + NETWORK_ENV_KEYS if self.pass_network else SAFE_ENV_KEYS
            env = {key: os.environ[key] for key in keys if key in os.environ}
        env.update(self.env)
        return env

    def check(self) -> None:
        """Fail now, with a clear message, if the command cannot be started later."""
        for name, value in self.env.items():  # else the spawn fails, for each session
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise ConfigError(f"environment variable {name!r}: a name is not empty and "
                                  f"has no '=' or NUL, a value has no NUL")
        if any("\0" in arg for arg in self.argv()):
            raise ConfigError("the command or an argument holds a NUL character")
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise ConfigError(f"working directory (--cwd) {self.cwd!r} is not a directory")
        path = self.child_env().get("PATH", os.defpath)
        if os.sep in self.command:
            target = os.path.join(self.cwd or "", self.command)
            if not (os.path.isfile(target) and os.access(target, os.X_OK)):
                raise ConfigError(f"command {self.command!r} is not an executable file")
        elif shutil.which(self.command, path=path) is None:
            raise ConfigError(f"command {self.command!r} not found on PATH")


@dataclass
class ServerSettings:
    """Server mode: what to spawn, where to listen, and the limits that protect us."""

    servers: dict[str, ServerSpec]  # "" is the default server at the root of the URL space
    host: str = "127.0.0.1"
    port: int = 0
    allow_origins: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    expose_headers: list[str] = field(default_factory=lambda: ["Mcp-Session-Id"])
    auth_token: str | None = None
    keepalive: float = 15.0
    max_body: int = 4 * MiB
    max_frame: int = 64 * MiB
    max_queued: int = 64 * MiB
    session_idle_timeout: float = 600.0
    stall_timeout: float = 60.0  # a client that takes nothing this long loses its session
    write_timeout: float = 10.0  # a POST waits this long for a server that reads nothing
    stop_timeout: float = 5.0
    stateless: bool = False  # /mcp without sessions: each POST stands alone (shared child)
    max_sessions: int = 100
    redis_url: str | None = None  # the bus between workers and hosts (server/bus.py)
    log_call_arguments: bool = False  # audit lines hold each call's arguments


def check_server_name(name: str) -> None:
    """The rule of the config file's schema (schema.json), for --named-server too."""
    if not _SERVER_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"server name {name!r} must be ASCII letters, digits, '-', '_' or "
                          f"'.' (and not '.' or '..')")


@dataclass
class ClientSettings:
    """Client mode: the remote server and how to reach it."""

    url: str
    transport: str = "auto"  # auto (Streamable HTTP, else SSE) | sse | streamablehttp
    protocol_era: str = "auto"  # auto | legacy | modern (Streamable HTTP only)
    headers: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    digest: bool = False
    client_id: str | None = None
    client_secret: str | None = None
    token_url: str | None = None
    client_key: str | None = None  # PEM private key: private_key_jwt instead of a secret
    client_key_alg: str | None = None
    oauth: bool = True  # sign in with the browser when the remote answers 401
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_client_metadata_url: str | None = None
    oauth_callback_port: int | None = None
    oauth_no_browser: bool = False
    oauth_device: bool | None = None  # sign in with a code (RFC 8628); None: when no browser
    oauth_timeout: float = 300.0
    verify: bool | str = True  # or a CA bundle: --verify-ssl PATH, else the CA variables
    # {scheme: (proxy URL, its variable)} from HTTPS_PROXY, ...; none with --no-proxy-env
    proxies: dict[str, tuple[str, str]] = field(default_factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    start_timeout: float = 30.0  # keep retrying an unreachable remote this long at start
    recovery_timeout: float = 300.0  # keep reconnecting a lost remote this long
    max_frame: int = 64 * MiB
