"""Parsed flags (options.py's parser) turned into settings, refusing impossible asks.

Importing this module has no side effects, like options.py: the WSGI entry point uses it too.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections.abc import Callable
from functools import partial
from urllib.parse import urlsplit

from mcp_proxy.config.config_file import ConfigFile, load_named_servers
from mcp_proxy.config.key_file import flag_keys, read_key_file
from mcp_proxy.config.network import env_proxies, tls_verify
from mcp_proxy.config.resource_flags import (
    check_audience,
    check_server_scopes,
    resource_settings,
)
from mcp_proxy.config.schema import json_path
from mcp_proxy.config.settings import (
    ClientSettings,
    ServerSettings,
    ServerSpec,
    ToolRules,
    check_server_name,
)
from mcp_proxy.config.values import check_headers, check_latin1, check_url
from mcp_proxy.errors import ConfigError, ConfigProblems

logger = logging.getLogger("mcp_proxy")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_url(text: str | None) -> bool:
    return bool(text) and text.lower().startswith(("http://", "https://"))


def server_settings(ns: argparse.Namespace) -> ServerSettings:
    """Turn parsed arguments into ServerSettings; raise ConfigError for impossible asks."""
    servers: dict[str, ServerSpec] = {}
    tokens = ns.auth_token or [t for t in [os.environ.get("MCP_PROXY_AUTH_TOKEN")] if t]
    keys = flag_keys(tokens)
    if ns.command_or_url:
        servers[""] = ServerSpec(ns.command_or_url, list(ns.args), dict(ns.env), ns.cwd,
                                 ns.pass_environment)
    if ns.named_server_config:
        if ns.named_server:
            logger.warning("--named-server-config given: ignoring --named-server")
        loaded = load_named_servers(ns.named_server_config, ns.pass_environment)
        servers.update(loaded.specs)
        keys += loaded.keys
    else:
        for name, command in ns.named_server:
            check_server_name(name)
            argv = shlex.split(command)
            if not argv:
                raise ConfigError(f"--named-server {name}: empty command")
            servers[name] = ServerSpec(argv[0], argv[1:], {}, None, ns.pass_environment)
    for old, new in (("--sse-port", "--port"), ("--sse-host", "--host")):
        if getattr(ns, old[2:].replace("-", "_")) is not None:
            logger.warning("%s is deprecated and will go: use %s", old, new)
    _fit(servers, ns)
    if ns.log_call_arguments and not any(spec.audit for spec in servers.values()):
        logger.warning('--log-call-arguments does nothing without --log-calls or "audit": true')
    oauth = resource_settings(ns)
    check_server_scopes(servers, oauth)
    max_sessions = ns.max_sessions
    if max_sessions is None:
        max_sessions = 1000 if all(spec.shared for spec in servers.values()) else 100
    elif max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")
    host = ns.host if ns.host is not None else (ns.sse_host or "127.0.0.1")
    check_audience(oauth, host, ns.allow_host)
    return ServerSettings(
        servers=servers, host=host,
        port=ns.port if ns.port is not None else (ns.sse_port or 0),
        allow_origins=ns.allow_origin, allow_hosts=ns.allow_host,
        # a browser client reads the OAuth challenge (resource_metadata, scope) from it
        expose_headers=ns.expose_header or ["Mcp-Session-Id", *(
            ["WWW-Authenticate"] if oauth else [])],
        api_keys=_distinct(keys), auth_token_file=_key_file(ns.auth_token_file),
        keepalive=ns.keepalive,
        max_body=ns.max_body_size, max_frame=ns.max_message_size,
        max_queued=ns.max_queued_size, session_idle_timeout=ns.session_timeout,
        stall_timeout=ns.stall_timeout, write_timeout=ns.write_timeout,
        stop_timeout=ns.stop_timeout, stateless=ns.stateless, max_sessions=max_sessions,
        redis_url=_redis_url(ns.redis_url), log_call_arguments=ns.log_call_arguments,
        oauth=oauth, reread=partial(reread, ns) if ns.named_server_config else None)


def _fit(servers: dict[str, ServerSpec], ns: argparse.Namespace,
         where: Callable[[str], str] = lambda name: f"server {name!r}: ") -> None:
    """What the flags add to each server (shared, audit, tool filters); each one checked,
    a problem named by ``where(name)``."""
    shared, problems = ns.stateless or ns.shared_child, []
    for name, spec in servers.items():
        spec.shared, spec.audit = spec.shared or shared, spec.audit or ns.log_calls
        spec.pass_network = ns.pass_network
        if not spec.members:  # a combined server's members are filtered already
            spec.tools = spec.tools.with_flags(ns.allow_tool, ns.deny_tool)
        try:
            spec.check()
        except ConfigError as exc:
            problems.append(f"{where(name)}{exc}" if name else str(exc))
    if problems:
        raise ConfigProblems(problems)


def reread(ns: argparse.Namespace) -> ConfigFile:
    """``--named-server-config`` read again (SIGHUP, server/reload.py): expanded, validated and
    fitted to the flags as at start; raises ConfigError naming each problem."""
    path = ns.named_server_config
    loaded = load_named_servers(path, ns.pass_environment)
    _fit(loaded.specs, ns, lambda name: f"{path}: {json_path(('mcpServers', name))}: ")
    return loaded


def _distinct(keys: list) -> list:
    """Each key once: the same key from two places must not name two callers."""
    seen: dict[str, object] = {}
    for key in keys:
        first = seen.setdefault(key.key, key)
        if first != key:
            raise ConfigError(f"the same API key is given twice (ids {first.id!r} and "
                              f"{key.id!r}): give it once")
    return list(seen.values())


def _key_file(path: str | None) -> str | None:
    if path is not None:
        read_key_file(path)  # unreadable, or no key: refused now, not at the first request
    return path


def _redis_url(url: str | None) -> str | None:
    if url and not url.lower().startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"--redis-url {url!r}: expected a redis://, rediss:// or unix:// URL")
    return url or None


def client_settings(ns: argparse.Namespace) -> ClientSettings:
    verify = tls_verify(ns.verify_ssl)
    if ns.args:
        raise ConfigError(f"client mode takes one URL; unexpected: {' '.join(ns.args)}")
    check_url(ns.command_or_url)
    check_headers(ns.headers)
    check_latin1("API_ACCESS_TOKEN", os.environ.get("API_ACCESS_TOKEN"))
    check_latin1("--username", ns.username)
    check_latin1("--password", ns.password)
    if ns.oauth_callback_port == 0:
        raise ConfigError("--oauth-callback-port 0: the sign-in callback needs a fixed port "
                          "(1 to 65535); leave the flag out for a stable one")
    if ns.oauth_device and not ns.oauth:
        raise ConfigError("--oauth-device is a way to sign in, and --no-oauth turns sign-in "
                          "off: give one of them")
    if ns.protocol_era == "modern" and ns.transport == "sse":
        raise ConfigError("--protocol-era modern needs Streamable HTTP: leave out --transport "
                          "sse (the SSE transport is of the 2025 era)")
    # a 2026-07-28 remote speaks Streamable HTTP only: nothing to fall back to
    transport = "streamablehttp" if ns.protocol_era == "modern" else ns.transport
    return ClientSettings(
        url=ns.command_or_url, transport=transport, protocol_era=ns.protocol_era,
        headers=dict(ns.headers),
        username=ns.username, password=ns.password, digest=ns.digest,
        client_id=ns.client_id, client_secret=ns.client_secret, token_url=ns.token_url,
        client_key=ns.client_key, client_key_alg=ns.client_key_alg, oauth=ns.oauth,
        oauth_client_id=ns.oauth_client_id, oauth_client_secret=ns.oauth_client_secret,
        oauth_client_metadata_url=ns.oauth_client_metadata_url,
        oauth_callback_port=ns.oauth_callback_port, oauth_no_browser=ns.oauth_no_browser,
        oauth_timeout=ns.oauth_timeout, oauth_device=ns.oauth_device, **_enterprise(ns),
        verify=verify, proxies=env_proxies() if ns.proxy_env else {},
        connect_timeout=ns.connect_timeout, read_timeout=ns.read_timeout,
        start_timeout=ns.start_timeout, recovery_timeout=ns.recovery_timeout,
        tools=ToolRules().with_flags(ns.allow_tool, ns.deny_tool))


def _enterprise(ns: argparse.Namespace) -> dict:
    """The enterprise sign-in flags (SEP-990), checked together."""
    url = ns.idp_token_url
    if not url:
        given = [flag for flag, value in (("--id-token", ns.id_token), ("--id-token-command",
                 ns.id_token_command), ("--idp-client-id", ns.idp_client_id)) if value]
        if given:
            raise ConfigError(f"{given[0]} is for enterprise sign-in: give --idp-token-url too")
        return {}
    check_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" and parts.hostname not in LOOPBACK:
        raise ConfigError("--idp-token-url must be https (http only on this machine): the "
                          "ID token travels to it")
    if bool(ns.id_token) == bool(ns.id_token_command):
        raise ConfigError("--idp-token-url needs the ID token: give --id-token FILE or "
                          "--id-token-command CMD (one of them)")
    if not ns.idp_client_id:
        raise ConfigError("--idp-token-url needs --idp-client-id (and --idp-client-secret, "
                          "if it has one): mcp-proxy's client at the identity provider")
    if not ns.client_id:
        raise ConfigError("--idp-token-url needs --client-id with --client-secret or "
                          "--client-key: mcp-proxy's client at the MCP server's "
                          "authorization server")
    if ns.token_url:
        raise ConfigError("--token-url does not go with --idp-token-url: the authorization "
                          "server is discovered (its issuer is the ID-JAG's audience)")
    command = None
    if ns.id_token_command:
        try:
            command = shlex.split(ns.id_token_command)
        except ValueError as exc:
            raise ConfigError(f"--id-token-command: {exc}") from None
        if not command:
            raise ConfigError("--id-token-command is empty")
    elif not os.path.isfile(ns.id_token):
        raise ConfigError(f"--id-token: no file at {ns.id_token!r}")
    check_latin1("--idp-client-secret", ns.idp_client_secret)
    return {"idp_token_url": url, "id_token_file": ns.id_token, "id_token_command": command,
            "idp_client_id": ns.idp_client_id, "idp_client_secret": ns.idp_client_secret}
