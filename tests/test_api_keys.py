"""API keys in server mode, and sessions that belong to their caller: the real CLI, real
sockets, the official SDK client (tests/sdk_driver.py), a real Redis for two workers.

Two keys name two callers; neither finds the other's sessions (404, the body of an unknown
session), on every transport and through Redis. The key file rotates while the proxy runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lifecycle import wait_until
from test_modern import headers_for, modern
from test_scaleout import ENV, route
from test_shared import recorded

from conftest import RAW_SERVER, SDK_SERVER, STREAM_HEADERS, open_sse, rpc, run_driver

ALPHA, BETA = {"X-API-Key": "alpha-key"}, {"Authorization": "Bearer beta-key"}
KEYS = ("--auth-token", "alpha-key", "--auth-token", "beta-key")
INIT = {"protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "tests", "version": "0"}}


def initialize(base: str, key: dict, path: str = "/mcp") -> dict:
    """A new Streamable HTTP session of ``key``; the headers its requests carry."""
    init = requests.post(base + path, json=rpc("initialize", 0, **INIT), timeout=10,
                         headers={**STREAM_HEADERS, **key})
    assert init.status_code == 200, init.text
    return {**STREAM_HEADERS, **key, "Mcp-Session-Id": init.headers["Mcp-Session-Id"],
            "Mcp-Protocol-Version": "2025-06-18"}


def as_other(headers: dict, key: dict) -> dict:
    other = {k: v for k, v in headers.items() if k not in ("X-API-Key", "Authorization")}
    return {**other, **key}


def unknown(headers: dict) -> dict:
    return {**headers, "Mcp-Session-Id": "0" * 32}


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@pytest.mark.parametrize("mode", [(), ("--shared-child",)], ids=["own-child", "shared"])
def test_a_streamable_session_is_not_found_by_another_key(proxy_factory, mode):
    proxy = proxy_factory(*mode, *KEYS, "--", *RAW_SERVER)
    url = proxy.base + "/mcp"
    mine = initialize(proxy.base, ALPHA)
    theirs = as_other(mine, BETA)
    for method, body in (("POST", rpc("ping", 1)), ("GET", None), ("DELETE", None)):
        refused = requests.request(method, url, json=body, headers=theirs, timeout=10)
        nobody = requests.request(method, url, json=body, headers=unknown(theirs), timeout=10)
        assert (refused.status_code, refused.content) == (404, nobody.content), method
        assert refused.json()["error"]["message"] == "Session not found"
    assert requests.post(url, json=rpc("ping", 2), headers=mine, timeout=10).json() == {
        "jsonrpc": "2.0", "id": 2, "result": {}}  # untouched by the attempts
    assert requests.delete(url, headers=mine, timeout=10).status_code == 200
    proxy.expect(r"WARNING mcp_proxy\.server\.sessions: streamable:\w+: refused to "
                 rf"key:{key_id('beta-key')} from 127\.0\.0\.1: the session is another caller's")
    assert "alpha-key" not in proxy.stderr() and "beta-key" not in proxy.stderr()


def test_an_sse_session_takes_posts_from_its_own_key_only(proxy_factory):
    proxy = proxy_factory(*KEYS, "--", *RAW_SERVER)
    reader, endpoint = open_sse(proxy.base, headers=BETA)
    refused = requests.post(endpoint, json=rpc("ping", 1), headers=ALPHA, timeout=10)
    nobody = requests.post(endpoint.replace(endpoint[-32:], "f" * 32), json=rpc("ping", 1),
                           headers=ALPHA, timeout=10)
    assert (refused.status_code, refused.text) == (404, nobody.text) == (
        404, "Could not find session")
    assert requests.post(endpoint, json=rpc("ping", 2), headers=BETA,
                         timeout=10).status_code == 202
    assert reader.next_message()["id"] == 2  # only its own POST reached the server
    reader.close()


def test_no_key_or_a_wrong_one_is_401_and_each_refusal_is_logged_once(proxy_factory):
    proxy = proxy_factory(*KEYS, "--", *RAW_SERVER)
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Basic alpha-key"},
                    {"Authorization": "Bearer"}, {"Authorization": "alpha-key"}):
        answer = requests.get(proxy.base + "/sse", headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="mcp-proxy"'
    assert requests.post(proxy.base + "/mcp", json=rpc("initialize", 0, **INIT), timeout=10,
                         headers={**STREAM_HEADERS, "authorization": "bearer  alpha-key "}
                         ).status_code == 200  # the scheme in any case, blanks around
    wait_until(lambda: sum("refused GET '/sse'" in line for line in proxy.lines) == 5)
    refusals = [line for line in proxy.lines if "refused GET '/sse'" in line]
    assert sum("no key" in line for line in refusals) == 4
    assert f"an unknown key (SHA-256 {hashlib.sha256(b'nope').hexdigest()[:12]}...)" \
        in refusals[1]
    assert "nope" not in "".join(refusals).replace(
        hashlib.sha256(b"nope").hexdigest()[:12], "")


def test_the_sdk_client_signs_in_with_a_key_on_both_transports(proxy_factory):
    proxy = proxy_factory(*KEYS, "--", *SDK_SERVER)
    for transport, path, (name, value) in (("streamable", "/mcp", ("X-API-Key", "alpha-key")),
                                           ("sse", "/sse", ("Authorization", "Bearer beta-key"))):
        report = run_driver(transport, proxy.base + path, "echo", "progress",
                            extra=("--header", name, value))
        assert report["echo"] == "hello" and report["progress"]["values"] == [1, 2, 3]
    refused = run_driver("streamable", proxy.base + "/mcp", "echo", timeout=60,
                         extra=("--timeout", "10", "--header", "X-API-Key", "wrong"))
    assert "error" in refused["session"] and "echo" not in refused, refused
    proxy.expect(r"refused POST '/mcp' from 127\.0\.0\.1: an unknown key")


def test_probes_stay_open_and_status_takes_a_key(proxy_factory):
    proxy = proxy_factory(*KEYS, "--", *RAW_SERVER)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(proxy.base + path, timeout=10).status_code == 200, path
    assert requests.get(proxy.base + "/status", timeout=10).status_code == 401
    status = requests.get(proxy.base + "/status", headers=BETA, timeout=10)
    assert status.status_code == 200 and status.json()["sessions"] == 0


def write_keys(path, *keys: str) -> None:
    """Write the key file whole at once (a rename), as an editor or a secret mount does."""
    scratch = path.with_name(path.name + ".new")
    scratch.write_text("# rotated by the tests\n\n" + "".join(f"  {key}\n" for key in keys))
    os.replace(scratch, path)


def answers(base: str, key: str) -> int:
    return requests.post(base + "/mcp", json=rpc("initialize", 0, **INIT), timeout=10,
                         headers={**STREAM_HEADERS, "X-API-Key": key}).status_code


def test_the_key_file_rotates_while_the_proxy_runs(proxy_factory, tmp_path):
    keys = tmp_path / "keys.txt"
    write_keys(keys, "old-key", "kept-key")
    proxy = proxy_factory("--auth-token-file", str(keys), "--", *RAW_SERVER)
    kept = initialize(proxy.base, {"X-API-Key": "kept-key"})
    old = initialize(proxy.base, {"X-API-Key": "old-key"})
    reader, _ = open_sse(proxy.base, headers={"X-API-Key": "old-key"})
    assert answers(proxy.base, "new-key") == 401
    write_keys(keys, "kept-key", "new-key")
    started = time.monotonic()
    wait_until(lambda: answers(proxy.base, "new-key") == 200, 5, 0.1)
    assert answers(proxy.base, "old-key") == 401
    assert time.monotonic() - started < 2.5  # looked at once a second
    ping = requests.post(proxy.base + "/mcp", json=rpc("ping", 1), headers=kept, timeout=10)
    assert ping.json()["result"] == {}  # a still-valid key's open session is untouched
    assert requests.post(proxy.base + "/mcp", json=rpc("ping", 2), headers=old,
                         timeout=10).status_code == 401
    with pytest.raises(EOFError):  # a taken key's open stream ends with its sessions
        reader.next_event()
    proxy.expect(rf"session ended: its key \(key:{key_id('old-key')}\) was taken out of the "
                 r"key file")
    assert len(requests.get(proxy.base + "/status", headers={"X-API-Key": "kept-key"},
                            timeout=10).json()["session_details"]) == 2  # kept's and new's
    proxy.expect(r"INFO mcp_proxy\.server\.api_keys: read the key file \S+ again "
                 r"\(it changed\): 2 keys")

    write_keys(keys)  # emptied: the old keys stay, with one error
    wait_until(lambda: answers(proxy.base, "new-key") == 200 and any(
        "holds no key" in line for line in proxy.lines), 5, 0.1)  # a request looks
    proxy.expect(r"ERROR mcp_proxy\.server\.api_keys: \S+ holds no key .*; keeping the 2 "
                 r"keys it held")
    for _ in range(8):  # looked at again since: not logged again
        assert answers(proxy.base, "kept-key") == 200
        time.sleep(0.25)
    assert sum("holds no key" in line for line in proxy.lines) == 1
    keys.unlink()  # gone: the same
    wait_until(lambda: answers(proxy.base, "new-key") == 200 and any(
        "cannot read the key file" in line for line in proxy.lines), 5, 0.1)
    proxy.expect(r"ERROR .*cannot read the key file \S+: No such file or directory; keeping "
                 r"the 2 keys it held")

    # SIGHUP reads it even when nothing a stat sees changed (same inode, size and time)
    write_keys(keys, "hup-key-1")
    wait_until(lambda: answers(proxy.base, "hup-key-1") == 200, 5, 0.1)
    before = os.stat(keys)
    with open(keys, "r+") as handle:  # in place: the same inode and size
        text = handle.read().replace("hup-key-1", "hup-key-2")
        handle.seek(0)
        handle.write(text)
    os.utime(keys, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)
    assert answers(proxy.base, "hup-key-2") == 401  # unseen by the once-a-second look
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.expect(r"read the key file \S+ again \(SIGHUP\): 1 keys")
    assert answers(proxy.base, "hup-key-2") == 200 and answers(proxy.base, "hup-key-1") == 401
    write_keys(keys, "hup-key-3")
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: sum("again (SIGHUP)" in line for line in proxy.lines) == 2)
    for _ in range(6):  # what SIGHUP read is not read again for the same change
        assert answers(proxy.base, "hup-key-3") == 200
        time.sleep(0.25)
    assert sum(" again (" in line for line in proxy.lines) == 4, proxy.stderr()
    assert proxy.proc.poll() is None
    for secret in ("old-key", "kept-key", "new-key", "hup-key"):
        assert secret not in proxy.stderr()


def test_keys_in_the_config_file_open_the_servers_they_name(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    entry = {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}
    config.write_text(json.dumps({
        "mcpServers": {"one": entry, "two": entry},
        "auth": {"keys": [{"key": "${TEAM_KEY}", "id": "team", "servers": ["one"]},
                          {"key": "ops-key", "id": "ops", "admin": True}]}}))
    proxy = proxy_factory("--log-calls", "--named-server-config", str(config), "--",
                          *RAW_SERVER, env={"TEAM_KEY": "team-key"})
    team, ops = {"X-API-Key": "team-key"}, {"X-API-Key": "ops-key"}
    session = initialize(proxy.base, team, "/servers/one/mcp")
    requests.post(proxy.base + "/servers/one/mcp", timeout=10, headers=session,
                  json=rpc("tools/call", 1, name="echo", arguments={"text": "x"}))
    proxy.expect(r'mcp_proxy\.audit: call .* caller="127\.0\.0\.1 key:team"')
    for path in ("/servers/two/mcp", "/mcp"):  # another server, and the default one
        refused = requests.post(proxy.base + path, json=rpc("initialize", 0, **INIT),
                                headers={**STREAM_HEADERS, **team}, timeout=10)
        assert refused.status_code == 403 and "does not open" in refused.text, path
    proxy.expect(r"refused POST '/servers/two/mcp' from 127\.0\.0\.1: key:team does not "
                 r"open server 'two'")
    proxy.expect(r"refused POST '/mcp' from 127\.0\.0\.1: key:team does not open the "
                 r"default server")
    initialize(proxy.base, ops, "/servers/two/mcp")  # a key without servers opens them all
    initialize(proxy.base, ops)
    assert requests.get(proxy.base + "/status", headers=team, timeout=10).status_code == 403
    assert requests.get(proxy.base + "/status", headers=ops, timeout=10).status_code == 200
    assert "team-key" not in proxy.stderr() and "ops-key" not in proxy.stderr()


def test_a_request_state_handle_is_refused_to_another_key(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory(*KEYS, "--keepalive", "60", "--", *RAW_SERVER,
                          "--record", str(record))
    call = modern("tools/call", 1, name="mrtr", arguments={})
    first = requests.post(proxy.base + "/mcp", json=call, timeout=10,
                          headers=headers_for(call, **ALPHA)).json()["result"]
    retry = modern("tools/call", 2, name="mrtr", arguments={},
                   requestState=first["requestState"])
    refused = requests.post(proxy.base + "/mcp", json=retry, timeout=10,
                            headers=headers_for(retry, **BETA))
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Invalid or expired requestState"
    proxy.expect(r"WARNING mcp_proxy\.children\.lane: modern:\d+: refused the requestState of "
                 rf"request 2 from 127\.0\.0\.1 key:{key_id('beta-key')}: another caller's")
    host, port = proxy.base.rsplit("/", 1)[1].rsplit(":", 1)
    body = json.dumps(retry).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_for(retry, **ALPHA).items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # the child holds it
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: any(m.get("params", {}).get("requestState") == "mrtr-1"
                               for m in recorded(record)))  # its own key's retry went on


def test_a_forwarded_request_with_another_key_is_refused(proxy_factory, redis_server):
    args = ("--redis-url", redis_server.url, *KEYS, "--", *RAW_SERVER)
    a, b = proxy_factory(*args, env=ENV), proxy_factory(*args, env=ENV)
    for proxy in (a, b):
        proxy.expect(r"listening on Redis")
    mine = initialize(a.base, ALPHA)
    theirs = as_other(mine, BETA)
    monitor = socket.create_connection(("127.0.0.1", redis_server.port), timeout=5)
    monitor.sendall(b"MONITOR\r\n")
    assert monitor.recv(5) == b"+OK\r\n"
    for method, body in (("POST", rpc("ping", 1)), ("GET", None), ("DELETE", None)):
        refused = requests.request(method, b.base + "/mcp", json=body, headers=theirs,
                                   timeout=10)
        assert refused.status_code == 404 and route(refused) == "forwarded", method
        assert refused.json()["error"]["message"] == "Session not found"
    a.expect(r"refused to key:\w+ from worker:\w+: the session is another caller's")
    ok = requests.post(b.base + "/mcp", json=rpc("ping", 2), headers=mine, timeout=10)
    assert ok.json()["result"] == {} and route(ok) == "forwarded"
    seen = b""
    monitor.settimeout(1)
    try:
        while True:
            seen += monitor.recv(65536)
    except TimeoutError:
        pass
    monitor.close()
    assert f'key:{key_id("alpha-key")}'.encode() in seen  # the caller crosses: its id
    assert b"alpha-key" not in seen and b"beta-key" not in seen  # never the key
    reader, endpoint = open_sse(a.base, headers=ALPHA)
    on_b = b.base + endpoint[len(a.base):]
    refused = requests.post(on_b, json=rpc("ping", 3), headers=BETA, timeout=10)
    assert (refused.status_code, refused.text, route(refused)) == (
        404, "Could not find session", "forwarded")
    assert requests.post(on_b, json=rpc("ping", 4), headers=ALPHA,
                         timeout=10).status_code == 202
    assert reader.next_message()["id"] == 4
    reader.close()


HEADER_TEXT = st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b)


def test_odd_key_headers_are_never_a_server_error(proxy_factory):
    proxy = proxy_factory(*KEYS, "--", *RAW_SERVER)
    host, port = proxy.base.rsplit("/", 1)[1].rsplit(":", 1)

    def status_of(name: bytes, value: bytes) -> int:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
                         + b"\r\n" + name + b": " + value + b"\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, "no answer"
                head += chunk
        return int(head.split(b" ", 2)[1])

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(name=st.sampled_from([b"Authorization", b"X-API-Key", b"authorization"]),
           prefix=st.sampled_from([b"", b"Bearer ", b"bearer", b"Bearer      ", b"   "]),
           value=HEADER_TEXT | st.just(b" " * 5000) | st.just(b"alpha-key" + b" " * 300))
    def never_a_500(name: bytes, prefix: bytes, value: bytes) -> None:
        status = status_of(name, prefix + value)
        assert status in (200, 400, 401, 431), (name, prefix, value, status)

    never_a_500()
    assert proxy.proc.poll() is None
    assert "Traceback" not in proxy.stderr()
