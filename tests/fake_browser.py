"""A scripted browser for sign-in tests: ``fake_browser.py URL``.

Follows the authorization URL's redirects (loopback only) to the proxy's callback, as a
user approving the sign-in would. Environment: ``FAKE_BROWSER_LOG`` (a file: one line per
URL visited), ``FAKE_BROWSER_TABS`` (a file: one line per tab the proxy opened, that is per
run of this script as a browser, whatever the mode: the proxy's pid and the URL),
``FAKE_BROWSER_MODE``: ``follow`` (default), ``wrong-state`` (tamper with ``state`` on the
callback), ``ignore`` (open nothing, as a user who walks away).
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests


def main(url: str) -> int:
    # Real browsers and xdg-open print and may read: the proxy must have detached our stdin
    # and stdout from its own (they carry the protocol), or its client would see this line.
    print("fake browser: opening", url, flush=True)
    mode = os.environ.get("FAKE_BROWSER_MODE", "follow")
    log = os.environ.get("FAKE_BROWSER_LOG")
    # as desktop browsers do, loopback addresses bypass any proxy of the environment (the
    # proxy under test's HTTP(S)_PROXY are inherited): this browser visits nothing else
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    http = requests.Session()  # keeps an authorization server's cookies across the sign-in
    for _ in range(10):
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(url + "\n")
        if mode == "ignore":
            return 0
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"fake browser: refusing non-loopback {url}", file=sys.stderr)
            return 1
        if mode == "wrong-state" and urlsplit(url).path == "/callback":
            query = dict(parse_qsl(urlsplit(url).query), state="forged")
            url = url.split("?")[0] + "?" + urlencode(query)
        answer = http.get(url, allow_redirects=False, timeout=10)
        if answer.status_code not in (301, 302, 303, 307, 308):
            return 0 if answer.status_code < 400 else 2
        url = urljoin(url, answer.headers["Location"])
    return 3


def count_tab(url: str) -> None:
    tabs = os.environ.get("FAKE_BROWSER_TABS")
    if tabs:  # one short write with O_APPEND: lines of browsers started together never mix
        fd = os.open(tabs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getppid()} {url}\n".encode())
        finally:
            os.close(fd)


if __name__ == "__main__":
    count_tab(sys.argv[1])
    sys.stdin.read(1)  # would steal a byte of the protocol if stdin were not detached
    sys.exit(main(sys.argv[1]))
