"""No message whose meaning differs between JSON parsers is relayed (issue 18).

The attack: ``jsonrpc.with_id`` spliced the new id over the *first* ``"id"`` of the bytes while
the proxy read the *last*, so a request with its id twice reached a shared child under a
child id another client's request held, and the child's answer went to that client. Now
``parse`` refuses a duplicate member (any depth, any spelling) and a lone surrogate with
-32600, on both of its paths (the standard library below 32 KiB, orjson above), and integer
ids must lie within ±(2^53-1); every rewrite's bytes carry the proxy's id and no other.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import requests
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_lifecycle import wait_until
from test_shared import Client, recorded, tool

from conftest import RAW_SERVER, STREAM_HEADERS, open_sse, rpc
from mcp_proxy.core import jsonrpc, strict_json
from mcp_proxy.errors import MessageError

BOUNDED = settings(max_examples=150, deadline=None, database=None)


def _pairs_hook(pairs):
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate member in {names}"
    return dict(pairs)


def strict_loads(raw: bytes):
    """json.loads that fails on a duplicate member: what reached the peer was unambiguous."""
    return json.loads(raw, object_pairs_hook=_pairs_hook)


# -- through the real CLI -------------------------------------------------------------------


def _attack(held_child_id: int) -> bytes:
    return (b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo",'
            b'"arguments":{"text":"injected"}},"id":%d}' % (held_child_id, held_child_id))


def test_the_original_attack_is_refused_on_a_shared_child(proxy_factory, tmp_path):
    record = tmp_path / "sent.jsonl"
    proxy = proxy_factory("--shared-child", "--", *RAW_SERVER, "--record", str(record))
    victim, attacker = Client(proxy.base), Client(proxy.base)
    victim.post(tool("hold", 1))  # in flight on the child until cancelled
    wait_until(lambda: any(m.get("method") == "tools/call" for m in recorded(record)))
    held = next(m["id"] for m in recorded(record) if m.get("method") == "tools/call")
    refused = requests.post(attacker.endpoint, data=_attack(held), timeout=10,
                            headers={"Content-Type": "application/json"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == -32600
    assert 'duplicate member "id"' in refused.json()["error"]["message"]
    # the child is still serving both, and the victim's next answer is its own
    assert victim.call(tool("echo", 2, text="mine"))["result"]["content"][0]["text"] == "mine"
    assert attacker.call(tool("echo", 3, text="ok"))["result"]["content"][0]["text"] == "ok"
    assert not any("injected" in json.dumps(m) for m in victim.others)
    for line in record.read_bytes().splitlines():
        assert b"injected" not in line
        strict_loads(line)  # every line the child read had each member once
    victim.close()
    attacker.close()


def test_stateless_refuses_the_attack_with_invalid_request(proxy_factory):
    proxy = proxy_factory("--stateless", "--", *RAW_SERVER)
    answer = requests.post(proxy.base + "/mcp", data=_attack(2), headers=STREAM_HEADERS,
                           timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == -32600


AMBIGUOUS_SERVER = textwrap.dedent('''
    import json, sys
    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue
        rid = json.dumps(message["id"])
        if message["method"] == "initialize":
            out = {"jsonrpc": "2.0", "id": message["id"], "result": {
                "protocolVersion": message["params"]["protocolVersion"], "capabilities": {},
                "serverInfo": {"name": "ambiguous", "version": "0"}}}
            text = json.dumps(out)
        elif message["params"]["name"] == "twice":  # which result is the answer?
            text = ('{"jsonrpc":"2.0","id":%s,"result":{"content":[]},'
                    '"result":{"content":[{"type":"text","text":"other"}]}}' % rid)
        else:  # a lone surrogate: kept, replaced or refused, by parser
            text = ('{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text",'
                    '"text":"\\\\udc00"}]}}' % rid)
        sys.stdout.write(text + "\\n")
        sys.stdout.flush()
''')


@pytest.mark.parametrize("name, why", [("twice", 'duplicate member "result"'),
                                       ("surrogate", "lone surrogate")])
def test_an_ambiguous_answer_of_the_server_is_refused_and_its_request_answered(
        proxy_factory, tmp_path, name, why):
    server = tmp_path / "ambiguous.py"
    server.write_text(AMBIGUOUS_SERVER)
    proxy = proxy_factory("--", sys.executable, str(server))
    reader, endpoint = open_sse(proxy.base)
    requests.post(endpoint, json=rpc("initialize", 0, protocolVersion="2025-06-18"),
                  timeout=10)
    assert "result" in reader.next_message()
    requests.post(endpoint, json=tool(name, 1), timeout=10)
    answer = reader.next_message()
    assert answer["id"] == 1 and answer["error"]["code"] == jsonrpc.INTERNAL_ERROR
    assert why in answer["error"]["message"]
    proxy.expect("skipped a stdout line")
    reader.close()


# -- the class, on both parse paths ---------------------------------------------------------

REFUSED, PARSE = jsonrpc.INVALID_REQUEST, jsonrpc.PARSE_ERROR
CASES = [
    # duplicates, in every object the proxy reads and deeper, in any spelling
    (rb'{"jsonrpc":"2.0","id":2,"method":"x","id":2}', REFUSED, 'member "id"'),
    (rb'{"jsonrpc":"2.0","id":2,"method":"x","\u0069d":3}', REFUSED, 'member "id"'),
    (rb'{"jsonrpc":"2.0","i\u0064":2,"method":"x","id":3}', REFUSED, 'member "id"'),
    (rb'{ "jsonrpc" : "2.0" , "id" : 2 , "method" : "x" , "id" : 3 }', REFUSED, '"id"'),
    (rb'{"jsonrpc":"2.0","j\u0073onrpc":"1.0","id":2,"method":"x"}', REFUSED, '"jsonrpc"'),
    (rb'{"jsonrpc":"2.0","id":2,"method":"x","method":"y"}', REFUSED, 'member "method"'),
    (rb'{"jsonrpc":"2.0","method":"notifications/cancelled",'
     rb'"params":{"requestId":1,"requestId":2}}', REFUSED, '"requestId"'),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progressToken":1,'
     rb'"progressToken":2}}}', REFUSED, '"progressToken"'),
    (rb'{"jsonrpc":"2.0","id":1,"error":{"code":1,"code":2,"message":"m"}}', REFUSED, '"code"'),
    (rb'{"jsonrpc":"2.0","id":1,"result":{"requestState":"a","requestState":"b"}}',
     REFUSED, '"requestState"'),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"b":{"c":1,"c":1}}]}}',
     REFUSED, 'member "c"'),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a\\":1,"a\u005c":2}}', REFUSED,
     'member "a\\\\"'),
    # strings that parsers read differently
    (rb'{"jsonrpc":"2.0","id":"\ud800","method":"x"}', REFUSED, "lone surrogate"),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"\udfff":1}}', REFUSED, "surrogate"),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"t":"a\ud83d"}}', REFUSED, "surrogate"),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"t":"\ud83d\ude00"}}', 1, None),
    (rb'{"jsonrpc":"2.0","id":1,"method":"x","params":{"t":"\\ud800"}}', 1, None),
    # numbers: the id a JavaScript peer would read differently, or not as an integer
    (rb'{"jsonrpc":"2.0","id":1.0,"method":"x"}', REFUSED, "string or an integer"),
    (rb'{"jsonrpc":"2.0","id":1e0,"method":"x"}', REFUSED, "string or an integer"),
    (rb'{"jsonrpc":"2.0","id":9007199254740992,"method":"x"}', REFUSED, "9007199254740991"),
    (rb'{"jsonrpc":"2.0","id":-9007199254740992,"result":{}}', REFUSED, "9007199254740991"),
    (rb'{"jsonrpc":"2.0","id":9007199254740991,"method":"x"}', 2**53 - 1, None),
    (rb'{"jsonrpc":"2.0","id":-0,"method":"x"}', 0, None),
    # an id-like member in params first: the top-level one counts
    (rb'{"jsonrpc":"2.0","method":"x","params":{"id":5},"id":6}', 6, None),
    (rb'{"j\u0073onrpc":"2.0","\u0069d":7,"method":"x"}', 7, None),
    # what is not JSON text at all
    (b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"x"}', PARSE, "byte order mark"),
    (b'\x0c{"jsonrpc":"2.0","id":1,"method":"x"}', PARSE, "Expecting value"),
    (b' \t{"jsonrpc":"2.0","id":1,"method":"x"}\r\n', 1, None),
]


def _padded(body: bytes) -> bytes:
    """``body`` past the orjson threshold: a large string member first, in the top object."""
    at = body.index(b"{") + 1
    return body[:at] + b'"pad":"' + b"p" * (strict_json.FAST_ABOVE + 1) + b'",' + body[at:]


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
@pytest.mark.parametrize("body, outcome, why", CASES)
def test_parse_refuses_what_parsers_read_differently(body, outcome, why, large):
    data = _padded(body) if large else body
    if why is None:
        message = jsonrpc.parse(data)
        assert message.id == outcome and type(message.id) is int
        moved = jsonrpc.with_id(message, "new")
        assert strict_loads(moved.raw)["id"] == "new"
        return
    with pytest.raises(MessageError) as refused:
        jsonrpc.parse(data)
    assert refused.value.code == outcome
    assert why in refused.value.message
    assert "Traceback" not in refused.value.message


def test_a_large_message_with_many_quotes_still_has_its_duplicates_found():
    items = b",".join(b'{"k":%d}' % n for n in range(4000))
    body = b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"items":[' + items + b']},"id":2}'
    assert len(body) > strict_json.FAST_ABOVE
    with pytest.raises(MessageError, match='member "id"'):
        jsonrpc.parse(body)
    numbers = b",".join(b"%d" % n for n in range(9000))  # few quotes, many values
    with pytest.raises(MessageError, match='member "id"'):
        jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"x","params":[' + numbers + b'],"id":2}')
    escaped = b'"' + b'\\"k\\":1,' * 5000 + b'"'  # escaped quotes are no member names
    assert jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"t":' + escaped
                         + b'}}').id == 1


def test_a_refused_answer_of_the_server_names_its_request_only_when_unambiguous():
    answer = jsonrpc.refused_answer(b'{"jsonrpc":"2.0","id":3,"result":{"a":1,"a":2}}', "why")
    assert answer.id == 3 and "why" in answer.error["message"]
    for line in (b'{"jsonrpc":"2.0","id":3,"result":{},"id":4}', b'not json', b'[1]',
                 b'{"jsonrpc":"2.0","id":3,"method":"m","m":1,"m":2}'):
        assert jsonrpc.refused_answer(line, "why") is None


# -- properties: parse against json, with_id and rewritten against json.loads ---------------

NAMES = st.sampled_from(["id", "a", "b", "_meta", "progressToken"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**53 + 1, 2**53 - 1),
                    st.text(max_size=6))


def _spell(name: str, escape: bool) -> bytes:
    if not escape:
        return json.dumps(name).encode()
    return b'"' + b"".join(b"\\u%04x" % ord(c) for c in name) + b'"'


@st.composite
def members(draw, depth: int = 2) -> tuple[bytes, bool]:
    """An object in bytes whose names may repeat (in any spelling), and whether one does."""
    count = draw(st.integers(0, 4))
    names = [draw(NAMES) for _ in range(count)]
    parts, twice = [], len(set(names)) != len(names)
    for name in names:
        if depth and draw(st.booleans()):
            value, inner = draw(members(depth - 1))
            twice = twice or inner
        else:
            value = json.dumps(draw(SCALARS)).encode()
        parts.append(_spell(name, draw(st.booleans())) + b":" + value)
    return b"{" + b",".join(parts) + b"}", twice


def routed_unhashable(params) -> bool:
    """Whether ``params`` hold what the parser refuses as a routing key: an object or an array
    as requestId, progressToken or uri, or in ``_meta`` as progressToken or a listen's id."""
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    return any(isinstance(params.get(key), (dict, list))
               for key in ("requestId", "progressToken", "uri")) or (
        isinstance(meta, dict) and any(isinstance(meta.get(key), (dict, list)) for key in
                                       ("progressToken", "io.modelcontextprotocol/subscriptionId")))


@BOUNDED
@given(params=members(), large=st.booleans())
def test_parse_refuses_exactly_the_texts_with_a_duplicate(params, large):
    """Refused exactly when a member is there twice (or, without one, when a routing key is
    an object or an array: test_a_routed_param_that_is_no_key_is_refused_by_the_parser)."""
    body, twice = params
    refused = twice or routed_unhashable(json.loads(body))
    data = b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + body + b"}"
    data = _padded(data) if large else data
    try:
        message = jsonrpc.parse(data)
    except MessageError as exc:
        assert refused and exc.code == jsonrpc.INVALID_REQUEST, exc.message
        return
    assert not refused
    assert message.obj == strict_loads(data)


IDS = st.one_of(st.integers(-2**53 + 1, 2**53 - 1), st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, max_size=3)), max_leaves=8)


@st.composite
def messages(draw) -> bytes:
    """A message as peers write it: the SDKs' compact order (id second, or last), another
    order, spacing, ASCII escapes; maybe large; maybe id-like members in params."""
    obj = {"jsonrpc": "2.0", "id": draw(IDS)}
    if draw(st.booleans()):
        obj["method"] = "tools/call"
        obj["params"] = draw(st.dictionaries(NAMES, JSON, max_size=4))
        if draw(st.booleans()):
            obj["params"]["pad"] = "p" * (strict_json.FAST_ABOVE + 1)
    else:
        obj["result"] = draw(st.dictionaries(NAMES, JSON, max_size=4))
    keys = draw(st.one_of(st.just(list(obj)), st.permutations(list(obj))))
    if draw(st.booleans()):  # the id last, where with_id splices too
        keys = [key for key in keys if key != "id"] + ["id"]
    ordered = {key: obj[key] for key in keys}
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(ordered, separators=separators,
                      ensure_ascii=draw(st.booleans())).encode()


@BOUNDED
@given(raw=messages(), new_id=IDS)
def test_with_id_leaves_the_new_id_the_only_one(raw, new_id):
    before = strict_loads(raw)
    assume(not routed_unhashable(before.get("params")))  # refused by the parser
    message = jsonrpc.parse(raw)
    moved = jsonrpc.with_id(message, new_id)
    after = strict_loads(moved.raw)  # and no duplicate member anywhere
    assert after["id"] == new_id and type(after["id"]) is type(new_id)
    assert moved.id == new_id and moved.kind == message.kind
    assert {k: v for k, v in after.items() if k != "id"} == \
        {k: v for k, v in before.items() if k != "id"}
    assert jsonrpc.parse(moved.raw).id == new_id  # and the proxy reads it so again


@BOUNDED
@given(raw=messages(), new_id=IDS, token=IDS)
def test_rewritten_leaves_its_members_the_only_ones(raw, new_id, token):
    before = strict_loads(raw)
    assume(not routed_unhashable(before.get("params")))  # refused by the parser
    message = jsonrpc.parse(raw)
    params = {"_meta": {"progressToken": token}} if "method" in before else None
    moved = jsonrpc.rewritten(message, params, id=new_id)
    after = strict_loads(moved.raw)
    assert after["id"] == new_id and type(after["id"]) is type(new_id)
    if params:
        assert after["params"] == {**before["params"], **params}
    assert {k: v for k, v in after.items() if k not in ("id", "params")} == \
        {k: v for k, v in before.items() if k not in ("id", "params")}


ROUTED = [("notifications/cancelled", {"requestId": None}),
          ("notifications/progress", {"progressToken": None, "progress": 1}),
          ("resources/subscribe", {"uri": None}),
          ("resources/updated", {"uri": None}),
          ("tools/call", {"name": "echo", "_meta": {"progressToken": None}}),
          ("subscriptions/listen", {"_meta": {"io.modelcontextprotocol/subscriptionId": None}})]
UNHASHABLE = st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                       st.lists(st.integers(), max_size=2))


def _with(params: dict, value) -> dict:
    """``params`` with its one routed value (the None) set to ``value``."""
    return {key: (_with(inner, value) if isinstance(inner, dict) else
                  value if inner is None else inner) for key, inner in params.items()}


@BOUNDED
@given(case=st.sampled_from(ROUTED), value=UNHASHABLE, request=st.booleans())
def test_a_routed_param_that_is_no_key_is_refused_by_the_parser(case, value, request):
    """A cancel's requestId, a progress token, a resource's uri, a listen's id: routing keeps
    them as dict keys, so an object or an array there was a TypeError mid-relay (a 500 and a
    traceback for a cancellation); the parser refuses them, on both of its paths."""
    method, params = case
    body = {"jsonrpc": "2.0", "method": method, "params": _with(params, value)}
    if request:
        body["id"] = 7
    for data in (json.dumps(body).encode(), _padded(json.dumps(body).encode())):
        with pytest.raises(MessageError) as refused:
            jsonrpc.parse(data)
        assert refused.value.code == -32600
        assert "must be a string or a number" in refused.value.message
    for fine in ("s", 3, 2.5):  # what MCP allows goes through
        body["params"] = _with(params, fine)
        assert jsonrpc.parse(json.dumps(body).encode()).method == method


@pytest.mark.parametrize("shared", [False, True], ids=["own child", "shared child"])
def test_a_cancel_of_an_object_is_a_400_and_the_session_goes_on(proxy_factory, shared):
    proxy = proxy_factory(*(["--shared-child"] if shared else []), "--", *RAW_SERVER)
    client = Client(proxy.base)
    for params in ({"requestId": {"a": 1}}, {"progressToken": [1], "progress": 1},
                   {"uri": {"x": 1}}):
        method = "resources/subscribe" if "uri" in params else (
            "notifications/cancelled" if "requestId" in params else "notifications/progress")
        refused = requests.post(client.endpoint, timeout=10, json={
            "jsonrpc": "2.0", "method": method, "params": params,
            **({"id": 9} if "uri" in params else {})})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == -32600
    assert client.call(tool("echo", 2, text="still"))["result"]["content"][0]["text"] == "still"
    assert "Traceback" not in proxy.stderr()
    client.close()
