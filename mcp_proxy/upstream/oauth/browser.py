"""The browser step: open the authorization URL, and receive the code on 127.0.0.1.

Our stdin and stdout carry the MCP protocol, so the browser is launched with both detached
(never through ``webbrowser``, whose console browsers would read and write them). The URL is
always printed to stderr first, for headless machines and for when no browser opens.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import html
import logging
import os
import secrets
import shlex
import subprocess
import sys
from urllib.parse import parse_qs

import gevent
from gevent.event import AsyncResult
from gevent.pywsgi import WSGIServer

from mcp_proxy.errors import AuthError

logger = logging.getLogger(__name__)

CALLBACK_PATH = "/callback"
PAGE = ("<!doctype html><meta charset=utf-8><title>mcp-proxy</title>"
        "<p>{}</p>")


def default_port(key: str) -> int:
    """A stable port per server, so a registered redirect URI stays valid across runs."""
    return 3335 + int(hashlib.sha256(key.encode()).hexdigest()[:4], 16) % 45816


def browser_commands(url: str) -> list[list[str]]:
    """The commands that may open ``url``: ``$BROWSER`` entries first, then the platform's."""
    commands = []
    for entry in filter(None, os.environ.get("BROWSER", "").split(os.pathsep)):
        if "%s" in entry:
            commands.append([part.replace("%s", url) for part in shlex.split(entry)])
        else:
            commands.append([entry, url])
    if sys.platform == "darwin":
        commands.append(["open", url])
    elif sys.platform.startswith("linux") and (os.environ.get("DISPLAY")
                                                or os.environ.get("WAYLAND_DISPLAY")):
        commands.append(["xdg-open", url])
    return commands


def can_open_browser() -> bool:
    """Whether ``open_browser`` has anything to try (no ``$BROWSER`` and no display: no)."""
    return sys.platform == "win32" or bool(browser_commands("about:blank"))


def open_browser(url: str) -> bool:
    """Start a browser on ``url``, detached from our stdin and stdout; True if one started."""
    if sys.platform == "win32":
        try:
            os.startfile(url)  # noqa: S606  (a URL, opened by the user's default browser)
            return True
        except OSError:
            pass
    for argv in browser_commands(url):
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     start_new_session=True)
        except OSError as exc:
            logger.debug("cannot start %s: %s", argv[0], exc.strerror)
            continue
        gevent.spawn(child.wait)  # reap it
        return True
    return False


def port_error(port: int, explicit: bool, error: OSError) -> str:
    """Why no callback port could be had, naming the port and the flag that changes it."""
    ports = f"port {port}" if explicit else f"ports {port}-{port + 7}"
    if error.errno == errno.EADDRINUSE:
        return (f"the sign-in callback needs {ports} on 127.0.0.1, in use by another "
                f"program: stop it, or choose a free port with --oauth-callback-port")
    return (f"cannot listen for the sign-in callback on 127.0.0.1, {ports}: "
            f"{error.strerror}; choose another port with --oauth-callback-port")


class Callback:
    """The loopback listener that receives the authorization response, once."""

    def __init__(self, port: int, explicit: bool) -> None:
        self.result: AsyncResult = AsyncResult()
        self.state = secrets.token_urlsafe(32)  # set before listening: never empty
        self.server = None
        for candidate in [port] if explicit else range(port, port + 8):
            try:
                self.server = WSGIServer(("127.0.0.1", candidate), self._app, log=None,
                                         error_log=None)
                self.server.start()
                break
            except OSError as exc:
                self.server = None
                error = exc
        if self.server is None:
            raise AuthError(port_error(port, explicit, error))
        self.port = self.server.server_port
        self.redirect_uri = f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    def _app(self, environ, start_response):
        if environ.get("PATH_INFO") != CALLBACK_PATH or environ.get("REQUEST_METHOD") != "GET":
            return self._page(start_response, "404 Not Found", "Not found.")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if not hmac.compare_digest(query.get("state", "").encode(), self.state.encode()):
            # a stale tab or a forged request: not ours, keep waiting for the real one
            logger.warning("sign-in callback with a wrong state ignored")
            return self._page(start_response, "400 Bad Request",
                              "This sign-in response does not belong to the current sign-in.")
        if self.result.ready():
            return self._page(start_response, "409 Conflict", "Already signed in.")
        self.result.set(query)
        if "error" in query:
            return self._page(start_response, "200 OK", "Sign-in failed: "
                              + html.escape(query.get("error", "")) + ". You can close this tab.")
        return self._page(start_response, "200 OK",
                          "Signed in. You can close this tab and return to your MCP client.")

    @staticmethod
    def _page(start_response, status: str, text: str):
        body = PAGE.format(text).encode()
        start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                                ("Cache-Control", "no-store"),
                                ("Content-Length", str(len(body)))])
        return [body]

    def wait(self, timeout: float) -> dict:
        try:
            return self.result.get(timeout=timeout)
        except gevent.Timeout:
            raise AuthError(f"sign-in not completed within {timeout:g} s (the authorization "
                            f"URL is in the log; raise --oauth-timeout)") from None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=1)
