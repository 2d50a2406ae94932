"""SIGHUP reloads ``--named-server-config`` (server/reload.py), with the real CLI and children.

New servers are served at once, removed ones drain (their paths 404 naming them, their
sessions end, their children stop), changed ones restart, unchanged ones keep their sessions
and children; a file that cannot be used is refused in one logged line and the old config
keeps serving.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lifecycle import wait_until

from conftest import (
    RAW_SERVER,
    SDK_SERVER,
    STREAM_HEADERS,
    GunicornProcess,
    open_sse,
    open_streamable,
    pids_alive,
    rpc,
    run_driver,
)

RAW = {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}


def write(path, servers: dict, **more) -> None:
    path.write_text(json.dumps({"mcpServers": servers, **more}))


def status(proxy) -> dict:
    return requests.get(proxy.base + "/status", timeout=10).json()


def hangup(proxy, count: int = 1) -> dict:
    """SIGHUP the proxy ``count`` times; wait (bounded) for the reload; its status block."""
    done = status(proxy)["config"]["reloads"]
    for _ in range(count):
        proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: status(proxy)["config"]["reloads"] > done, 20, 0.05)
    return status(proxy)["config"]


def call(base: str, headers: dict, text: str, request_id: int = 5) -> requests.Response:
    return requests.post(base, headers=headers, timeout=10, json=rpc(
        "tools/call", request_id, name="echo", arguments={"text": text}))


def child_of(proxy, session_id: str) -> int:
    details = status(proxy)["session_details"]
    return next(s["child"]["pid"] for s in details if session_id.endswith(s["id"]))


def test_add_remove_change_and_keep(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    write(config, {"kept": RAW, "gone": RAW, "changed": RAW,
                   "shared": {**RAW, "shared": True}})
    proxy = proxy_factory("--named-server-config", str(config))
    assert status(proxy)["config"] == {"generation": 1, "reloads": 0, "last_reload": None}
    opened = {name: open_streamable(proxy.base, f"/servers/{name}/mcp")
              for name in ("kept", "gone", "changed", "shared")}
    for name, headers in opened.items():
        assert call(f"{proxy.base}/servers/{name}/mcp", headers, name).status_code == 200
    kept_pid = child_of(proxy, opened["kept"]["Mcp-Session-Id"])
    shared_pid = status(proxy)["server_instances"]["shared"]["children"]
    assert shared_pid == 1
    gone_pid = child_of(proxy, opened["gone"]["Mcp-Session-Id"])

    write(config, {"kept": RAW, "changed": {**RAW, "tools": {"deny": ["echo"]}},
                   "shared": {**RAW, "shared": True}, "added": {**RAW, "shared": True}})
    block = hangup(proxy)
    assert block["generation"] == 2
    assert block["last_reload"]["outcome"] == "ok"
    assert block["last_reload"]["added"] == ["added"]
    assert block["last_reload"]["removed"] == ["gone"]
    assert block["last_reload"]["restarted"] == ["changed"]
    proxy.expect(r"INFO mcp_proxy\.server\.reload: config reloaded \(generation 2\): added "
                 r"added; removed gone; restarted changed")

    # unchanged: the same session, the same child
    assert call(proxy.base + "/servers/kept/mcp", opened["kept"], "still").json()[
        "result"]["content"][0]["text"] == "still"
    assert child_of(proxy, opened["kept"]["Mcp-Session-Id"]) == kept_pid
    assert call(proxy.base + "/servers/shared/mcp", opened["shared"], "on").status_code == 200
    # removed: a clear 404 naming it, for a new session and for the old one
    for headers in (STREAM_HEADERS, opened["gone"]):
        refused = requests.post(proxy.base + "/servers/gone/mcp", headers=headers, timeout=10,
                                json=rpc("initialize", 0, protocolVersion="2025-06-18"))
        assert refused.status_code == 404
        assert "server 'gone' was taken out of the config" in refused.json()["error"]["message"]
    wait_until(lambda: not pids_alive([gone_pid]), 10)
    assert "gone" not in status(proxy)["server_instances"]
    # changed: its session ended; a new one gets the new entry (echo hidden)
    assert call(proxy.base + "/servers/changed/mcp", opened["changed"], "x").status_code == 404
    fresh = open_streamable(proxy.base, "/servers/changed/mcp")
    hidden = call(proxy.base + "/servers/changed/mcp", fresh, "x").json()
    assert hidden["error"]["code"] == -32602, hidden
    # added: served at once, through the official SDK client, on both transports
    for transport, path in (("streamable", "/mcp"), ("sse", "/sse")):
        report = run_driver(transport, f"{proxy.base}/servers/added{path}", "echo")
        assert "error" not in report["echo"], report
    assert status(proxy)["server_instances"]["added"]["mode"] == "shared"
    metrics = requests.get(proxy.base + "/metrics", timeout=10).text
    assert 'mcp_proxy_config_reloads_total{outcome="ok"} 1.0' in metrics
    assert 'mcp_proxy_sessions_open{server="added",transport="sse"}' in metrics

    # taken out and back again: served anew on the same paths
    write(config, {"kept": RAW})
    assert hangup(proxy)["generation"] == 3
    write(config, {"kept": RAW, "gone": RAW})
    assert hangup(proxy)["last_reload"]["added"] == ["gone"]
    back = open_streamable(proxy.base, "/servers/gone/mcp")
    assert call(proxy.base + "/servers/gone/mcp", back, "back").status_code == 200
    assert call(proxy.base + "/servers/kept/mcp", opened["kept"], "x").status_code == 200
    assert child_of(proxy, opened["kept"]["Mcp-Session-Id"]) == kept_pid


def test_a_removed_servers_sse_stream_ends(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    write(config, {"v1.0": RAW, "two": {**RAW, "shared": True}})  # a dot: as Flask never
    proxy = proxy_factory("--named-server-config", str(config))  # names a Blueprint
    streams = {}
    for name in ("v1.0", "two"):
        reader, endpoint = open_sse(proxy.base, f"/servers/{name}/sse")
        assert requests.post(endpoint, json=rpc("initialize", 0, protocolVersion="2024-11-05"),
                             timeout=10).status_code == 202
        assert reader.next_message()["id"] == 0
        streams[name] = (reader, endpoint)
    write(config, {"two": {**RAW, "shared": True, "env": {"CHANGED": "1"}}})
    hangup(proxy)
    for reader, endpoint in streams.values():
        with pytest.raises(EOFError):  # ended, not left open (bounded by the read timeout)
            while True:
                reader.next_event()
        assert requests.post(endpoint, json=rpc("ping", 1), timeout=10).status_code == 404
    proxy.expect(r"session ended: its server was taken out of the config \(reload\)")
    proxy.expect(r"session ended: its server was changed in the config \(reload\)")
    wait_until(lambda: status(proxy)["server_instances"]["two"]["children"] == 0, 10)


BAD = {  # each kind of unusable file, and what its one logged line says
    "not JSON": ('{"mcpServers": {', r"is not valid JSON"),
    "schema": ('{"mcpServers": {"a": {"command": 7}}}', r"\$\.mcpServers\.a\.command: "),
    "unset variable": ('{"mcpServers": {"a": {"command": "${RELOAD_UNSET_VARIABLE}"}}}',
                       r"\$\.mcpServers\.a\.command: .*RELOAD_UNSET_VARIABLE"),
    "collision": (json.dumps({"mcpServers": {"a": {**RAW, "tools": {
        "rename": {"echo": "same", "tagged": "same"}}}}}), r"\$\.mcpServers\.a\.tools"),
    "no command": ('{"mcpServers": {"a": {"command": "no-such-command-for-reload"}}}',
                   r"\$\.mcpServers\.a: command 'no-such-command-for-reload' not found on PATH"),
    "combined names collide": (json.dumps({"mcpServers": {"a": RAW, "m": RAW, "both": {
        "servers": ["a", "m"], "prefix": {"a": "", "m": ""}}}}),
        r"\$\.mcpServers\.both: combined server 'both': tool 'echo' of m collides with a's"),
    "unknown member": (json.dumps({"mcpServers": {"a": RAW, "both": {"servers": ["a", "z"]}}}),
                       r"\$\.mcpServers\.both\.servers"),
}


def test_a_bad_file_is_refused_and_the_old_config_kept(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    write(config, {"a": RAW})
    proxy = proxy_factory("--named-server-config", str(config))
    headers = open_streamable(proxy.base, "/servers/a/mcp")
    pid = child_of(proxy, headers["Mcp-Session-Id"])
    for number, (text, says) in enumerate(BAD.values(), start=1):
        config.write_text(text)
        block = hangup(proxy)
        assert block["generation"] == 1 and block["reloads"] == number
        assert block["last_reload"]["outcome"] == "refused"
        line = proxy.expect(r"ERROR mcp_proxy\.server\.reload: config reload refused, the "
                            r"running config keeps serving: .*" + says).string
        assert "Traceback" not in proxy.stderr(), proxy.stderr()[-4000:]
        assert line.count("\n") == 0
        assert call(proxy.base + "/servers/a/mcp", headers, "kept").status_code == 200
        assert child_of(proxy, headers["Mcp-Session-Id"]) == pid
    metrics = requests.get(proxy.base + "/metrics", timeout=10).text
    assert f'mcp_proxy_config_reloads_total{{outcome="refused"}} {len(BAD)}.0' in metrics


def test_racing_hangups_and_live_calls(proxy_factory, tmp_path):
    """Calls on a kept server and on one that is taken out and back, while SIGHUPs come in
    pairs: no 500, no hang; the kept session never notices."""
    config = tmp_path / "servers.json"
    write(config, {"kept": {**RAW, "shared": True}, "flip": RAW})
    proxy = proxy_factory("--named-server-config", str(config))
    kept = open_streamable(proxy.base, "/servers/kept/mcp")
    seen: dict[int, int] = {}
    stop = threading.Event()
    failures: list[str] = []

    def calls(name: str) -> None:
        headers = None
        while not stop.is_set():
            try:
                if name == "kept":
                    answer = call(proxy.base + "/servers/kept/mcp", kept, "k")
                else:
                    if headers is None:
                        got = requests.post(proxy.base + "/servers/flip/mcp",
                                            headers=STREAM_HEADERS, timeout=10,
                                            json=rpc("initialize", 0,
                                                     protocolVersion="2025-06-18"))
                        seen[got.status_code] = seen.get(got.status_code, 0) + 1
                        if got.status_code == 200:
                            headers = {**STREAM_HEADERS,
                                       "Mcp-Session-Id": got.headers["Mcp-Session-Id"]}
                        continue
                    answer = call(proxy.base + "/servers/flip/mcp", headers, "f")
                    if answer.status_code != 200:
                        headers = None
                seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
                if name == "kept" and answer.status_code != 200:
                    failures.append(f"kept: {answer.status_code} {answer.text}")
            except requests.RequestException as exc:
                failures.append(f"{name}: {exc!r}")

    workers = [threading.Thread(target=calls, args=(name,)) for name in ("kept", "flip", "flip")]
    for worker in workers:
        worker.start()
    try:
        for round_ in range(6):
            flip = {"flip": RAW} if round_ % 2 else {"flip": {**RAW, "env": {"R": str(round_)}}}
            write(config, {"kept": {**RAW, "shared": True}, **(flip if round_ % 3 else {})})
            hangup(proxy, count=2)  # the second waits for the first, or joins it
            time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert not any(worker.is_alive() for worker in workers), "a call hung"
    assert not failures, failures[:5]
    assert 500 not in seen and 502 not in seen, seen
    assert seen[200] > 10, seen
    assert proxy.proc.poll() is None
    assert "Traceback" not in proxy.stderr(), proxy.stderr()[-4000:]


def test_one_hangup_reloads_the_key_file_and_the_config(proxy_factory, tmp_path):
    config, keys = tmp_path / "servers.json", tmp_path / "keys"
    write(config, {"a": RAW})
    keys.write_text("first-key\n")
    proxy = proxy_factory("--named-server-config", str(config), "--auth-token-file", str(keys))
    keys.write_text("second-key\n")
    write(config, {"a": RAW, "b": RAW})
    done = requests.get(proxy.base + "/status", headers={"X-API-Key": "first-key"},
                        timeout=10).json()["config"]["reloads"]
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.expect(r"read the key file \S+ again \(SIGHUP\): 1 keys")
    proxy.expect(r"config reloaded \(generation 2\): added b")
    block = requests.get(proxy.base + "/status", headers={"X-API-Key": "second-key"},
                         timeout=10).json()["config"]
    assert block["reloads"] == done + 1
    headers = {**STREAM_HEADERS, "X-API-Key": "second-key"}
    assert requests.post(proxy.base + "/servers/b/mcp", headers=headers, timeout=10, json=rpc(
        "initialize", 0, protocolVersion="2025-06-18")).status_code == 200


def test_a_combined_server_restarts_when_a_member_changes(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    sdk = {"command": SDK_SERVER[0], "args": SDK_SERVER[1:]}
    write(config, {"m1": RAW, "m2": sdk, "both": {"servers": ["m1", "m2"]}})
    proxy = proxy_factory("--named-server-config", str(config))
    headers = open_streamable(proxy.base, "/servers/both/mcp")
    listed = requests.post(proxy.base + "/servers/both/mcp", headers=headers, timeout=10,
                           json=rpc("tools/list", 2)).json()
    assert "m1__echo" in {tool["name"] for tool in listed["result"]["tools"]}
    write(config, {"m1": {**RAW, "tools": {"rename": {"echo": "said"}}}, "m2": sdk,
                   "both": {"servers": ["m1", "m2"]}})
    block = hangup(proxy)
    assert block["last_reload"]["restarted"] == ["m1", "both"], block
    assert requests.post(proxy.base + "/servers/both/mcp", headers=headers, timeout=10,
                         json=rpc("tools/list", 3)).status_code == 404
    fresh = open_streamable(proxy.base, "/servers/both/mcp")
    names = {tool["name"] for tool in requests.post(
        proxy.base + "/servers/both/mcp", headers=fresh, timeout=10,
        json=rpc("tools/list", 4)).json()["result"]["tools"]}
    assert "m1__said" in names and "m1__echo" not in names


def test_metrics_follow_combined_servers_in_and_out(proxy_factory, tmp_path):
    """/metrics reads what serves now: a combined server added by a reload shows its members,
    and one taken out is gone from it (its scrape answered 500 while the list was the
    start's)."""
    config = tmp_path / "servers.json"
    combined = {"m1": RAW, "m2": RAW, "both": {"servers": ["m1", "m2"]}}
    write(config, combined)
    proxy = proxy_factory("--named-server-config", str(config))

    def members() -> set:
        scrape = requests.get(proxy.base + "/metrics", timeout=10)
        assert scrape.status_code == 200, scrape.text
        return {line.split("{")[1].split("}")[0] for line in scrape.text.splitlines()
                if line.startswith("mcp_proxy_combined_member_up{")}

    both = {'member="m1",server="both"', 'member="m2",server="both"'}
    assert members() == both
    write(config, {"m1": RAW, "m2": RAW})
    assert hangup(proxy)["last_reload"]["removed"] == ["both"]
    assert members() == set()
    write(config, {**combined, "again": {"servers": ["m2"]}})
    assert sorted(hangup(proxy)["last_reload"]["added"]) == ["again", "both"]
    assert members() == both | {'member="m2",server="again"'}


def test_under_gunicorn_sighup_is_the_arbiters(tmp_path):
    """The arbiter restarts its workers on SIGHUP; each new one reads the file afresh. A worker
    installs no reload of its own (its /status has no config block)."""
    pytest.importorskip("gunicorn")
    config = tmp_path / "servers.json"
    write(config, {"a": RAW})
    with GunicornProcess(f"--named-server-config {config}",
                         "-c", "python:mcp_proxy.gunicorn_conf") as server:
        before = requests.get(server.base + "/status", timeout=10).json()
        assert "config" not in before and set(before["server_instances"]) == {"a"}
        write(config, {"a": RAW, "b": RAW})
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "b" in requests.get(server.base + "/status", timeout=10).json()[
            "server_instances"], 30, 0.2)
        # an old worker may still take a connection while it drains: every one soon serves b
        wait_until(lambda: requests.post(
            server.base + "/servers/b/mcp", headers=STREAM_HEADERS, timeout=10,
            json=rpc("initialize", 0, protocolVersion="2025-06-18")).status_code == 200, 30, 0.2)
        assert server.proc.poll() is None


def test_remote_servers_added_refused_and_changed(proxy_factory, tmp_path):
    """A remote server (another mcp-proxy) added by a reload is probed first, as at start: one
    that can never work (no credentials, wrong ones) is refused; its token stays out of the
    log; a changed URL restarts it."""
    token = "reload-remote-token-1234"
    remotes = [proxy_factory("--auth-token", token, "--", *SDK_SERVER) for _ in range(2)]
    config = tmp_path / "servers.json"
    write(config, {"local": RAW})
    proxy = proxy_factory("--named-server-config", str(config))
    entry = {"url": remotes[0].base + "/mcp", "headers": {"Authorization": f"Bearer {token}"}}
    for bad, says in (({"url": entry["url"]}, r"asks for a sign-in"),
                      ({**entry, "headers": {"Authorization": "Bearer wrong-one"}},
                       r"authentication failed")):
        write(config, {"local": RAW, "far": bad})
        assert hangup(proxy)["last_reload"]["outcome"] == "refused"
        proxy.expect(r"config reload refused, the running config keeps serving: .*far.*" + says)
    write(config, {"local": RAW, "far": entry})
    assert hangup(proxy)["last_reload"]["added"] == ["far"]
    report = run_driver("streamable", proxy.base + "/servers/far/mcp", "echo")
    assert "error" not in report["echo"], report
    assert 'mcp_proxy_remote_up{server="far"} 1.0' in requests.get(proxy.base + "/metrics",
                                                                  timeout=10).text
    write(config, {"local": RAW, "far": {**entry, "url": remotes[1].base + "/mcp"}})
    assert hangup(proxy)["last_reload"]["restarted"] == ["far"]
    far = status(proxy)["server_instances"]["far"]["remote"]
    assert far["url"] == remotes[1].base + "/mcp", far
    report = run_driver("sse", proxy.base + "/servers/far/sse", "echo")
    assert "error" not in report["echo"], report
    # made shared: its one remote session is a session of the remote, not a local process
    write(config, {"local": RAW, "far": {**entry, "url": remotes[1].base + "/mcp",
                                         "shared": True}})
    assert hangup(proxy)["last_reload"]["restarted"] == ["far"]
    assert status(proxy)["server_instances"]["far"]["mode"] == "shared remote"
    report = run_driver("streamable", proxy.base + "/servers/far/mcp", "echo")
    assert "error" not in report["echo"], report
    assert token not in proxy.stderr()


def test_with_redis_each_process_reloads_and_a_new_servers_requests_cross(proxy_factory,
                                                                         redis_server,
                                                                         tmp_path):
    """Two proxies on one Redis, each reloaded by its own SIGHUP: a session of a server added
    by the reload, opened on one, is reached through the other (the router learnt its path)."""
    config = tmp_path / "servers.json"
    write(config, {"a": RAW})
    proxies = [proxy_factory("--redis-url", redis_server.url, "--named-server-config",
                             str(config)) for _ in range(2)]
    write(config, {"a": RAW, "b": RAW})
    for proxy in proxies:
        assert hangup(proxy)["last_reload"]["added"] == ["b"]
    headers = open_streamable(proxies[0].base, "/servers/b/mcp")
    answer = call(proxies[1].base + "/servers/b/mcp", headers, "crossed")
    assert answer.json()["result"]["content"][0]["text"] == "crossed"
    write(config, {"a": RAW})
    for proxy in proxies:
        assert hangup(proxy)["last_reload"]["removed"] == ["b"]
    gone = call(proxies[1].base + "/servers/b/mcp", headers, "x")
    assert gone.status_code == 404, gone.text


def test_the_plan_of_a_reload():
    from mcp_proxy.config.settings import ServerSpec
    from mcp_proxy.server.reload import plan

    served = {"": ServerSpec("default"), "a": ServerSpec("x"), "b": ServerSpec("y"),
              "c": ServerSpec("z"), "both": ServerSpec("", members=("a", "c"))}
    read = {"a": ServerSpec("x", ["changed"]), "c": ServerSpec("z"), "d": ServerSpec("w"),
            "both": ServerSpec("", members=("a", "c"))}
    change = plan(served, read)
    assert (change.added, change.removed, change.changed) == (["d"], ["b"], ["a", "both"])
    assert plan(served, {**read, "a": ServerSpec("x")}).changed == []  # the default stays


# -- random edits: each one is applied or refused, and the proxy keeps answering -----------

GOOD = st.one_of(
    st.just(RAW), st.just({**RAW, "shared": True}), st.just({**RAW, "env": {"X": "1"}}),
    st.just({**RAW, "tools": {"deny": ["echo"]}}), st.just({**RAW, "enabled": False}),
    st.just({**RAW, "maxSessions": 3}), st.just({"url": "http://127.0.0.1:1/mcp"}),
)
BAD_ENTRIES = st.one_of(
    st.just({"command": 7}), st.just({"command": "${RELOAD_NOT_SET}"}),
    st.just({"command": "no-such-reload-command"}), st.just({**RAW, "maxSessions": 0}),
    st.just({**RAW, "shared": "yes"}), st.just({"url": "not a url"}), st.just({}),
    st.just({"servers": ["s0", "s9"]}),
)
NAMES = st.sampled_from(["s0", "s1", "s2", "s.3"])
GOOD_FILES = st.dictionaries(NAMES, GOOD, max_size=4)


def local(servers: dict) -> list[str]:
    """The local servers of a file (a remote member is not combined here: its start-up
    check opens each member as a process)."""
    return sorted(name for name, entry in servers.items() if "command" in entry)
EDITS = st.one_of(
    GOOD_FILES, GOOD_FILES, GOOD_FILES,  # most edits are good ones
    GOOD_FILES.map(lambda servers: {**servers, "both": {"servers": local(servers)}}
                   if len(local(servers)) >= 2 else servers),
    st.tuples(GOOD_FILES, st.sampled_from(["s0", "bad name"]), BAD_ENTRIES).map(
        lambda bad: {**bad[0], bad[1]: bad[2]}),
).map(lambda servers: json.dumps({"mcpServers": servers})) | st.one_of(
    st.text(max_size=40), st.just("[]"), st.just('{"mcpServers": 7}'))


@pytest.fixture(scope="module")
def long_proxy(tmp_path_factory):
    from conftest import ProxyProcess

    config = tmp_path_factory.mktemp("reload") / "servers.json"
    write(config, {"s0": RAW})
    proxy = ProxyProcess("--named-server-config", str(config)).started()
    yield proxy, config
    proxy.stop()


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDITS)
def test_random_edits_apply_or_are_refused(long_proxy, edit):
    proxy, config = long_proxy
    config.write_text(edit)
    block = hangup(proxy)
    outcome = block["last_reload"]["outcome"]
    assert outcome in ("ok", "refused")
    served = set(status(proxy)["server_instances"])
    if outcome == "ok":
        wanted = {name for name, entry in json.loads(edit)["mcpServers"].items()
                  if entry.get("enabled", True) is not False}
        assert served == wanted
        for name in served:  # each served server answers on its paths
            answer = requests.post(f"{proxy.base}/servers/{name}/mcp", headers=STREAM_HEADERS,
                                   json=rpc("ping", 1), timeout=10)
            assert answer.status_code in (400, 404), answer.text  # no session: not a 500
    assert proxy.proc.poll() is None
    assert "Traceback" not in proxy.stderr(), proxy.stderr()[-4000:]
