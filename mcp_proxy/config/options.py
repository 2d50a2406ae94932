"""The command line: every flag with its default and help, and turning flags into settings.

Importing this module has no side effects (no monkey-patching), so the WSGI entry point
can parse ``MCP_PROXY_ARGS`` with the very parser the command uses.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex

from mcp_proxy import __version__
from mcp_proxy.config.config_file import load_named_servers
from mcp_proxy.config.settings import (
    ClientSettings,
    MiB,
    ServerSettings,
    ServerSpec,
    check_server_name,
)
from mcp_proxy.config.values import Parser, check_headers, check_url, port_number, positive, size
from mcp_proxy.errors import ConfigError, ConfigProblems

logger = logging.getLogger("mcp_proxy")

EXAMPLES = """\
examples:
  server mode (spawn a stdio server per client session, serve it over HTTP):
    mcp-proxy --port 8080 -- python3 my_server.py --flag
    mcp-proxy --port 8080 --host 0.0.0.0 uvx mcp-server-fetch
    mcp-proxy uvx mcp-server-fetch --port 8080 -e KEY VALUE -e OTHER VALUE
    mcp-proxy --named-server fetch 'uvx mcp-server-fetch' --port 8080
  client mode (be a stdio server for a desktop client, forward to a remote server):
    mcp-proxy http://localhost:8080/mcp      (Streamable HTTP, else SSE)
    mcp-proxy --transport sse http://localhost:8080/sse
    mcp-proxy --headers Authorization 'Bearer TOKEN' https://host/sse
"""

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mcp-proxy", allow_abbrev=False,
        description="Bridge MCP transports. Server mode spawns a stdio MCP server per client "
                    "session and serves it over HTTP+SSE (/sse) and Streamable HTTP (/mcp); "
                    "client mode (a URL as the first argument) is a stdio MCP server that "
                    "forwards everything to a remote SSE or Streamable HTTP server.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("command_or_url", nargs="?",
                        help="a URL (client mode) or the stdio server command (server mode)")
    parser.add_argument("args", nargs="*", help="arguments of the stdio server command "
                        "(put them after -- when they start with -)")

    client = parser.add_argument_group("client mode (remote SSE / Streamable HTTP server)")
    client.add_argument("-H", "--headers", nargs=2, action="append", default=[],
                        metavar=("KEY", "VALUE"), help="HTTP header for the remote; repeatable")
    client.add_argument("--transport", choices=["sse", "streamablehttp", "auto"], default="auto",
                        help="remote transport (default auto: Streamable HTTP, then SSE if the "
                             "remote refuses initialize with 400, 404 or 405; sse: only SSE, "
                             "the default of 0.13)")
    client.add_argument("--protocol-era", choices=["auto", "legacy", "modern"], default="auto",
                        help="the remote's protocol era, for a 2025-era client over Streamable "
                        "HTTP (default auto: initialize first, and bridge to a remote that "
                        "speaks only 2026-07-28; legacy: never probe; modern: bridge at once)")
    client.add_argument("--client-id", help="OAuth2 client id (client credentials grant)")
    client.add_argument("--client-secret", help="OAuth2 client secret")
    client.add_argument("--client-key", metavar="PEM_FILE",
                        help="private key for private_key_jwt, instead of --client-secret")
    client.add_argument("--client-key-alg", metavar="ALG",
                        help="JWS algorithm of --client-key (default from the key: RS256, "
                             "ES256, ...)")
    client.add_argument("--token-url", help="OAuth2 token endpoint (default: discovered "
                        "from the remote's metadata)")
    client.add_argument("--no-oauth", dest="oauth", action="store_false",
                        help="never sign in with the browser: a 401 is an error")
    client.add_argument("--oauth-client-id", metavar="ID",
                        help="sign in as this pre-registered OAuth client")
    client.add_argument("--oauth-client-secret", metavar="SECRET",
                        help="secret of --oauth-client-id, if it has one")
    client.add_argument("--oauth-client-metadata-url", metavar="URL",
                        help="sign in with this Client ID Metadata Document URL as client id "
                             "(when the server supports it)")
    client.add_argument("--oauth-callback-port", type=port_number, default=None, metavar="PORT",
                        help="port of the sign-in callback on 127.0.0.1 (default: a stable "
                             "port derived from the URL)")
    client.add_argument("--oauth-no-browser", action="store_true",
                        help="do not open a browser: only print the sign-in URL to stderr")
    client.add_argument("--oauth-timeout", type=positive, default=300.0, metavar="SECONDS",
                        help="how long to wait for the browser sign-in (default 300)")
    client.add_argument("--oauth-logout", action="store_true",
                        help="forget the cached sign-in (tokens, registration) for the URL "
                             "and exit")
    client.add_argument("--username", help="user for basic (or --digest) auth")
    client.add_argument("--password", help="password for basic (or --digest) auth")
    client.add_argument("--digest", action="store_true", help="use digest instead of basic auth")
    client.add_argument("--verify-ssl", nargs="?", const="true", default=None, metavar="VALUE",
                        help="verify TLS (default); 'false' disables; or a CA bundle path")
    client.add_argument("--no-verify-ssl", dest="verify_ssl", action="store_const",
                        const="false", help="do not verify TLS (same as --verify-ssl false)")
    client.add_argument("--connect-timeout", type=positive, default=10.0, metavar="SECONDS",
                        help="connect timeout to the remote (default 10)")
    client.add_argument("--read-timeout", type=positive, default=600.0, metavar="SECONDS",
                        help="longest silence tolerated on a remote stream or answer "
                             "(default 600)")
    client.add_argument("--start-timeout", type=positive, default=30.0, metavar="SECONDS",
                        help="keep retrying an unreachable remote at start this long "
                             "(default 30), then exit 1")
    client.add_argument("--recovery-timeout", type=positive, default=300.0, metavar="SECONDS",
                        help="keep reconnecting a lost remote this long (default 300)")

    stdio = parser.add_argument_group("stdio server (server mode)")
    stdio.add_argument("-e", "--env", nargs=2, action="append", default=[],
                       metavar=("KEY", "VALUE"), help="environment variable for the server; "
                       "repeatable")
    stdio.add_argument("--cwd", help="working directory of the server")
    stdio.add_argument("--pass-environment", action=argparse.BooleanOptionalAction,
                       default=False, help="pass our whole environment to the server "
                       "(default: only PATH, HOME, USER, LANG and a few more, the network "
                       "variables, and -e)")
    stdio.add_argument("--no-pass-network", dest="pass_network", action="store_false",
                       help="do not pass the network variables (HTTP_PROXY, HTTPS_PROXY, "
                       "NO_PROXY, SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, PIP_INDEX_URL, "
                       "npm_config_registry, ...) that are passed by default")
    stdio.add_argument("--named-server", nargs=2, action="append", default=[],
                       metavar=("NAME", "COMMAND_STRING"),
                       help="also serve COMMAND_STRING under /servers/NAME/; repeatable")
    stdio.add_argument("--named-server-config", metavar="FILE",
                       help='JSON file {"mcpServers": {NAME: {"command", "args", "env", '
                            '"cwd", "enabled", "shared", "maxSessions"}}} (Claude Desktop\'s '
                            'shape; only "command" is required; strings may hold ${VAR} and '
                            '${VAR:-default}); replaces --named-server')
    checks = stdio.add_mutually_exclusive_group()
    checks.add_argument("--check-config", action="store_true",
                        help="check the servers (the config file, the commands on PATH) or "
                             "the remote URL, print OK or each problem, and exit 0 or 1")
    checks.add_argument("--print-config", action="store_true",
                        help="print the --named-server-config file resolved (variables "
                             "expanded, secrets masked) and exit")

    server = parser.add_argument_group("HTTP server (server mode)")
    server.add_argument("--port", type=port_number, default=None, metavar="PORT",
                        help="port to listen on (default 0: a free one, logged at start)")
    server.add_argument("--host", default=None, metavar="HOST",
                        help="address to bind (default 127.0.0.1)")
    server.add_argument("--sse-port", type=port_number, default=None, metavar="PORT",
                        help="deprecated: use --port")
    server.add_argument("--sse-host", default=None, metavar="HOST",
                        help="deprecated: use --host")
    server.add_argument("--stateless", action=argparse.BooleanOptionalAction, default=False,
                        help="stateless Streamable HTTP: /mcp without sessions, every POST "
                             "served by one shared server process (implies --shared-child)")
    server.add_argument("--shared-child", action=argparse.BooleanOptionalAction, default=False,
                        help="one server process per configured server, shared by all its "
                             "sessions (default: one per session)")
    server.add_argument("--max-sessions", type=int, default=None, metavar="N",
                        help="most sessions at once, then 503 (default 100, or 1000 when "
                             "every server is shared)")
    server.add_argument("--redis-url", default=os.environ.get("MCP_PROXY_REDIS_URL") or None,
                        metavar="URL",
                        help="redis://, rediss:// (TLS) or unix:// (socket path) URL of a "
                             "private Redis through which several workers or hosts serve "
                             "every session; user and password go in the URL (default: "
                             "$MCP_PROXY_REDIS_URL; none: sessions live in one process)")
    server.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="browser origin allowed to call us, '*' for any; repeatable")
    server.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                        help="extra Host header value to accept (e.g. behind a reverse "
                             "proxy), '*' for any; repeatable")
    server.add_argument("--expose-header", action="append", default=None, metavar="HEADER",
                        help="header exposed to browsers via CORS (default Mcp-Session-Id)")
    server.add_argument("--auth-token", default=os.environ.get("MCP_PROXY_AUTH_TOKEN"),
                        metavar="TOKEN", help="require 'Authorization: Bearer TOKEN' "
                        "(default from MCP_PROXY_AUTH_TOKEN; none if unset)")
    server.add_argument("--keepalive", type=positive, default=15.0, metavar="SECONDS",
                        help="ping comment interval on open event streams (default 15)")
    server.add_argument("--max-body-size", type=size, default=4 * MiB, metavar="BYTES",
                        help="largest POST body accepted, else 413 (default 4MiB)")
    server.add_argument("--max-message-size", type=size, default=64 * MiB, metavar="BYTES",
                        help="largest message accepted from a server's stdout (default 64MiB)")
    server.add_argument("--max-queued-size", type=size, default=64 * MiB, metavar="BYTES",
                        help="bytes kept for a session's client while it has no stream open "
                             "to take them, before the session is closed (default 64MiB)")
    server.add_argument("--stall-timeout", type=positive, default=60.0, metavar="SECONDS",
                        help="end a session whose client takes nothing of what is sent to it "
                             "this long (default 60)")
    server.add_argument("--write-timeout", type=positive, default=10.0, metavar="SECONDS",
                        help="how long a POST waits for a server that reads none of its "
                             "input, then 503 (default 10)")
    server.add_argument("--session-timeout", type=positive, default=600.0, metavar="SECONDS",
                        help="end a Streamable HTTP session idle this long with no stream "
                             "open (default 600)")
    server.add_argument("--stop-timeout", type=positive, default=5.0, metavar="SECONDS",
                        help="grace for streams and servers on shutdown (default 5)")

    logs = parser.add_argument_group("logging")
    logs.add_argument("--log-level", default="INFO", metavar="LEVEL",
                      type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                      help="DEBUG, INFO (default), WARNING, ERROR or CRITICAL")
    logs.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False,
                      help="same as --log-level DEBUG, and wins over it")
    return parser


def is_url(text: str | None) -> bool:
    return bool(text) and text.lower().startswith(("http://", "https://"))


def server_settings(ns: argparse.Namespace) -> ServerSettings:
    """Turn parsed arguments into ServerSettings; raise ConfigError for impossible asks."""
    servers: dict[str, ServerSpec] = {}
    if ns.command_or_url:
        servers[""] = ServerSpec(ns.command_or_url, list(ns.args), dict(ns.env), ns.cwd,
                                 ns.pass_environment)
    if ns.named_server_config:
        if ns.named_server:
            logger.warning("--named-server-config given: ignoring --named-server")
        servers.update(load_named_servers(ns.named_server_config, ns.pass_environment))
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
    shared, problems = ns.stateless or ns.shared_child, []
    for name, spec in servers.items():
        spec.shared = spec.shared or shared
        spec.pass_network = ns.pass_network
        try:
            spec.check()
        except ConfigError as exc:
            problems.append(f"server {name!r}: {exc}" if name else str(exc))
    if problems:
        raise ConfigProblems(problems)
    max_sessions = ns.max_sessions
    if max_sessions is None:
        max_sessions = 1000 if all(spec.shared for spec in servers.values()) else 100
    elif max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")
    return ServerSettings(
        servers=servers,
        host=ns.host if ns.host is not None else (ns.sse_host or "127.0.0.1"),
        port=ns.port if ns.port is not None else (ns.sse_port or 0),
        allow_origins=ns.allow_origin, allow_hosts=ns.allow_host,
        expose_headers=ns.expose_header or ["Mcp-Session-Id"],
        auth_token=ns.auth_token or None, keepalive=ns.keepalive,
        max_body=ns.max_body_size, max_frame=ns.max_message_size,
        max_queued=ns.max_queued_size, session_idle_timeout=ns.session_timeout,
        stall_timeout=ns.stall_timeout, write_timeout=ns.write_timeout,
        stop_timeout=ns.stop_timeout, stateless=ns.stateless, max_sessions=max_sessions,
        redis_url=_redis_url(ns.redis_url))


def _redis_url(url: str | None) -> str | None:
    if url and not url.lower().startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"--redis-url {url!r}: expected a redis://, rediss:// or unix:// URL")
    return url or None


def client_settings(ns: argparse.Namespace) -> ClientSettings:
    verify: bool | str = True
    if ns.verify_ssl is not None:
        lowered = ns.verify_ssl.lower()
        if lowered in ("false", "0", "no", "off"):
            verify = False
        elif lowered not in ("true", "1", "yes", "on"):
            if not os.path.exists(ns.verify_ssl):
                raise ConfigError(f"--verify-ssl: no CA bundle at {ns.verify_ssl!r}")
            verify = ns.verify_ssl
    if ns.args:
        raise ConfigError(f"client mode takes one URL; unexpected: {' '.join(ns.args)}")
    check_url(ns.command_or_url)
    check_headers(ns.headers)
    if ns.oauth_callback_port == 0:
        raise ConfigError("--oauth-callback-port 0: the sign-in callback needs a fixed port "
                          "(1 to 65535); leave the flag out for a stable one")
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
        oauth_timeout=ns.oauth_timeout,
        verify=verify, connect_timeout=ns.connect_timeout, read_timeout=ns.read_timeout,
        start_timeout=ns.start_timeout, recovery_timeout=ns.recovery_timeout)
