"""Unit tests of JSON-RPC parsing: every bad body is a MessageError with the right code."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_proxy.core import jsonrpc, strict_json
from mcp_proxy.errors import MessageError


@pytest.mark.parametrize("body, kind", [
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', jsonrpc.REQUEST),
    (b'{"jsonrpc":"2.0","id":"a","method":"ping","params":{}}', jsonrpc.REQUEST),
    (b'{"jsonrpc":"2.0","method":"notifications/initialized"}', jsonrpc.NOTIFICATION),
    (b'{"jsonrpc":"2.0","id":0,"result":{}}', jsonrpc.RESPONSE),
    (b'{"jsonrpc":"2.0","id":-3,"error":{"code":1,"message":"x"}}', jsonrpc.RESPONSE),
])
def test_classifies_by_shape(body, kind):
    assert jsonrpc.parse(body).kind == kind


def test_ids_keep_their_type():
    assert jsonrpc.parse(b'{"jsonrpc":"2.0","id":"1","method":"x"}').id == "1"
    assert jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"x"}').id == 1
    assert jsonrpc.id_key(1) != jsonrpc.id_key("1")


def test_raw_bytes_are_kept_when_single_line():
    body = b'{"jsonrpc":"2.0", "id":1, "method":"x", "params":{"a":1.50}}'
    assert jsonrpc.parse(body).raw == body


def test_multiline_body_is_reencoded_as_one_line():
    body = b'{\n "jsonrpc": "2.0",\n "id": 1,\n "method": "x"\n}'
    message = jsonrpc.parse(body)
    assert b"\n" not in message.raw
    assert json.loads(message.raw) == json.loads(body)


@pytest.mark.parametrize("body, code", [
    (b"{not json", jsonrpc.PARSE_ERROR),
    (b"\xff\xfe{}", jsonrpc.PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":NaN}}', jsonrpc.PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":1e400}}', jsonrpc.PARSE_ERROR),
    (b"[" * 100000 + b"]" * 100000, jsonrpc.PARSE_ERROR),
    (b"", jsonrpc.PARSE_ERROR),
    (b'[{"jsonrpc":"2.0","id":1,"method":"x"}]', jsonrpc.INVALID_REQUEST),
    (b'"just a string"', jsonrpc.INVALID_REQUEST),
    (b'{"id":1,"method":"x"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"x"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1e400,"method":"x"}', jsonrpc.PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":null,"method":"x"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":true,"method":"x"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":7}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"x","params":3}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"result":{},"error":{}}', jsonrpc.INVALID_REQUEST),
])
def test_bad_bodies_get_a_jsonrpc_error_code(body, code):
    with pytest.raises(MessageError) as caught:
        jsonrpc.parse(body)
    assert caught.value.code == code
    assert caught.value.message


def test_error_builder():
    assert jsonrpc.error_obj(7, -1, "no") == {
        "jsonrpc": "2.0", "id": 7, "error": {"code": -1, "message": "no"}}


@pytest.mark.parametrize("raw", [
    b'{"jsonrpc":"2.0","id":5,"result":{"id":5}}',  # first, as servers write it
    b'{"method":"m","params":{"id":5},"jsonrpc":"2.0","id":5}',  # last, as SDK clients do
    b'{"id":5,"jsonrpc":"2.0","result":{"id":5}}',  # elsewhere: parsed and encoded again
    b'{"jsonrpc": "2.0", "id": 5, "result": {}}',
])
def test_with_id_replaces_only_the_top_level_id(raw):
    moved = jsonrpc.with_id(jsonrpc.parse(raw), "c-1")
    obj, before = json.loads(moved.raw), json.loads(raw)
    assert obj["id"] == moved.id == "c-1"
    assert {k: v for k, v in obj.items() if k != "id"} == \
        {k: v for k, v in before.items() if k != "id"}
    assert moved.kind == jsonrpc.parse(raw).kind


def _large(body: bytes) -> bytes:
    """``body`` made larger than SLIM_ABOVE by a padding member (or padding after it)."""
    pad = b'"pad":"' + b"x" * (jsonrpc.SLIM_ABOVE + 1) + b'"'
    return b"{" + pad + b"," + body[1:] if body.startswith(b"{") else body + b" " * len(pad)


# Large messages go through orjson; it must accept and refuse exactly what the standard
# library path does, with the same errors and the same routing values.
SAME_AS_STDLIB = [
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":NaN}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":-Infinity}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":1e400}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":"\\ud800"}}',  # refused by both
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":"\xed\xa0\x80"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":"\xff"}}',
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"x"}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":"\x01"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"v":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    b'{"jsonrpc":"2.0","id":1,"method":"x"} trailing',
    b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"x"}',
    b'{"jsonrpc":"2.0","id":18446744073709551616,"result":{}}',
    b'{"jsonrpc":"2.0","id":-9223372036854775809,"error":{"code":1,"message":"m"}}',
    b'{"jsonrpc":"2.0","id":1,"error":{"code":18446744073709551616,"message":"m"}}',
    b'{"jsonrpc":"2.0","id":1.5,"method":"x"}',
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":'
    b'99999999999999999999999}}',
    b'{"jsonrpc":"2.0","id":2,"method":"x","params":{"_meta":{"progressToken":'
    b'1' + b'0' * 30 + b'}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":' + b"1" * 5000 + b"}}",
    b'[{"jsonrpc":"2.0","id":1,"method":"x"}]',
    b'"just a string"',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"a":2},"id":3}',
]


@pytest.mark.parametrize("body", SAME_AS_STDLIB)
def test_large_messages_parse_as_the_standard_library_does(body, monkeypatch):
    big = _large(body)

    def outcome():
        try:
            message = jsonrpc.parse(big)
        except MessageError as exc:
            return ("error", exc.code, exc.message)
        return ("ok", message.kind, jsonrpc.id_key(message.id), message.method,
                message.params, message.error, message.raw == big)

    fast = outcome()
    monkeypatch.setattr(strict_json, "fast", lambda data: None)
    assert fast == outcome()


def test_a_large_message_keeps_its_big_integers_exact():
    message = jsonrpc.parse(_large(b'{"jsonrpc":"2.0","id":9007199254740991,"result":{}}'))
    assert message.id == 2**53 - 1 and type(message.id) is int
    cancel = jsonrpc.parse(_large(b'{"jsonrpc":"2.0","method":"notifications/cancelled",'
                                  b'"params":{"requestId":18446744073709551617}}'))
    assert cancel.params["requestId"] == 18446744073709551617


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None, database=None)
@given(JSON_VALUES)
def test_encode_is_compact_json_dumps(value):
    """The one encoder made at import writes what json.dumps with the same options does."""
    assert jsonrpc.encode(value) == json.dumps(
        value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_encode_refuses_what_json_cannot_carry():
    with pytest.raises(TypeError):
        jsonrpc.encode({"x": object()})
    loop: list = []
    loop.append(loop)
    with pytest.raises(RecursionError):  # no marker per container: nothing we encode is cyclic
        jsonrpc.encode(loop)
    assert jsonrpc.encode({"x": [1, "é", None]}) == '{"x":[1,"é",null]}'.encode()  # still well


def _routed_refusal(params: dict) -> str | None:
    """What the routed params of a request are refused for, as the first check (before
    the cheaper one of issue 25) read them: every key in order, whatever else was there."""
    for key in ("requestId", "progressToken", "uri"):
        if isinstance(params.get(key), (dict, list)):
            return f"Invalid Request: params.{key} must be a string or a number"
    meta = params.get("_meta")
    if type(meta) is dict:
        for key in ("progressToken", "io.modelcontextprotocol/subscriptionId"):
            if isinstance(meta.get(key), (dict, list)):
                return f"Invalid Request: params._meta.{key} must be a string or a number"
    return None


ROUTED_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=3),
                          st.just({}), st.just([1]), st.just({"a": 1}))
META_KEYS = st.sampled_from(["progressToken", "io.modelcontextprotocol/subscriptionId",
                             "io.modelcontextprotocol/protocolVersion", "other"])


@settings(max_examples=200, deadline=None, database=None)
@given(params=st.dictionaries(st.sampled_from(["requestId", "progressToken", "uri", "name"]),
                              ROUTED_VALUES, max_size=3),
       meta=st.one_of(st.none(), st.just([]), st.dictionaries(META_KEYS, ROUTED_VALUES,
                                                              max_size=3)))
def test_routed_params_are_refused_as_before(params, meta):
    if meta is not None:
        params = {**params, "_meta": meta}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "m", "params": params}).encode()
    try:
        jsonrpc.parse(body)
        refused = None
    except MessageError as exc:
        assert exc.code == jsonrpc.INVALID_REQUEST
        refused = exc.message
    assert refused == _routed_refusal(params)


@settings(max_examples=200, deadline=None, database=None)
@given(old=st.one_of(st.integers(-10**6, 10**6), st.text(max_size=4)),
       new=st.one_of(st.integers(-10**6, 10**6), st.text(max_size=4)),
       last=st.booleans(), pad=st.sampled_from([0, 2000]))
def test_with_id_splices_any_id_exactly(old, new, last, pad):
    assert jsonrpc._id_bytes(old) == jsonrpc.encode(old)  # the encoder-free spelling
    body = {"jsonrpc": "2.0", "id": old, "result": {"id": old, "x": [old], "pad": "p" * pad}}
    if last:  # as SDK clients write it
        body = {"method": "m", "params": {"id": old}, "jsonrpc": "2.0", "id": old}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    moved = jsonrpc.with_id(jsonrpc.parse(raw), new)
    assert json.loads(moved.raw) == {**body, "id": new} and moved.id == new
