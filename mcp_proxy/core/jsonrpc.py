"""JSON-RPC 2.0 framing for the relay: parse and validate, classify by shape, build errors.

The relay never rebuilds a message it forwards: :class:`Message` keeps the bytes it arrived
with (one line, no newline) beside the parsed object that routing reads.
"""

from __future__ import annotations

import json
import json.encoder
from typing import Any

from mcp_proxy.core import strict_json
from mcp_proxy.core.protocol import SUBSCRIPTION_KEY
from mcp_proxy.errors import AmbiguousJson, MessageError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
CONNECTION_CLOSED = -32000
REQUEST_CANCELLED = -32800

REQUEST, NOTIFICATION, RESPONSE = "request", "notification", "response"


# made once: json.dumps builds a new encoder for every call with arguments (9 k instructions),
# and JSONEncoder.encode its C encoder for every call (~85 Python opcodes). No circular
# check: what is encoded is parsed JSON or built here (a cycle would be a RecursionError).
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_c_encoder = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)


def encode(obj: Any) -> bytes:
    """Serialise ``obj`` as compact single-line UTF-8 JSON."""
    if _c_encoder is None:  # an interpreter without the C accelerator
        return _encoder.encode(obj).encode("utf-8")
    return "".join(_c_encoder(obj, 0)).encode("utf-8")


def id_key(request_id: Any) -> tuple[bool, Any]:
    """A dict key that keeps ``1`` and ``"1"`` apart (JSON-RPC ids keep their type)."""
    return (isinstance(request_id, str), request_id)


# A JavaScript peer reads a larger integer rounded (2**53 + 1 as 2**53) and would answer
# another id; I-JSON (RFC 7493) keeps integers to this range for that reason.
SAFE_INTEGER = 2**53 - 1


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool)
        and -SAFE_INTEGER <= value <= SAFE_INTEGER)


# Above this size a parsed message keeps only what routing reads, not a second copy of its
# payload: a queued 128 KiB answer then costs 128 KiB, not twice that.
SLIM_ABOVE = 32 << 10
_ROUTING_PARAMS = strict_json.ROUTING_PARAMS  # + short name, uri
_SHORT = 1024


def _routing_view(obj: dict) -> dict:
    """What routing reads of a large message: id, method and the few params it looks at
    (``_meta``, a cancel's ``requestId``, progress's token, a short ``name`` or ``uri``), and
    a ``requestState`` in params or result."""
    view = {key: obj[key] for key in ("jsonrpc", "id", "method", "error") if key in obj}
    params = obj.get("params")
    if isinstance(params, dict):
        kept = {key: params[key] for key in _ROUTING_PARAMS if key in params}
        for key in ("name", "uri"):
            value = params.get(key)
            if isinstance(value, str) and len(value) <= _SHORT:
                kept[key] = value
        view["params"] = kept
    result = obj.get("result")
    if isinstance(result, dict):
        view["result"] = {key: result[key] for key in ("requestState", "resultType")
                          if key in result}
    return view


class Message:
    """One JSON-RPC message: ``raw`` (single-line bytes) for the wire, and what routing reads.

    A large message is held once: its bytes, plus a small routing view (id, method, the
    params routing reads). ``obj`` parses the bytes again when someone needs the whole object.
    """

    __slots__ = ("_obj", "raw", "kind", "_whole")

    def __init__(self, obj: dict, raw: bytes | None = None) -> None:
        self.raw = raw if raw is not None else encode(obj)
        self.kind = classify(obj)
        self._whole = len(self.raw) <= SLIM_ABOVE
        self._obj = obj if self._whole else _routing_view(obj)

    @property
    def obj(self) -> dict:
        """The whole message (parsed again from ``raw`` if only its routing view is kept)."""
        return self._obj if self._whole else strict_json.reread(self.raw.decode("utf-8"))

    @property
    def view(self) -> dict:
        """What routing reads: the whole message, or a large one's routing view."""
        return self._obj

    @property
    def id(self) -> Any:
        return self._obj.get("id")

    @property
    def method(self) -> str | None:
        return self._obj.get("method")

    @property
    def error(self) -> dict | None:
        """An error answer's ``error`` object (None for anything else)."""
        error = self._obj.get("error")
        return error if isinstance(error, dict) else None

    @property
    def params(self) -> dict:
        params = self._obj.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def request_state(self) -> Any:
        """A 2026-07-28 ``requestState``: a request's in its params, an answer's in its result
        (read here, not by scanning a large message's bytes for it)."""
        holder = self._obj.get("params" if "method" in self._obj else "result")
        return holder.get("requestState") if isinstance(holder, dict) else None

    @property
    def result_type(self) -> Any:
        """An answer's 2026-07-28 ``resultType`` (None if it has none)."""
        result = self._obj.get("result")
        return result.get("resultType") if isinstance(result, dict) else None

    def __repr__(self) -> str:
        return f"<Message {self.kind} id={self.id!r} method={self.method!r} {len(self.raw)}B>"


def classify(obj: dict) -> str:
    """Name the shape of a validated message: request, notification or response."""
    if "method" in obj:
        return REQUEST if "id" in obj else NOTIFICATION
    return RESPONSE


def validate(obj: Any) -> dict:
    """Check that ``obj`` is a single JSON-RPC 2.0 message; raise :class:`MessageError` if not."""
    if isinstance(obj, list):
        raise MessageError(INVALID_REQUEST, "Invalid Request: batches are not supported")
    if not isinstance(obj, dict):
        raise MessageError(INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
    if obj.get("jsonrpc") != "2.0":
        raise MessageError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if "id" in obj and not _valid_id(obj["id"]):
        raise MessageError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer"
                           f" (within ±{SAFE_INTEGER}, which every JSON parser reads exactly)")
    if "method" in obj:
        if not isinstance(obj["method"], str):
            raise MessageError(INVALID_REQUEST, "Invalid Request: method must be a string")
        params = obj.get("params")
        if "params" in obj and not isinstance(params, (dict, list)):
            raise MessageError(INVALID_REQUEST, "Invalid Request: params must be an object")
        if type(params) is dict and params:
            _check_routed(params)
    elif "id" not in obj or ("result" in obj) == ("error" in obj):
        raise MessageError(
            INVALID_REQUEST, "Invalid Request: need a method, or an id with result or error"
        )
    return obj


# The params routing keeps as dict keys (a cancel's request, a progress token, a resource,
# a 2026-07-28 listen): in MCP each is a string or a number. An object or an array there is
# a key no dict takes: refused here, once, rather than a TypeError in every place that routes.
_ROUTED = ("requestId", "progressToken", "uri")
_META_ROUTED = ("progressToken", SUBSCRIPTION_KEY)
_ROUTED_NAMES = frozenset((*_ROUTED, "_meta"))


def _check_routed(params: dict) -> None:
    keys = params.keys()
    if keys.isdisjoint(_ROUTED_NAMES):  # most messages: one look, per message
        return
    if not keys.isdisjoint(_ROUTED):  # a 2026-07-28 request has only its _meta
        for key in _ROUTED:
            if isinstance(params.get(key), (dict, list)):
                raise MessageError(INVALID_REQUEST, f"Invalid Request: params.{key} must be "
                                   "a string or a number")
    meta = params.get("_meta")
    if type(meta) is dict and not meta.keys().isdisjoint(_META_ROUTED):
        for key in _META_ROUTED:
            if isinstance(meta.get(key), (dict, list)):
                raise MessageError(INVALID_REQUEST, f"Invalid Request: params._meta.{key} "
                                   "must be a string or a number")


def parse(data: bytes | str) -> Message:
    """Parse one message from bytes; raise :class:`MessageError` with the JSON-RPC code.

    What peers could read differently (a duplicate member, a lone surrogate: strict_json.py) is
    refused with -32600 (Invalid Request), so the bytes forwarded mean what routing read.
    """
    try:
        obj = strict_json.loads(data)
    except UnicodeDecodeError as exc:
        raise MessageError(PARSE_ERROR, f"Parse error: body is not UTF-8 ({exc.reason})")
    except RecursionError:
        raise MessageError(PARSE_ERROR, "Parse error: JSON nested too deeply") from None
    except AmbiguousJson as exc:
        raise MessageError(INVALID_REQUEST, f"Invalid Request: {exc}: JSON parsers "
                           "read it differently") from None
    except ValueError as exc:
        raise MessageError(PARSE_ERROR, f"Parse error: {exc}") from None
    validate(obj)
    raw = None
    if isinstance(data, bytes):
        raw = data.strip() if data[:1].isspace() or data[-1:].isspace() else data
        if b"\n" in raw or b"\r" in raw:
            raw = None  # re-encode: stdio framing needs exactly one line
    return Message(obj, raw)


def refused_answer(data: bytes, why: str) -> Message | None:
    """An error answer in place of a server's answer that :func:`parse` refused (a duplicate
    member, say), so its request does not wait forever; None unless the line is an answer
    with exactly one top-level id, a valid one (a duplicate id names nobody for sure)."""
    try:
        members = json.loads(data, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return None
    if not isinstance(members, list) or not all(type(m) is tuple for m in members):
        return None
    ids = [value for name, value in members if name == "id"]
    if len(ids) != 1 or not _valid_id(ids[0]) or any(name == "method" for name, _ in members):
        return None
    return error_message(ids[0], INTERNAL_ERROR, f"the server's answer was refused: {why}")


def error_obj(request_id: Any, code: int, message: str, data: Any = None) -> dict:
    """Build a JSON-RPC error response object (``request_id`` may be None)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def error_message(request_id: Any, code: int, message: str, data: Any = None) -> Message:
    return Message(error_obj(request_id, code, message, data))


def result_message(request_id: Any, result: Any) -> Message:
    return Message({"jsonrpc": "2.0", "id": request_id, "result": result})


_HEAD = b'{"jsonrpc":"2.0","id":'
_AFTER_HEAD = len(_HEAD)


def _id_bytes(value: Any) -> bytes:
    """An id as ``encode`` writes it; a plain string (no escape needed) costs no encoder."""
    if type(value) is int:
        return b"%d" % value
    if type(value) is str and value.isprintable() and '"' not in value and "\\" not in value:
        return b'"%s"' % value.encode("utf-8")
    return encode(value)


def with_id(message: Message, new_id: Any) -> Message:
    """``message`` under another id. Where the id stands first (after ``jsonrpc``) or last in
    the compact bytes, as the SDKs write it, the bytes are spliced, not parsed and encoded
    again (a 1 MiB answer then costs one copy, no parse)."""
    obj, raw = message._obj, message.raw
    old, new = _id_bytes(obj.get("id")), _id_bytes(new_id)
    end = _AFTER_HEAD + len(old)
    if raw.startswith(old, _AFTER_HEAD) and raw[end:end + 1] == b"," and raw.startswith(_HEAD):
        spliced = _HEAD + new + raw[end:] if len(raw) <= _SHORT \
            else b"".join((_HEAD, new, memoryview(raw)[end:]))  # one copy of a large one
    elif raw.endswith(b',"id":' + old + b"}"):
        spliced = b"".join((memoryview(raw)[:-len(old) - 1], new, b"}"))
    else:
        return rewritten(message, id=new_id)
    copy = Message.__new__(Message)
    copy.raw, copy.kind, copy._whole = spliced, message.kind, message._whole
    copy._obj = {**obj, "id": new_id}
    return copy


def rewritten(message: Message, params: dict | None = None, **top: Any) -> Message:
    """A copy of ``message`` with ``top``-level members and ``params`` entries replaced
    (a multiplexer's id and token rewriting; the original is untouched)."""
    obj = {**message.obj, **top}
    if params is not None:
        obj["params"] = {**obj.get("params", {}), **params}
    return Message(obj)
