"""Every option of the proxy as a dataclass (config_file.py reads the named-server file).

Settings are plain data: building them never starts a process or opens a socket.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # the spec's advice for tool names


@dataclass(frozen=True)
class ToolRules:
    """A server's tool filter as configured (``"tools"`` in the config file, or the flags)."""

    allow: tuple[str, ...] = ()  # globs; when any, only the tools they match are shown
    deny: tuple[str, ...] = ()  # globs; the tools they match are hidden
    rename: Mapping[str, str] = field(default_factory=dict)  # the server's name -> ours
    describe: Mapping[str, str] = field(default_factory=dict)  # the server's name -> text
    flag_allow: tuple[str, ...] = ()  # --allow-tool globs: a shown tool matches these too

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny or self.rename or self.describe or self.flag_allow)

    def with_flags(self, allow: Iterable[str], deny: Iterable[str]) -> ToolRules:
        """These rules narrowed by ``--allow-tool`` and ``--deny-tool``: a tool is shown only
        if both the file's and the flags' allow globs match it, and no deny glob does."""
        return replace(self, deny=(*self.deny, *deny), flag_allow=(*self.flag_allow, *allow))

    @classmethod
    def of(cls, allow: Iterable[str] = (), deny: Iterable[str] = (),
           rename: Mapping[str, str] | None = None,
           describe: Mapping[str, str] | None = None) -> ToolRules:
        """Checked rules; raise :class:`ConfigError` naming what is wrong."""
        rename = dict(rename or {})
        for old, new in rename.items():
            if not TOOL_NAME.fullmatch(new):
                raise ConfigError(f"rename: {new!r} (for {old!r}) is not a tool name "
                                  "a client accepts (letters, digits, _ . -, at most 128)")
        targets: dict[str, str] = {}
        for old, new in rename.items():
            if new in targets:
                raise ConfigError(f"rename: {targets[new]!r} and {old!r} are both "
                                  f"renamed to {new!r}")
            if new in rename and new != old:
                raise ConfigError(f"rename: {new!r} is both a new name and a renamed "
                                  "tool; rename in one step")
            targets[new] = old
        return cls(tuple(allow), tuple(deny), rename, dict(describe or {}))

    def shown(self, name: str) -> bool:
        """Whether the server's tool ``name`` passes the allow and deny globs."""
        for allow in (self.allow, self.flag_allow):
            if allow and not any(fnmatchcase(name, glob) for glob in allow):
                return False
        return not any(fnmatchcase(name, glob) for glob in self.deny)


def rules_of(entry: Any) -> ToolRules:
    """A config file's ``"tools"`` object (already checked against the schema) as rules."""
    if entry is None:
        return ToolRules()
    return ToolRules.of(entry.get("allow", ()), entry.get("deny", ()), entry.get("rename"),
                        entry.get("describe"))


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
    tools: ToolRules = field(default_factory=ToolRules)  # "tools" in the file, --allow-tool
    scopes: list[str] = field(default_factory=list)  # OAuth scopes needed to use it at all
    remote: ClientSettings | None = None  # "url" in the file: a remote server, no command
    # tool name glob (the name clients see) -> the OAuth scope needed to see and call it
    tool_scopes: dict[str, str] = field(default_factory=dict)
    # a combined server ("servers" in the file): its members in order, and their prefixes
    members: tuple[str, ...] = ()
    prefixes: dict[str, str] = field(default_factory=dict)

    def prefix(self, member: str) -> str:
        """What a combined server puts before a member's tool and prompt names."""
        return self.prefixes.get(member, f"{member}__")

    def argv(self) -> list[str]:
        return [self.command, *self.args]

    def display(self) -> str:
        if self.remote is not None:
            return self.remote.url
        if self.members:
            return f"combined: {', '.join(self.members)}"
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
        """Fail now, with a clear message, if the command cannot be started later (or the
        remote server cannot be reached as configured)."""
        if self.members:
            return  # a combined server starts nothing of its own
        if self.remote is not None:
            check_remote(self.remote)
            return
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


@dataclass(frozen=True)
class ApiKey:
    """One API key of server mode: the secret, the caller it names, and what it opens."""

    key: str = field(repr=False)
    id: str  # the principal is "key:" + this (never the key itself)
    servers: frozenset[str] | None = None  # the named servers it opens; None: every one
    admin: bool = False  # opens /status when any key is an admin key


@dataclass
class ResourceSettings:
    """Server mode as an OAuth 2.1 resource server: whose tokens it takes, for what."""

    issuer: str  # the authorization server (its metadata: RFC 8414, then OpenID discovery)
    audience: str | None = None  # None: the canonical URL of each endpoint (RFC 8707)
    scopes: list[str] = field(default_factory=list)  # every one required
    introspection_url: str | None = None  # RFC 7662, for tokens that are not JWTs
    client_id: str | None = None  # our credentials at the introspection endpoint
    client_secret: str | None = None
    leeway: float = 30.0  # seconds of clock skew tolerated on exp and nbf
    admin_scope: str | None = None  # what a token needs for /status (None: any good token)


@dataclass
class ServerSettings:
    """Server mode: what to spawn, where to listen, and the limits that protect us."""

    servers: dict[str, ServerSpec]  # "" is the default server at the root of the URL space
    host: str = "127.0.0.1"
    port: int = 0
    allow_origins: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    expose_headers: list[str] = field(default_factory=lambda: ["Mcp-Session-Id"])
    api_keys: list[ApiKey] = field(default_factory=list)  # --auth-token, "auth" in the file
    auth_token_file: str | None = None  # more keys, one a line, re-read when it changes
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
    oauth: ResourceSettings | None = None  # callers sign in with OAuth tokens (--oauth-issuer)
    reread: Callable[[], Any] | None = field(default=None, repr=False, compare=False)  # SIGHUP

    @property
    def auth_required(self) -> bool:
        """Whether a request needs credentials (then the guard names its caller)."""
        return bool(self.api_keys or self.auth_token_file or self.oauth)


def check_server_name(name: str) -> None:
    """The rule of the config file's schema (schema.json), for --named-server too."""
    if not _SERVER_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"server name {name!r} must be ASCII letters, digits, '-', '_' or "
                          f"'.' (and not '.' or '..')")


def check_remote(remote: ClientSettings) -> None:
    """What a remote server entry (``"url"``) needs before a session can reach it."""
    try:
        parts = urlsplit(remote.url)
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError as exc:
        raise ConfigError(f"url is not a URL: {exc} (a bad port, or a bad [IPv6] host)") \
            from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"url {scrub_url(remote.url)!r} is not an http:// or https:// URL "
                          f"with a host")
    if isinstance(remote.verify, str) and not os.path.isfile(remote.verify):
        raise ConfigError(f"verifySsl: no CA bundle file at {remote.verify!r}")
    if remote.client_key is not None and not os.path.isfile(remote.client_key):
        raise ConfigError(f"clientKey: no PEM file at {remote.client_key!r}")
    if (remote.client_secret or remote.client_key or remote.token_url) \
            and not remote.client_id:
        raise ConfigError("the client credentials grant (clientSecret, clientKey, tokenUrl) "
                          "needs clientId")
    if remote.client_secret and remote.client_key:
        raise ConfigError("give clientSecret or clientKey, not both")


def scrub_url(url: str) -> str:
    """``url`` without its password and query, for an error message."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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
    idp_token_url: str | None = None  # enterprise sign-in (ID-JAG): the IdP's token endpoint
    id_token_file: str | None = None
    id_token_command: list[str] | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = None
    verify: bool | str = True  # or a CA bundle: --verify-ssl PATH, else the CA variables
    # {scheme: (proxy URL, its variable)} from HTTPS_PROXY, ...; none with --no-proxy-env
    proxies: dict[str, tuple[str, str]] = field(default_factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    start_timeout: float = 30.0  # keep retrying an unreachable remote this long at start
    recovery_timeout: float = 300.0  # keep reconnecting a lost remote this long
    max_frame: int = 64 * MiB
    tools: ToolRules = field(default_factory=ToolRules)  # --allow-tool, --deny-tool
