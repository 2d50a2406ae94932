"""The command line: every flag with its default and help (flag_settings.py turns the parsed
flags into settings).

Importing this module has no side effects (no monkey-patching), so the WSGI entry point
can parse ``MCP_PROXY_ARGS`` with the very parser the command uses.
"""

from __future__ import annotations

import argparse
import os

from mcp_proxy import __version__
from mcp_proxy.config.settings import MiB
from mcp_proxy.config.values import Parser, host_address, port_number, positive, size

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
                        help="the remote's protocol era (default auto: found out, and the "
                        "client bridged when the eras differ; legacy: never probe, never "
                        "bridge; modern: a 2026-07-28 remote, a 2025-era client bridged at once)")
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
                        help="do not open a browser: print the sign-in URL to stderr (or sign in "
                             "with a code, if the server offers it)")
    client.add_argument("--oauth-device", action=argparse.BooleanOptionalAction, default=None,
                        help="sign in with a code entered on another device (RFC 8628 device "
                             "authorization; default: when no browser can open and the "
                             "server offers it)")
    client.add_argument("--oauth-timeout", type=positive, default=300.0, metavar="SECONDS",
                        help="how long to wait for the sign-in (default 300)")
    client.add_argument("--oauth-logout", action="store_true",
                        help="forget the cached sign-in (tokens, registration) for the URL "
                             "and exit")
    client.add_argument("--idp-token-url", metavar="URL",
                        help="enterprise sign-in: the company identity provider's token "
                             "endpoint, where the ID token is exchanged for an ID-JAG "
                             "(SEP-990); needs --client-id for the server's side")
    client.add_argument("--id-token", metavar="FILE",
                        help="file holding the user's ID token from the identity provider "
                             "(read again whenever a fresh one is needed)")
    client.add_argument("--id-token-command", metavar="CMD",
                        help="command whose stdout is the ID token, run whenever a fresh one "
                             "is needed (within --oauth-timeout)")
    client.add_argument("--idp-client-id", metavar="ID",
                        help="mcp-proxy's client id at the identity provider")
    client.add_argument("--idp-client-secret", metavar="SECRET",
                        default=os.environ.get("MCP_PROXY_IDP_CLIENT_SECRET") or None,
                        help="its secret (default from MCP_PROXY_IDP_CLIENT_SECRET)")
    client.add_argument("--username", help="user for basic (or --digest) auth")
    client.add_argument("--password", help="password for basic (or --digest) auth")
    client.add_argument("--digest", action="store_true", help="use digest instead of basic auth")
    client.add_argument("--verify-ssl", nargs="?", const="true", default=None, metavar="VALUE",
                        help="verify TLS (default); 'false' disables; or a CA bundle path "
                             "(default: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or SSL_CERT_FILE if "
                             "set)")
    client.add_argument("--no-verify-ssl", dest="verify_ssl", action="store_const",
                        const="false", help="do not verify TLS (same as --verify-ssl false)")
    client.add_argument("--no-proxy-env", dest="proxy_env", action="store_false",
                        help="ignore HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY: connect "
                             "directly (they are honoured by default, as requests does)")
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
                            '"cwd", "enabled", "shared", "maxSessions", "audit", "tools"}}} '
                            '(Claude Desktop\'s shape; only "command" is required; strings '
                            'may hold ${VAR} and ${VAR:-default}); replaces --named-server')
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
    server.add_argument("--host", type=host_address, default=None, metavar="HOST",
                        help="address to bind (default 127.0.0.1)")
    server.add_argument("--sse-port", type=port_number, default=None, metavar="PORT",
                        help="deprecated: use --port")
    server.add_argument("--sse-host", type=host_address, default=None, metavar="HOST",
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
                        help="header exposed to browsers via CORS (default Mcp-Session-Id, and "
                             "WWW-Authenticate with --oauth-issuer)")
    server.add_argument("--auth-token", action="append", default=None, metavar="TOKEN",
                        help="an API key: require 'Authorization: Bearer TOKEN' or "
                             "'X-API-Key: TOKEN'; repeatable (default: MCP_PROXY_AUTH_TOKEN; "
                             "none if unset)")
    server.add_argument("--auth-token-file", default=None, metavar="FILE",
                        help="API keys, one a line ('#' comments), re-read when the file "
                             "changes or on SIGHUP")
    server.add_argument("--oauth-issuer", metavar="URL",
                        help="take OAuth access tokens issued by this authorization server "
                             "(the proxy as an OAuth 2.1 resource server; needs the 'oauth' "
                             "extra)")
    server.add_argument("--oauth-audience", metavar="URI",
                        help="the audience a token must name (default: the URL of the "
                             "endpoint called, e.g. https://host/mcp)")
    server.add_argument("--oauth-scope", action="append", default=[], metavar="SCOPE",
                        help="a scope every token must hold; repeatable")
    server.add_argument("--oauth-admin-scope", metavar="SCOPE",
                        help="the scope a token needs for /status (default: any good token)")
    server.add_argument("--oauth-introspection-url", metavar="URL",
                        help="RFC 7662 introspection endpoint, for tokens that are not JWTs")
    server.add_argument("--oauth-introspection-client-id", metavar="ID",
                        help="our client id at the introspection endpoint")
    server.add_argument("--oauth-introspection-client-secret", metavar="SECRET",
                        default=os.environ.get("MCP_PROXY_INTROSPECTION_SECRET"),
                        help="its secret (default from MCP_PROXY_INTROSPECTION_SECRET)")
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
    logs.add_argument("--log-format", choices=["text", "json"], default="text",
                      help="text (default) or json: one JSON object a line on stderr")
    logs.add_argument("--log-calls", action="store_true", help="server mode: an audit line "
                      "per tools/call, resources/read and prompts/get (logger mcp_proxy.audit)")
    logs.add_argument("--log-call-arguments", action="store_true",
                      help="put each audited call's arguments in its audit line")

    tools = parser.add_argument_group("tool filters (both modes; server mode: every server)")
    tools.add_argument("--allow-tool", action="append", default=[], metavar="GLOB",
                       help="show only the tools whose name matches a GLOB (fnmatch: * ? "
                            "[seq]); repeatable")
    tools.add_argument("--deny-tool", action="append", default=[], metavar="GLOB",
                       help="hide the tools whose name matches GLOB (a call to one gets the "
                            "unknown-tool error); repeatable; wins over --allow-tool")
    return parser
