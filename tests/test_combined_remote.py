"""Combined servers with a remote member (issue 21): docs/examples/combined.json, served.

The example of docs/server-mode.md is loaded as it is written: two local members, the SDK
fixture server (``notes``: ``python3`` on PATH runs this venv's Python) and
``@modelcontextprotocol/server-everything`` (``everything``: ``npx`` on PATH runs the copy
npm installed on first use), and a remote member (``search``) that is ANOTHER mcp-proxy in
server mode, in front of the SDK server, asking for the key the entry's header carries.
Driven by the official SDK client over both transports: merged lists with prefixes, calls,
reads and prompts routed, resources paged across members (the remote member reached over
Streamable HTTP, then over HTTP+SSE), the member's and the combined entry's filters and
renames, a hidden tool's call refused (-32602); the remote stopped (its tools go with
``list_changed``, its calls get a clear error, the local members keep answering, ``/status``,
``/readyz`` and ``/metrics`` say so) and restarted on its port (its tools come back); the
remote down when the session starts, and coming later. ``--check-config`` with a remote
member; the members' state under Hypothesis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from test_combined import _answer
from test_health import wait_for

from conftest import (
    SDK_SERVER,
    STREAM_HEADERS,
    TESTS,
    ProxyProcess,
    free_port,
    npm_install,
    rpc,
)
from mcp_proxy.children.combined_members import Slot
from mcp_proxy.children.combined_status import CombinedWatch

EXAMPLE = TESTS.parent / "docs" / "examples" / "combined.json"
EVERYTHING = "@modelcontextprotocol/server-everything@2025.9.25"
TOKEN = "search-key-5678"


@pytest.fixture(scope="module")
def shims(tmp_path_factory) -> Path:
    """A bin folder whose ``python3`` and ``npx`` are what the example's commands need here."""
    node, script = npm_install("everything", EVERYTHING, "dist/index.js")
    folder = tmp_path_factory.mktemp("bin")
    for name, line in (("python3", f'exec "{sys.executable}" "$@"'),
                       ("npx", f'exec "{node}" "{script}" stdio')):
        shim = folder / name
        shim.write_text(f"#!/bin/sh\n{line}\n")
        shim.chmod(0o755)
    return folder


class Remote:
    """The remote member: mcp-proxy in front of the SDK server, on a port kept across restarts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proxies = [self._start()]

    def _start(self) -> ProxyProcess:
        return ProxyProcess("--port", str(self.port), "--auth-token", TOKEN, "--",
                            *SDK_SERVER).started()

    def stop(self) -> None:
        self.proxies[-1].stop()

    def restart(self) -> None:
        self.proxies.append(self._start())


@pytest.fixture
def remote():
    started = Remote()
    yield started
    for proxy in started.proxies:
        proxy.stop()


def _front(proxy_factory, shims: Path, remote: Remote, path: Path = EXAMPLE,
           url: str | None = None):
    env = {"PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "NOTES_SERVER": SDK_SERVER[1],
           "SEARCH_URL": url or remote.url, "SEARCH_TOKEN": TOKEN}
    front = proxy_factory("--named-server-config", str(path), env=env, wait=False)
    # the start-up check opens every member first (npm's node, the SDK's Python): not 15 s
    front.base = front.expect(r"Status at (http://\S+)/status", timeout=120).group(1)
    return front


def _driver(tmp_path: Path, transport: str, url: str, steps: list) -> subprocess.Popen:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(steps))
    return subprocess.Popen([sys.executable, str(TESTS / "sdk_driver.py"), "--transport",
                             transport, "--target", url, "--timeout", "150", "--script",
                             str(script), "script"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _report(driver: subprocess.Popen) -> dict:
    out, err = driver.communicate(timeout=200)
    assert driver.returncode == 0, err.decode(errors="replace")[-4000:]
    return json.loads(out)


STEPS = [
    {"op": "list", "what": "tools"},
    {"op": "call", "name": "echo", "args": {"text": "from notes"}},
    {"op": "call", "name": "search__echo", "args": {"text": "from search"}},
    {"op": "call", "name": "ev_echo", "args": {"message": "from everything"}},
    {"op": "call", "name": "notes__echo", "args": {"text": "the old name"}},
    {"op": "call", "name": "search__crash", "args": {}},
    {"op": "call", "name": "ev_printEnv", "args": {}},
    {"op": "list", "what": "resources"},
    {"op": "read", "uri": "memo://greeting"},
    {"op": "read", "uri": "test://static/resource/7"},
    {"op": "prompt", "name": "search__greet", "args": {"who": "octocat"}},
    {"op": "list", "what": "prompts"},
    {"op": "call", "name": "search__progress", "args": {"steps": 2}},
]


@pytest.mark.parametrize("transport,path", [("streamable", "/mcp"), ("sse", "/sse")])
def test_the_documented_example_serves_its_members(proxy_factory, tmp_path, shims, remote,
                                                   transport, path):
    # the client's transport, and the remote member's: an SSE client meets the remote's SSE
    speaks = "streamablehttp" if transport == "streamable" else "sse"
    front = _front(proxy_factory, shims, remote, url=remote.url.replace(
        "/mcp", "/mcp" if transport == "streamable" else "/sse"))
    url = front.base + "/servers/assistant" + path
    report = _report(_driver(tmp_path, transport, url, STEPS))
    assert report["session"]["serverInfo"]["name"] == "assistant", report["session"]
    (tools, echo, search, ev, old, crash, print_env, resources, memo, static, greet, prompts,
     progress) = report["script"]
    names = set(tools["names"])
    assert {"echo", "notes__size", "search__echo", "search__size", "ev_echo", "ev_add"} <= names
    assert all(name == "echo" or name.startswith(("notes__", "search__", "ev_"))
               for name in names), names
    hidden = {"notes__echo", "notes__crash", "search__crash", "search__env", "notes__cwd",
              "ev_printEnv", "ev_longRunningOperation"}
    assert not names & hidden, names & hidden
    assert echo == {"text": "from notes", "isError": False}, echo
    assert search == {"text": "from search", "isError": False}, search
    assert "from everything" in ev["text"], ev
    for refused in (old, crash, print_env):  # renamed away; the combined filter; the member's
        assert refused.get("code") == -32602, refused
    # every's 100 resources come 10 a page; the notes' memo on the first (search's own
    # memo://greeting is the same URI: the first member's is served)
    assert resources["pages"] == 10 and resources["next"] is None, resources
    assert resources["names"][0] == "memo://greeting" and len(resources["names"]) == 101
    assert memo["text"], memo
    assert "Resource 7" in static["text"], static
    assert "octocat" in greet["text"], greet
    assert {"notes__greet", "search__greet", "ev_simple_prompt"} <= set(prompts["names"])
    assert progress == {"text": "done", "isError": False}, progress

    # the combined entry's "describe" on the renamed tool, as a raw client reads it
    headers = dict(STREAM_HEADERS)
    init = requests.post(front.base + "/servers/assistant/mcp", headers=headers, timeout=60,
                         json=rpc("initialize", 0, protocolVersion="2025-06-18",
                                  capabilities={}, clientInfo={"name": "t", "version": "0"}))
    headers["Mcp-Session-Id"] = init.headers["Mcp-Session-Id"]
    listed = _answer(requests.post(front.base + "/servers/assistant/mcp", headers=headers,
                                   json=rpc("tools/list", 1), timeout=60))["result"]["tools"]
    described = {tool["name"]: tool.get("description") for tool in listed}
    assert described["echo"] == "Say the text back (from the notes server)."
    assert described["search__echo"] == "Return the text unchanged."

    status = requests.get(front.base + "/status", timeout=10).json()["server_instances"]
    members = status["assistant"]["members"]
    assert set(members) == {"notes", "everything", "search"}, members
    assert members["search"]["kind"] == "remote" and members["search"]["state"] == "up"
    assert members["search"]["transport"] == speaks, members
    assert members["notes"]["kind"] == "per-session"
    assert members["search"]["tools"] >= 15 and members["everything"]["tools"] >= 5, members
    assert TOKEN not in front.stderr()


def test_a_remote_member_goes_and_comes_back(proxy_factory, tmp_path, shims, remote):
    config = json.loads(EXAMPLE.read_text())
    config["mcpServers"]["solo"] = {"servers": ["search"]}  # nothing else to serve it
    path = tmp_path / "servers.json"
    path.write_text(json.dumps(config))
    front = _front(proxy_factory, shims, remote, path)
    marks = tmp_path / "marks"
    marks.mkdir()
    steps = [
        {"op": "call", "name": "search__echo", "args": {"text": "before"}},
        {"op": "mark", "path": str(marks / "stop")},
        {"op": "await", "path": str(marks / "stopped")},
        {"op": "changed", "seen": 1},  # search went: its tools are gone
        {"op": "call", "name": "search__echo", "args": {"text": "while down"}},
        {"op": "call", "name": "echo", "args": {"text": "notes still here"}},
        {"op": "call", "name": "ev_echo", "args": {"message": "everything too"}},
        {"op": "list", "what": "tools"},
        {"op": "mark", "path": str(marks / "restart")},
        {"op": "await", "path": str(marks / "restarted")},
        {"op": "changed", "seen": 2},  # search came back
        {"op": "list", "what": "tools"},
        {"op": "call", "name": "search__echo", "args": {"text": "after"}},
    ]
    # a raw session of "solo" too: its only member is the remote
    solo = front.base + "/servers/solo/mcp"
    init = requests.post(solo, headers=STREAM_HEADERS, timeout=60, json=rpc(
        "initialize", 0, protocolVersion="2025-06-18", capabilities={},
        clientInfo={"name": "t", "version": "0"}))
    assert init.status_code == 200, init.text
    driver = _driver(tmp_path, "streamable", front.base + "/servers/assistant/mcp", steps)

    def status() -> dict:
        return requests.get(front.base + "/status", timeout=10).json()["server_instances"]

    wait_for(lambda: (marks / "stop").exists(), "the driver's stop mark", 90)
    remote.stop()
    wait_for(lambda: status()["assistant"]["members"]["search"]["state"] == "down",
             "search down in assistant", 30)
    wait_for(lambda: status()["solo"]["members"]["search"]["state"] == "down",
             "search down in solo", 30)
    down = status()
    ready = requests.get(front.base + "/readyz", timeout=10)
    metrics = requests.get(front.base + "/metrics", timeout=10).text
    (marks / "stopped").write_text("x")
    wait_for(lambda: (marks / "restart").exists(), "the driver's restart mark", 90)
    remote.restart()
    (marks / "restarted").write_text("x")
    report = _report(driver)
    (before, _, _, gone, down_call, notes, ev, tools_down, _, _, back, tools_back,
     after) = report["script"]
    assert before == {"text": "before", "isError": False}, before
    assert gone >= 1 and back >= 2, report["script"]
    assert down_call.get("code") == -32603, down_call
    assert "member unavailable: search (remote connection lost" in down_call["error"], down_call
    assert notes == {"text": "notes still here", "isError": False}, notes
    assert "everything too" in ev["text"], ev
    assert not any(name.startswith("search__") for name in tools_down["names"]), tools_down
    assert "echo" in tools_down["names"] and "ev_echo" in tools_down["names"], tools_down
    assert "search__echo" in tools_back["names"], tools_back
    assert after == {"text": "after", "isError": False}, after

    members = down["assistant"]["members"]
    assert members["search"]["last_error"].startswith("remote connection lost"), members
    assert members["notes"]["state"] == "up" and members["everything"]["state"] == "up"
    # one member down is not "not ready"; every member down is
    assert ready.status_code == 503, ready.text
    servers = ready.json()["servers"]
    assert servers["assistant"]["ready"] is True, servers
    assert servers["solo"]["ready"] is False, servers
    assert servers["solo"]["reasons"][-1].startswith("no member is up (search: remote "), servers
    assert 'mcp_proxy_combined_member_up{member="search",server="assistant"} 0.0' in metrics
    assert 'mcp_proxy_combined_member_up{member="notes",server="assistant"} 1.0' in metrics
    assert 'mcp_proxy_combined_member_tools{member="notes",server="assistant"}' in metrics

    wait_for(lambda: status()["solo"]["members"]["search"]["state"] == "up", "search back",
             60)
    assert requests.get(front.base + "/readyz", timeout=10).status_code == 200
    assert "Traceback" not in front.stderr()


def test_a_remote_member_down_at_the_start_comes_later(proxy_factory, tmp_path, shims, remote):
    remote.stop()
    front = _front(proxy_factory, shims, remote)
    front.expect(r"the names of its remote member search are not checked now")
    marks = tmp_path / "marks"
    marks.mkdir()
    steps = [
        {"op": "list", "what": "tools"},
        {"op": "call", "name": "search__echo", "args": {"text": "too early"}},
        {"op": "mark", "path": str(marks / "listed")},
        {"op": "await", "path": str(marks / "started")},
        {"op": "changed", "seen": 1, "seconds": 90},  # tried again meanwhile: it came
        {"op": "list", "what": "tools"},
        {"op": "call", "name": "search__echo", "args": {"text": "in time"}},
    ]
    driver = _driver(tmp_path, "streamable", front.base + "/servers/assistant/mcp", steps)
    wait_for(lambda: (marks / "listed").exists(), "the driver's first list", 90)
    remote.restart()
    (marks / "started").write_text("x")
    before, early, _, _, changed, after, called = _report(driver)["script"]
    assert "echo" in before["names"], before
    assert not any(name.startswith("search__") for name in before["names"]), before
    assert early.get("code") == -32603 and "member unavailable: search" in early["error"]
    assert changed >= 1, changed
    assert "search__echo" in after["names"], after
    assert called == {"text": "in time", "isError": False}, called


def _check(path: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", "--check-config",
                           "--named-server-config", str(path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_check_config_with_a_remote_member(tmp_path, remote):
    kit = {"command": SDK_SERVER[0], "args": SDK_SERVER[1:]}
    far = {"url": remote.url, "headers": {"Authorization": f"Bearer {TOKEN}"}}
    path = tmp_path / "clash.json"
    path.write_text(json.dumps({"mcpServers": {
        "kit": kit, "far": far, "both": {"servers": ["kit", "far"],
                                         "prefix": {"kit": "", "far": ""}}}}))
    done = _check(path, {})
    assert done.returncode == 1, done
    assert "combined server 'both': tool 'echo' of far collides with kit's 'echo'" in \
        done.stderr, done.stderr
    fine = tmp_path / "fine.json"
    fine.write_text(json.dumps({"mcpServers": {"kit": kit, "far": far,
                                               "both": {"servers": ["kit", "far"]}}}))
    assert _check(fine, {}).returncode == 0
    remote.stop()  # unreachable now: a warning, as a remote server's at start
    done = _check(fine, {})
    assert done.returncode == 0, done.stderr
    assert "the names of its remote member far are not checked now" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_docs_show_the_example_the_tests_serve():
    text = (TESTS.parent / "docs" / "server-mode.md").read_text()
    section = text[text.index("## Combined servers\n"):]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == json.loads(EXAMPLE.read_text())


# -- the members' state, on its own ----------------------------------------------------------

def _slot(kind: str) -> Slot:
    slot = Slot()
    if kind in ("up", "down"):
        slot.link, slot.down = object(), kind == "down"
    if kind in ("down", "failed"):
        slot.failure = f"{kind} for a reason"
    if kind == "opening":
        slot.lock.acquire()
    return slot


class _Session:
    """What the watch reads of a combined server's session (a ``Combiner``)."""

    def __init__(self, slots: dict) -> None:
        self.slots = slots
        self.names = {"tools/list": SimpleNamespace(owner={f"{m}__t": (m, "t") for m in slots})}
        self.closed = SimpleNamespace(rawlink=lambda _: None)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b"]),
                                st.sampled_from(["up", "down", "failed", "opening", "new"])),
                max_size=4),
       st.dictionaries(st.sampled_from(["a", "b"]), st.just(["spawn failed 1 s ago: x"])))
def test_member_states_and_readiness(sessions, own):
    supervisor = SimpleNamespace(
        settings=SimpleNamespace(servers={"c": SimpleNamespace(members=("a", "b"))}),
        remotes={}, mode=lambda member: "per-session",
        problems=lambda member, now: list(own.get(member, [])))
    watch = CombinedWatch(supervisor)
    for held in sessions:
        watch.track("c", _Session({m: _slot(k) for m, k in held.items()}))
    members = watch.members("c", 0.0)
    for member, shown in members.items():
        kinds = [held.get(member) for held in sessions]
        assert shown["state"] in ("up", "down", "starting", "idle")
        assert (shown["state"] == "up") == ("up" in kinds), (kinds, shown)
        if shown["state"] == "idle":
            assert shown["last_error"] is None and member not in own
        if shown["state"] == "down":
            assert shown["last_error"]
        assert shown["tools"] == int(any(member in held for held in sessions))
    problems = watch.problems("c", 0.0)
    assert bool(problems) == all(shown["state"] == "down" for shown in members.values())
    assert all("\n" not in line and len(line) <= 500 for line in problems)

