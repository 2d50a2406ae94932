"""Structured logs (``--log-format json``) and the audit trail (``--log-calls``).

The formatter alone with Hypothesis (odd characters never break a line, secrets stay
blanked); the audit line of real calls through the real CLI, driven by the official SDK
client, on a per-session child and on a shared one; raw requests for a server that dies
mid-call, a 2026-07-28 request, the config file's ``"audit"`` and the caller's token digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import sys
import time

import gevent
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from test_modern import modern, post

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    SDK_SERVER,
    STREAM_HEADERS,
    GunicornProcess,
    rpc,
    run_driver,
)
from mcp_proxy.client.run import Redact
from mcp_proxy.core.call_spans import outcome_of
from mcp_proxy.core.jsonrpc import Message, error_message
from mcp_proxy.core.link import Link
from mcp_proxy.core.log_format import JsonFormatter
from mcp_proxy.server.audit import AuditMeter, as_text
from mcp_proxy.server.metrics import Latency

ODD = st.text(st.characters(codec="utf-8") | st.sampled_from("\n\r\u2028\u2029\x00\udc80\"\\{}%"))


def record(message: str, *args, **extra) -> logging.LogRecord:
    made = logging.LogRecord("mcp_proxy.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


@settings(max_examples=200, deadline=None, database=None)
@given(message=ODD, arg=ODD, session=st.none() | ODD)
def test_a_json_line_is_one_parseable_line_whatever_the_message(message, arg, session):
    line = JsonFormatter().format(record(message.replace("%", "%%") + " %s", arg,
                                         session=session, fields={"name": arg}))
    assert "\n" not in line and len(line.splitlines()) == 1 and line.isascii()
    entry = json.loads(line)
    assert entry["message"] == message + " " + arg
    assert entry["level"] == "WARNING" and entry["logger"] == "mcp_proxy.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert entry.get("session") == session and entry["name"] == arg


def test_a_traceback_is_a_field_and_redaction_still_blanks_secrets():
    formatter, redact = JsonFormatter(), Redact(["s3cret-value"])
    try:
        raise ValueError("token s3cret-value refused")
    except ValueError:
        failed = logging.LogRecord("mcp_proxy", logging.ERROR, __file__, 1,
                                   "sent %s", ("s3cret-value",), sys.exc_info())
    assert redact.filter(failed)
    line = formatter.format(failed)
    assert "s3cret" not in line
    entry = json.loads(line)
    assert entry["message"] == "sent ***" and "ValueError: token *** refused" in entry["exception"]


def meter(arguments: bool = False) -> AuditMeter:
    tally = dict.fromkeys(("request", "notification", "response", "bytes"), 0)
    return AuditMeter(dict(tally), dict(tally), Latency(), server="files", arguments=arguments)


def call(request_id, method="tools/call", **params) -> Message:
    return Message({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def answer(request_id, **result) -> Message:
    return Message({"jsonrpc": "2.0", "id": request_id, "result": result})


def test_each_outcome_of_an_audited_call(caplog):
    audit, link = meter(), Link("session")
    audit.watch(link, "abc", "10.0.0.1")
    with caplog.at_level(logging.INFO, "mcp_proxy.audit"):
        audit.client_to_server(call(1, name="echo", arguments={"text": "private"}))
        audit.client_to_server(call(2, "resources/read", uri="file:///etc/x y"))
        audit.client_to_server(call(3, "prompts/get", name="greet"))
        audit.client_to_server(call(4, name="slow"))
        audit.client_to_server(call(5, name="held"))
        audit.client_to_server(call(6, "tools/list"))  # not audited
        audit.server_to_client(answer(1, content=[]))
        audit.server_to_client(error_message(2, -32602, "no such resource"))
        audit.server_to_client(answer(3, isError=True))
        audit.client_to_server(Message({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                        "params": {"requestId": 4}}))
        audit.server_to_client(answer(6, tools=[]))
        link.close("server process exited with code 3")
        gevent.sleep(0.01)  # the end of the link is seen in a callback
    found = {r.fields["name"]: r.fields for r in caplog.records}
    assert [r.fields["method"] for r in caplog.records] == [
        "tools/call", "resources/read", "prompts/get", "tools/call", "tools/call"]
    assert found["echo"]["outcome"] == "ok" and found["echo"]["bytes_out"] > 0
    assert found["file:///etc/x y"]["outcome"] == "error -32602"
    assert found["greet"]["outcome"] == "tool error"
    assert found["slow"]["outcome"] == "cancelled"
    assert found["held"] == {**found["held"], "outcome": "no answer", "bytes_out": 0,
                             "reason": "server process exited with code 3"}
    assert all(r.session == "abc" and r.server == "files" for r in caplog.records)
    assert "private" not in caplog.text and "arguments" not in found["echo"]
    assert 'name="file:///etc/x y"' in caplog.records[1].getMessage()


def test_a_request_id_used_twice_loses_no_audit_line(caplog):
    """A client that reuses an id in flight: the first call is logged as unanswered (which
    call an answer ends cannot be told), never dropped from the trail."""
    audit, link = meter(), Link("session")
    audit.watch(link, "abc", "10.0.0.1")
    with caplog.at_level(logging.INFO, "mcp_proxy.audit"):
        audit.client_to_server(call(1, name="first"))
        audit.client_to_server(call(1, name="second"))
        audit.server_to_client(answer(1, content=[]))
    found = [(r.fields["name"], r.fields["outcome"], r.fields.get("reason"))
             for r in caplog.records]
    assert found == [("first", "no answer", "the client sent another request with its id"),
                     ("second", "ok", None)]


def test_arguments_only_when_asked(caplog):
    audit = meter(arguments=True)
    with caplog.at_level(logging.INFO, "mcp_proxy.audit"):
        audit.client_to_server(call("a", name="echo", arguments={"text": "x" * 40000}))
        audit.server_to_client(answer("a", content=[]))
    assert caplog.records[0].fields["arguments"] == {"text": "x" * 40000}  # a large one too
    assert outcome_of(answer(1, isError=False)) == "ok"
    assert outcome_of(answer(1, requestState="sealed")) == "input required"


@settings(max_examples=200, deadline=None, database=None)
@given(name=ODD)
def test_a_text_audit_value_reads_back_whatever_it_holds(name):
    text = as_text(name)  # a plain word, or a JSON string: one line, ASCII
    assert text.isascii() and len(text.splitlines()) == 1
    assert (json.loads(text) if text[:1] == '"' else text) == name
    assert text[:1] == '"' or re.fullmatch(r"[\w./:@+-]+", text, re.ASCII)


def test_call_arguments_without_an_audit_are_named(proxy_factory):
    proxy = proxy_factory("--log-call-arguments", "--", *RAW_SERVER)
    proxy.expect(r'WARNING mcp_proxy: --log-call-arguments does nothing without --log-calls '
                 r'or "audit": true')


def audits(proxy, count: int, timeout: float = 15.0) -> list[dict]:
    """The proxy's audit lines (JSON) once there are ``count`` of them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(line) for line in list(proxy.lines) if '"mcp_proxy.audit"' in line]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, proxy.stderr()
        time.sleep(0.05)


def every_line_is_json(proxy) -> None:
    for line in list(proxy.lines):
        assert isinstance(json.loads(line), dict), line


@pytest.mark.parametrize("shared", [False, True])
def test_sdk_calls_are_audited_without_their_arguments(proxy_factory, shared):
    proxy = proxy_factory("--log-format", "json", "--log-calls",
                          *(["--shared-child"] if shared else []), "--", *SDK_SERVER)
    report = run_driver("streamable", proxy.base + "/mcp", "echo", "fail", "resources",
                        "prompts")
    assert "error" not in report["echo"], report
    lines = audits(proxy, 4)
    by_name = {line["name"]: line for line in lines}
    assert set(by_name) == {"echo", "fail", "memo://greeting", "greet"}, lines
    echo = by_name["echo"]
    assert echo["method"] == "tools/call" and echo["outcome"] == "ok"
    assert echo["server"] == "default" and echo["caller"] == "127.0.0.1"
    assert len(echo["session"]) == 32 and echo["duration_ms"] >= 0
    assert echo["bytes_in"] > 0 and echo["bytes_out"] > 0
    assert by_name["fail"]["outcome"] == "tool error"
    assert by_name["memo://greeting"]["method"] == "resources/read"
    assert by_name["greet"]["method"] == "prompts/get"
    audit_text = "\n".join(json.dumps(line) for line in lines)
    assert "arguments" not in audit_text and "hello" not in audit_text
    assert "boom" not in audit_text and "octocat" not in audit_text
    proxy.expect(r'"logger": "mcp_proxy\.server_stderr", "message": "[^"]*fail')  # its stderr
    every_line_is_json(proxy)


def test_arguments_with_log_call_arguments_over_sse(proxy_factory):
    proxy = proxy_factory("--log-format", "json", "--log-calls", "--log-call-arguments",
                          "--shared-child", "--", *SDK_SERVER)
    run_driver("sse", proxy.base + "/sse", "echo", "prompts")
    by_name = {line["name"]: line for line in audits(proxy, 2)}
    assert by_name["echo"]["arguments"] == {"text": "hello"}
    assert by_name["greet"]["arguments"] == {"who": "octocat"}


def open_session(base: str, **headers: str) -> dict:
    answer = requests.post(base + "/mcp", json=rpc("initialize", 0, **INIT_PARAMS),
                           headers={**STREAM_HEADERS, **headers}, timeout=15)
    session = {**STREAM_HEADERS, **headers, "Mcp-Session-Id": answer.headers["Mcp-Session-Id"]}
    requests.post(base + "/mcp", json=rpc("notifications/initialized", None), headers=session,
                  timeout=15)
    return session


def crash(base: str, session: dict) -> dict:
    return requests.post(base + "/mcp", json=rpc("tools/call", 2, name="crash", arguments={}),
                         headers=session, timeout=15).json()


def test_a_server_that_dies_mid_call(proxy_factory):
    proxy = proxy_factory("--log-format", "json", "--log-calls", "--", *RAW_SERVER)
    assert crash(proxy.base, open_session(proxy.base))["error"]["code"] == -32000
    (line,) = audits(proxy, 1)
    assert line["name"] == "crash" and line["outcome"] == "no answer"
    assert line["reason"] == "server process exited with code 3" and line["bytes_out"] == 0


def test_a_shared_server_that_dies_mid_call(proxy_factory):
    proxy = proxy_factory("--log-format", "json", "--log-calls", "--shared-child", "--",
                          *RAW_SERVER)
    code = crash(proxy.base, open_session(proxy.base))["error"]["code"]
    (line,) = audits(proxy, 1)
    assert line["name"] == "crash" and line["outcome"] == f"error {code}"


def test_text_lines_name_the_key_by_its_id(proxy_factory):
    token = "t0ken-never-logged"
    proxy = proxy_factory("--log-calls", "--auth-token", token, "--", *RAW_SERVER)
    session = open_session(proxy.base, Authorization=f"Bearer {token}")
    requests.post(proxy.base + "/mcp", json=rpc("tools/call", 3, name="echo",
                                                arguments={"text": "s3cret arg"}),
                  headers=session, timeout=15)
    digest = hashlib.sha256(token.encode()).hexdigest()[:12]  # a key's id, unless named
    match = proxy.expect(r"INFO mcp_proxy\.audit: call method=tools/call name=echo outcome=ok "
                         r"duration_ms=[\d.]+ caller=\"127\.0\.0\.1 key:(\w+)\" ")
    assert match.group(1) == digest
    assert token not in proxy.stderr() and "s3cret" not in proxy.stderr()


def test_a_modern_request_is_audited_without_a_session(proxy_factory):
    proxy = proxy_factory("--log-format", "json", "--log-calls", "--", *RAW_SERVER)
    message = modern("tools/call", 7, name="echo", arguments={"text": "hi"})
    assert post(proxy.base, message).status_code == 200
    assert post(proxy.base, modern("tools/call", 8, name="mrtr", arguments={})).ok
    echo, mrtr = audits(proxy, 2)
    assert echo["name"] == "echo" and echo["outcome"] == "ok" and "session" not in echo
    assert echo["caller"] == "127.0.0.1"
    assert mrtr["name"] == "mrtr" and mrtr["outcome"] == "input required"


def test_audit_per_server_in_the_config_file(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    entry = {"command": RAW_SERVER[0], "args": RAW_SERVER[1:]}
    config.write_text(json.dumps({"mcpServers": {"watched": {**entry, "audit": True},
                                                 "quiet": entry}}))
    proxy = proxy_factory("--log-format", "json", "--named-server-config", str(config))
    for name in ("quiet", "watched"):
        base = f"{proxy.base}/servers/{name}"
        requests.post(base + "/mcp", json=rpc("tools/call", 1, name="echo",
                                              arguments={"text": name}),
                      headers=open_session(base), timeout=15)
    (line,) = audits(proxy, 1)
    assert line["server"] == "watched"
    assert len(audits(proxy, 1)) == 1  # the quiet server's call, answered before, has none


def test_a_bad_audit_value_is_one_clear_line(proxy_factory, tmp_path):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {"x": {"command": "true", "audit": "yes"}}}))
    proxy = proxy_factory("--named-server-config", str(config), wait=False)
    assert proxy.proc.wait(15) == 1
    assert proxy.stderr().strip().endswith("$.mcpServers.x.audit: expected true or false, "
                                           "got a string")
    assert "Traceback" not in proxy.stderr()


def test_client_mode_logs_json_on_stderr_and_only_protocol_on_stdout(clients):
    client = clients("--log-format", "json", "--start-timeout", "1", "-H", "X-Api-Key",
                     "k3y-value", "http://127.0.0.1:9/sse?token=s3cret-query")
    client.send(rpc("initialize", 0, **INIT_PARAMS))
    assert "cannot reach" in client.recv()["error"]["message"]  # stdout: JSON-RPC only
    assert client.proc.wait(15) == 1
    lines = [json.loads(line) for line in client.stderr().splitlines()]
    assert any("cannot reach http://127.0.0.1:9/sse?***" in line["message"] for line in lines)
    assert "s3cret" not in client.stderr() and "k3y" not in client.stderr()


def test_a_forwarded_call_is_audited_once_by_the_owner(proxy_factory, redis_server):
    args = ("--redis-url", redis_server.url, "--log-format", "json", "--log-calls", "--",
            *RAW_SERVER)
    owner, receiver = proxy_factory(*args), proxy_factory(*args)
    for proxy in (owner, receiver):
        proxy.expect("listening on Redis")
    session = open_session(owner.base)
    answer = requests.post(receiver.base + "/mcp", json=rpc("tools/call", 4, name="echo",
                                                            arguments={"text": "hi"}),
                           headers=session, timeout=15)
    assert answer.json()["result"]["content"][0]["text"] == "hi"
    (line,) = audits(owner, 1)
    assert line["session"] == session["Mcp-Session-Id"] and line["outcome"] == "ok"
    assert line["worker"] == session["Mcp-Session-Id"][:8]  # the owner's tag, on every line
    assert line["caller"] == "127.0.0.1"  # who opened the session, on the owner
    assert not [x for x in receiver.lines if "mcp_proxy.audit" in x]
    every_line_is_json(receiver)
    assert requests.delete(receiver.base + "/mcp", headers=session, timeout=15).ok
    ended = owner.expect(r'"message": "streamable:\w+: session ended.*')
    assert json.loads(ended.string)["session"] == session["Mcp-Session-Id"]


def test_gunicorn_takes_the_flags_in_mcp_proxy_args():
    with GunicornProcess(f"--log-format json --log-calls -- {shlex.join(RAW_SERVER)}") as app:
        session = open_session(app.base)
        requests.post(app.base + "/mcp", json=rpc("tools/call", 5, name="echo",
                                                  arguments={"text": "hi"}),
                      headers=session, timeout=15)
    ours = [json.loads(line) for line in app.proc.stderr.read().decode().splitlines()
            if line.startswith("{")]  # gunicorn's own lines keep gunicorn's format
    (line,) = [x for x in ours if x["logger"] == "mcp_proxy.audit"]
    assert line["name"] == "echo" and line["outcome"] == "ok"
