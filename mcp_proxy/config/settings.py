"""Every option of the proxy as a dataclass, and the named-server config file loader.

Settings are plain data: building them never starts a process or opens a socket.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from dataclasses import dataclass, field

from mcp_proxy.errors import ConfigError

logger = logging.getLogger("mcp_proxy")

MiB = 1 << 20

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


# The fields of a server in the config file (Claude Desktop's, plus cwd, shared, maxSessions
# and audit).
FIELDS = {"command", "args", "env", "enabled", "cwd", "shared", "maxSessions", "audit"}


def load_named_servers(path: str, pass_environment: bool) -> dict[str, ServerSpec]:
    """Read ``{"mcpServers": {name: {command, args, env, enabled}}}`` (Claude Desktop's shape,
    plus our ``cwd``, ``shared``, ``maxSessions`` and ``audit``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    entries = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f'{path}: expected an object with an "mcpServers" object')
    specs = {}
    for name, entry in entries.items():
        where = f"{path}: server {name!r}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object")
        unknown = sorted(set(entry) - FIELDS)
        if unknown:  # a typo would otherwise pass unseen; other clients' fields are harmless
            logger.warning('%s: ignoring %s (known: %s)', where, ", ".join(map(repr, unknown)),
                           ", ".join(sorted(FIELDS)))
        if not isinstance(entry.get("enabled", True), bool):
            raise ConfigError(f'{where}: "enabled" must be true or false')
        if not isinstance(entry.get("cwd", ""), str):
            raise ConfigError(f'{where}: "cwd" must be a directory name (a string)')
        if not entry.get("enabled", True):
            continue
        check_server_name(name)
        command, args, env = entry.get("command"), entry.get("args", []), entry.get("env", {})
        shared, limit = entry.get("shared", False), entry.get("maxSessions")
        if not isinstance(command, str) or not command:
            raise ConfigError(f'{where} needs a "command" string')
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f'{where}: "args" must be a list of strings')
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f'{where}: "env" must map names to strings')
        if not isinstance(shared, bool):
            raise ConfigError(f'{where}: "shared" must be true or false')
        if not isinstance(entry.get("audit", False), bool):
            raise ConfigError(f'{where}: "audit" must be true or false')
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 1):
            raise ConfigError(f'{where}: "maxSessions" must be a whole number of at least 1')
        specs[name] = ServerSpec(command, args, env, entry.get("cwd"), pass_environment,
                                 shared, limit, audit=entry.get("audit", False))
    return specs


def check_server_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"server name {name!r} must be letters, digits, '-', '_' or '.'")


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
    oauth_timeout: float = 300.0
    verify: bool | str = True
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    start_timeout: float = 30.0  # keep retrying an unreachable remote this long at start
    recovery_timeout: float = 300.0  # keep reconnecting a lost remote this long
    max_frame: int = 64 * MiB
