"""The HTTP surface of server mode, driven with plain requests against the real CLI."""

from __future__ import annotations

import json
import re
import threading

import pytest
import requests

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    STREAM_HEADERS,
    SseReader,
    open_sse,
    open_streamable,
    rpc,
)

JSON = {"Content-Type": "application/json"}


# --- HTTP+SSE ---------------------------------------------------------------------------

def test_sse_endpoint_event_and_headers(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    headers = reader.response.headers
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"].startswith("no-cache")
    assert headers["X-Accel-Buffering"] == "no"
    assert re.fullmatch(r".*/messages/\?session_id=[0-9a-f]{32}", endpoint)
    reader.close()


def test_sse_relays_requests_with_ids_untouched(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    for request_id in (0, "abc", "1", 1):
        posted = requests.post(endpoint, json=rpc("ping", request_id), timeout=10)
        assert (posted.status_code, posted.text) == (202, "Accepted")
        answer = reader.next_message()
        assert answer == {"jsonrpc": "2.0", "id": request_id, "result": {}}
    posted = requests.post(endpoint, json=rpc("no/such/method", 9), timeout=10)
    assert posted.status_code == 202
    assert reader.next_message()["error"]["code"] == -32601
    reader.close()


def test_sse_keepalive_pings(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    requests.post(endpoint, json=rpc("ping", 1), timeout=10)
    reader.next_message()
    reader.response.raw.read(0)
    line = next(reader._lines)
    while not line:
        line = next(reader._lines)
    assert line.startswith(b": ping")  # --keepalive 1
    reader.close()


@pytest.mark.parametrize("query, status", [
    ("", 400), ("?session_id=not-a-uuid", 400), ("?session_id=" + "0" * 32, 404)])
def test_sse_post_session_errors(raw_proxy, query, status):
    posted = requests.post(raw_proxy.base + "/messages/" + query, json=rpc("ping"), timeout=10)
    assert posted.status_code == status
    assert posted.text


@pytest.mark.parametrize("body", [
    b"{not json", b"\xff\xfe", b'{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}',
    b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}', b'{"jsonrpc":"2.0","id":1e400,"method":"p"}',
    b"[" * 50000 + b"]" * 50000, b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', b"42",
])
def test_bad_bodies_are_4xx_with_a_jsonrpc_error(raw_proxy, body):
    reader, endpoint = open_sse(raw_proxy.base)
    posted = requests.post(endpoint, data=body, headers=JSON, timeout=10)
    assert posted.status_code == 400
    assert posted.json()["error"]["code"] in (-32700, -32600)
    mcp = requests.post(raw_proxy.base + "/mcp", data=body, headers=STREAM_HEADERS, timeout=10)
    assert mcp.status_code == 400
    assert mcp.json()["error"]["code"] in (-32700, -32600)
    reader.close()


def test_sse_wrong_content_type_and_method(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    posted = requests.post(endpoint, data=b"{}", headers={"Content-Type": "text/plain"},
                           timeout=10)
    assert posted.status_code == 400
    assert requests.put(endpoint, data=b"{}", timeout=10).status_code == 405
    assert requests.delete(raw_proxy.base + "/sse", timeout=10).status_code == 405
    reader.close()


def test_body_limit(proxy_factory):
    proxy = proxy_factory("--max-body-size", "64k", "--", *RAW_SERVER)
    reader, endpoint = open_sse(proxy.base)
    big = json.dumps(rpc("ping", 1, pad="x" * 70000))
    assert requests.post(endpoint, data=big, headers=JSON, timeout=10).status_code == 413
    chunked = requests.post(endpoint, data=iter([big.encode()]), headers=JSON, timeout=10)
    assert chunked.status_code == 413
    small = requests.post(endpoint, data=json.dumps(rpc("ping", 2)), headers=JSON, timeout=10)
    assert small.status_code == 202
    assert reader.next_message()["id"] == 2
    assert requests.post(proxy.base + "/mcp", data=big, headers=STREAM_HEADERS,
                         timeout=10).status_code == 413
    reader.close()


def test_oversized_url_and_headers(raw_proxy):
    assert requests.get(raw_proxy.base + "/sse?" + "x" * 10000, timeout=10).status_code == 414
    huge = {"X-Big": "y" * 70000}
    assert requests.get(raw_proxy.base + "/status", headers=huge, timeout=10).status_code == 431


# --- Streamable HTTP ---------------------------------------------------------------------

def initialize(base: str, path: str = "/mcp") -> str:
    answer = requests.post(base + path, json=rpc("initialize", 1, **INIT_PARAMS),
                           headers=STREAM_HEADERS, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["result"]["protocolVersion"] == "2025-06-18"
    session_id = answer.headers["Mcp-Session-Id"]
    assert re.fullmatch(r"[\x21-\x7e]+", session_id)
    return session_id


def call_as_stream(base: str, sid: str, request_id: int, tool: str,
                   arguments: dict) -> tuple[dict, SseReader]:
    """POST a tools/call that must be answered as an event stream: the session's headers
    and a reader of that stream."""
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": sid}
    answer = requests.post(base + "/mcp", json=rpc("tools/call", request_id, name=tool,
                           arguments=arguments), headers=headers, stream=True, timeout=10)
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    return headers, SseReader(answer)


def test_streamable_session_lifecycle(raw_proxy):
    base = raw_proxy.base
    sid = initialize(base)
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    note = requests.post(base + "/mcp", json=rpc("notifications/initialized", None),
                         headers=headers, timeout=10)
    assert (note.status_code, note.content) == (202, b"")
    answer = requests.post(base + "/mcp/", json=rpc("tools/call", "t1", name="echo",
                                                    arguments={"text": "hi"}),
                           headers=headers, timeout=10)
    assert answer.json() == {"jsonrpc": "2.0", "id": "t1",
                             "result": {"content": [{"type": "text", "text": "hi"}]}}
    stream = requests.get(base + "/mcp", headers=headers, stream=True, timeout=10)
    assert stream.status_code == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    second = requests.get(base + "/mcp", headers=headers, stream=True, timeout=10)
    assert second.status_code == 409
    stream.close()
    assert requests.delete(base + "/mcp", headers=headers, timeout=10).status_code == 200
    gone = requests.post(base + "/mcp", json=rpc("ping", 5), headers=headers, timeout=10)
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "Session not found"


@pytest.mark.parametrize("headers, status", [
    ({"Accept": "application/json", "Content-Type": "application/json"}, 406),
    ({"Accept": "application/json, text/event-stream", "Content-Type": "text/plain"}, 415),
    ({**STREAM_HEADERS, "Mcp-Session-Id": "nope"}, 404),
    ({**STREAM_HEADERS, "MCP-Protocol-Version": "2099-01-01"}, 400),
])
def test_streamable_post_rejections(raw_proxy, headers, status):
    answer = requests.post(raw_proxy.base + "/mcp", data=json.dumps(rpc("initialize", 1,
                           **INIT_PARAMS)), headers=headers, timeout=10)
    assert answer.status_code == status
    assert "error" in answer.json()


def test_streamable_needs_a_session(raw_proxy):
    base = raw_proxy.base
    missing = requests.post(base + "/mcp", json=rpc("ping", 1), headers=STREAM_HEADERS,
                            timeout=10)
    assert missing.status_code == 400
    assert requests.get(base + "/mcp", headers={"Accept": "text/event-stream"},
                        timeout=10).status_code == 400
    assert requests.get(base + "/mcp", headers={"Accept": "application/json"},
                        timeout=10).status_code == 406
    assert requests.delete(base + "/mcp", headers={"Mcp-Session-Id": "x"},
                           timeout=10).status_code == 404
    assert requests.put(base + "/mcp", timeout=10).status_code == 405


def test_streamable_answers_as_a_stream_when_the_server_talks_first(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--huge-line", "10")
    _, reader = call_as_stream(proxy.base, initialize(proxy.base), 2, "echo", {"text": "x"})
    assert reader.next_message()["method"] == "notifications/message"
    assert reader.next_message()["id"] == 2
    with pytest.raises(EOFError):
        reader.next_event()  # the stream ends after the response


# --- guard, auth, CORS, status ----------------------------------------------------------

def test_dns_rebinding_protection(raw_proxy):
    base = raw_proxy.base
    assert requests.get(base + "/sse", headers={"Host": "evil.example"},
                        timeout=10).status_code == 421
    assert requests.post(base + "/mcp", headers={**STREAM_HEADERS, "Origin": "http://evil.example"},
                         json=rpc("initialize", 1, **INIT_PARAMS), timeout=10).status_code == 403
    ok = requests.post(base + "/mcp", headers={**STREAM_HEADERS,
                       "Origin": "http://localhost:5173"}, json=rpc("initialize", 1,
                       **INIT_PARAMS), timeout=10)
    assert ok.status_code == 200


def test_allow_origin_and_cors(proxy_factory):
    proxy = proxy_factory("--allow-origin", "https://app.example", *RAW_SERVER)
    origin = {"Origin": "https://app.example"}
    preflight = requests.options(proxy.base + "/mcp", headers={
        **origin, "Access-Control-Request-Method": "POST"}, timeout=10)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    answer = requests.post(proxy.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                           headers={**STREAM_HEADERS, **origin}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Expose-Headers"] == "Mcp-Session-Id"
    assert requests.get(proxy.base + "/status", headers={"Origin": "https://other.example"},
                        timeout=10).status_code == 403


def test_bearer_token(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, env={"MCP_PROXY_AUTH_TOKEN": "s3cret"})
    denied = requests.get(proxy.base + "/sse", timeout=10)
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    reader, endpoint = open_sse(proxy.base, headers={"Authorization": "Bearer s3cret"})
    assert requests.post(endpoint, json=rpc("ping"), timeout=10).status_code == 401
    assert requests.post(endpoint, json=rpc("ping"), timeout=10,
                         headers={"Authorization": "Bearer s3cret"}).status_code == 202
    assert requests.get(proxy.base + "/status", timeout=10).status_code == 401  # a key too
    assert requests.get(proxy.base + "/status", timeout=10,
                        headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert "s3cret" not in proxy.stderr()
    reader.close()


def test_status(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    requests.post(endpoint, json=rpc("ping"), timeout=10)
    reader.next_message()
    status = requests.get(raw_proxy.base + "/status", timeout=10).json()
    assert {"api_last_activity", "active_sse_connections", "server_instances"} <= set(status)
    assert status["active_sse_connections"] == 1
    assert status["sessions"] == 1
    assert status["session_details"][0]["child"]["state"] == "running"
    reader.close()


# --- relay semantics over raw HTTP --------------------------------------------------------

def test_two_sessions_same_ids_no_crosstalk(raw_proxy):
    first, first_url = open_sse(raw_proxy.base)
    second, second_url = open_sse(raw_proxy.base)
    for n in range(5):
        for url, text in ((first_url, f"one-{n}"), (second_url, f"two-{n}")):
            requests.post(url, json=rpc("tools/call", n, name="echo", arguments={"text": text}),
                          timeout=10)
    got_first = [first.next_message() for _ in range(5)]
    got_second = [second.next_message() for _ in range(5)]
    assert [m["result"]["content"][0]["text"] for m in got_first] == [f"one-{n}" for n in range(5)]
    assert [m["result"]["content"][0]["text"] for m in got_second] == [f"two-{n}"
                                                                      for n in range(5)]
    first.close()
    second.close()


def test_cancelled_request_ends_its_post_stream(proxy_factory):
    proxy = proxy_factory("--", *RAW_SERVER, "--slow", "1")
    sid = initialize(proxy.base)
    headers = {**STREAM_HEADERS, "Mcp-Session-Id": sid}
    answers = []
    call = threading.Thread(target=lambda: answers.append(requests.post(
        proxy.base + "/mcp", json=rpc("tools/call", 7, name="echo", arguments={"text": "x"}),
        headers=headers, timeout=20)))
    call.start()
    note = rpc("notifications/cancelled", None, requestId=7, reason="user")
    while call.is_alive() and not answers:
        requests.post(proxy.base + "/mcp", json=note, headers=headers, timeout=10)
        call.join(0.2)
    call.join(10)
    body = answers[0].text
    assert '"code":-32800' in body.replace(" ", "") and '"id":7' in body.replace(" ", "")
    proxy.expect("dropped the server's answer")  # the child's late answer goes nowhere


def test_server_to_client_request_over_streamable(raw_proxy):
    headers, reader = call_as_stream(raw_proxy.base, initialize(raw_proxy.base), 3, "ask",
                                     {"prompt": "hi"})
    ask = reader.next_message()
    assert ask["method"] == "sampling/createMessage" and ask["id"] == "srv-1"
    reply = {"jsonrpc": "2.0", "id": "srv-1", "result": {"role": "assistant", "model": "m",
             "content": {"type": "text", "text": "sampled"}}}
    posted = requests.post(raw_proxy.base + "/mcp", json=reply, headers=headers, timeout=10)
    assert posted.status_code == 202
    final = reader.next_message()
    assert final["id"] == 3 and "sampled" in final["result"]["content"][0]["text"]


def test_server_to_client_request_over_sse(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    requests.post(endpoint, json=rpc("tools/call", 1, name="ask"), timeout=10)
    ask = reader.next_message()
    assert ask["method"] == "sampling/createMessage"
    requests.post(endpoint, json={"jsonrpc": "2.0", "id": ask["id"], "result": {"x": 1}},
                  timeout=10)
    assert json.loads(reader.next_message()["result"]["content"][0]["text"]) == {"x": 1}
    reader.close()


def test_simultaneous_first_messages_start_one_child(raw_proxy):
    reader, endpoint = open_sse(raw_proxy.base)
    posts = [threading.Thread(target=requests.post, args=(endpoint,),
                              kwargs={"json": rpc("ping", n), "timeout": 10}) for n in range(8)]
    for post in posts:
        post.start()
    for post in posts:
        post.join(10)
    assert sorted(reader.next_message()["id"] for _ in range(8)) == list(range(8))
    assert requests.get(raw_proxy.base + "/status", timeout=10).json()["children_started"] == 1
    reader.close()


def test_large_messages_are_judged_as_small_ones_are(raw_proxy):
    """Big bodies and answers (parsed by orjson) keep their bytes; valid JSON that orjson
    refuses or reads differently and invalid JSON get the 400 a small body gets."""
    headers = open_streamable(raw_proxy.base)
    url = raw_proxy.base + "/mcp"
    text = 'é"\\x\u4e2d' * 100000  # escapes and multi-byte characters, ~1.6 MiB in JSON
    answer = requests.post(url, json=rpc("tools/call", 1, name="echo", arguments={"text": text}),
                           headers=headers, timeout=30)
    assert answer.json()["result"]["content"][0]["text"] == text
    pad = b'"pad":"' + b"x" * 100000 + b'"'
    odd = (b'{"jsonrpc":"2.0","id":18446744073709551616,"method":"nope","params":{"s":"\\ud800",'
           + pad + b"}}")
    for body in (odd, odd.replace(pad + b"}}", b'"x":1}}')):  # large, and small
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        assert answer.status_code == 400  # an id a JavaScript peer would read rounded
        assert answer.json()["error"]["code"] == -32600
    answer = requests.post(url, data=odd.replace(b"18446744073709551616", b"5"),
                           headers=headers, timeout=30)
    assert answer.status_code == 400  # a lone surrogate, which parsers read differently
    assert "lone surrogate" in answer.json()["error"]["message"]
    for bad, says in ((b'{"jsonrpc":"2.0","id":2,"method":"x","params":{"v":NaN,' + pad + b"}}",
                       "NaN is not valid JSON"),
                      (b'{"jsonrpc":"2.0","id":3,"method":"x","params":{"v":"\xff",' + pad + b"}}",
                       "not UTF-8")):
        refused = requests.post(url, data=bad, headers=headers, timeout=30)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == -32700 and says in error["message"]
    reader, endpoint = open_sse(raw_proxy.base)
    requests.post(endpoint, json=rpc("tools/call", 4, name="echo", arguments={"text": text}),
                  timeout=30)
    assert reader.next_message()["result"]["content"][0]["text"] == text
    reader.close()
