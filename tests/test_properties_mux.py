"""Properties of a shared child under hostile clients: nobody reaches another client's work.

The real :class:`Multiplexer` and its ports (fanin.py, fanout.py), two or three clients, and
generated messages: legitimate tool calls whose ids collide across clients, and hostile ones
(duplicate members in any spelling, numeric spellings of ids, id-like members in params,
answers to guessed server-request ids, cancels of guessed child ids, cancels sent as
requests). Each message goes through ``jsonrpc.parse`` first, as at the HTTP edge.

The child is an in-process fake Link, for speed: it reads each line with ``json.loads``,
which keeps the *last* duplicate as a real child in Python or JavaScript would, holds every
request until a step makes it answer, and acts on a cancel by its method alone (also one sent
with an id), as a lax server does. Everything runs synchronously in the test's greenlet: the
child answers the proxy's own ``initialize`` inside ``send``.

Checked after every step:

- every request the child reads carries an id the proxy assigned, never one used before;
- every answer a client receives that the child produced is for that client's own request,
  under the id the client gave it, in bytes that say that id only; an answer the proxy made
  itself carries an id the client sent;
- a cancel the child reads names a request of the client that sent it;
- the child hears an answer to its server request only from the client it went to.

A client may also leave: the proxy then cancels its requests on its own account.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_proxy.children.multiplexer import Multiplexer
from mcp_proxy.core import jsonrpc
from mcp_proxy.core.link import Link
from mcp_proxy.errors import MessageError

INIT = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "prop", "version": "0"}}


class FakeChild(Link):
    """A lax stdio server in-process (see the module docstring)."""

    def __init__(self, world: World) -> None:
        super().__init__("fake child")
        self.world = world
        self.pending: dict = {}  # child id as read -> (sender, client's id as the proxy read it)
        self.seen_ids: set = set()
        self.asked: dict[str, int | None] = {}  # server request id -> the client it went to
        self.asks = 0

    def send(self, message: jsonrpc.Message) -> None:
        world = self.world
        obj = json.loads(message.raw)  # the last duplicate wins, as in most parsers
        sender = world.sender
        method = obj.get("method")
        if method is not None and "notifications/cancelled" == method:
            target = (obj.get("params") or {}).get("requestId")
            owner = world.owner.get(_key(target))
            assert owner is None or sender is None or owner == sender, \
                f"client {sender} cancelled client {owner}'s request {target!r}"
            self.pending.pop(_key(target), None)
            return
        if method is None:  # an answer to a server request
            went_to = self.asked.pop(obj.get("id"), "nobody")
            assert went_to == sender, \
                f"client {sender} answered server request {obj.get('id')!r} of {went_to}"
            return
        if "id" not in obj:
            return
        cid = obj["id"]
        assert type(cid) is int and cid in world.assigned, f"child read id {cid!r}"
        assert cid not in self.seen_ids, f"child read id {cid!r} twice"
        self.seen_ids.add(cid)
        if method == "initialize":  # the proxy's own
            self.deliver(jsonrpc.parse(jsonrpc.encode({"jsonrpc": "2.0", "id": cid, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "serverInfo": {"name": "fake", "version": "0"}}})))
            return
        world.owner[_key(cid)] = sender
        self.pending[_key(cid)] = (sender, world.reading)

    def answer(self, pick: int) -> None:
        """Answer one held request (a tagged result the test can trace back)."""
        if not self.pending:
            return
        key = sorted(self.pending, key=repr)[pick % len(self.pending)]
        sender, client_id = self.pending.pop(key)
        tag = len(self.world.produced)
        self.world.produced[tag] = (sender, client_id)
        self.deliver(jsonrpc.parse(jsonrpc.encode(
            {"jsonrpc": "2.0", "id": key[1], "result": {"tag": tag}})))

    def ask(self) -> None:
        """Send a server request (sampling) that names itself in its params."""
        self.asks += 1
        sid = f"s-{self.asks}"
        self.asked[sid] = None
        self.deliver(jsonrpc.parse(jsonrpc.encode({
            "jsonrpc": "2.0", "id": sid, "method": "sampling/createMessage",
            "params": {"marker": sid, "messages": [], "maxTokens": 1}})))
        if self.asked.get(sid, 0) is None:
            self.asked.pop(sid)  # refused by the proxy: nobody may answer it


def _key(value):
    return jsonrpc.id_key(value) if isinstance(value, (int, str)) else ("?", repr(value))


class World:
    """The multiplexer, its clients and everything the checks compare with."""

    def __init__(self, clients: int) -> None:
        self.sender: int | None = None  # the client whose send is on the stack
        self.reading = None  # that message's id as the proxy read it
        self.owner: dict = {}  # child id -> the client whose request it is
        self.assigned: set[int] = set()
        self.produced: dict[int, tuple] = {}  # tag -> (client, its id for that request)
        self.delivered: set[int] = set()
        self.sent_ids: list[set] = [set() for _ in range(clients)]
        self.server_ids: list[dict] = [{} for _ in range(clients)]  # client-facing id -> sid
        self.child = FakeChild(self)
        self.mux = Multiplexer("prop", lambda: self.child)
        new_id = self.mux.sharing.new_id

        def assign() -> int:
            cid = new_id()
            self.assigned.add(cid)
            return cid

        self.mux.sharing.new_id = assign
        self.ports = []
        for n in range(clients):
            port = self.mux.port(f"client {n}")
            port.attach(lambda message, n=n: self.received(n, message), lambda: None)
            self.ports.append(port)
            self.send(n, jsonrpc.encode({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                                         "params": INIT}))

    def send(self, n: int, raw: bytes) -> None:
        try:
            message = jsonrpc.parse(raw)
        except MessageError:
            return  # the edge answers 400: nothing reaches the multiplexer
        if self.ports[n].closed.is_set():
            return
        self.sender, self.reading = n, message.id
        if message.id is not None:
            self.sent_ids[n].add(_key(message.id))
        try:
            self.ports[n].send(message)
        finally:
            self.sender = self.reading = None

    def reply(self, n: int, pick: int) -> None:
        """Client ``n`` answers one of the server requests it was given."""
        given_ids = sorted(self.server_ids[n], key=repr)
        if given_ids:
            client_id = given_ids[pick % len(given_ids)]
            self.server_ids[n].pop(client_id)
            self.send(n, jsonrpc.encode({"jsonrpc": "2.0", "id": client_id,
                                         "result": {"by": n}}))

    def received(self, n: int, message: jsonrpc.Message) -> None:
        wire = json.loads(message.raw)
        assert _key(wire.get("id")) == _key(message.id), f"bytes say {wire.get('id')!r}"
        if message.kind == jsonrpc.REQUEST:
            sid = message.params.get("marker")
            assert self.child.asked.get(sid, 0) is None, f"{sid} given twice"
            self.child.asked[sid] = n
            self.server_ids[n][message.id] = sid
            return
        if message.kind != jsonrpc.RESPONSE:
            return
        result = wire.get("result")
        tag = result.get("tag") if isinstance(result, dict) else None
        if tag is None:  # made by the proxy: an error, a local result
            assert _key(message.id) in self.sent_ids[n], f"client {n} got {wire}"
            return
        owner, client_id = self.produced[tag]
        assert owner == n, f"client {n} got the answer to client {owner}'s request"
        assert _key(message.id) == _key(client_id), f"{message.id!r} for {client_id!r}"
        assert tag not in self.delivered, f"answer {tag} delivered twice"
        self.delivered.add(tag)


# -- hostile messages, spelled in bytes ---------------------------------------------------

GUESS = st.sampled_from([1, 2, 3, 4, 5, 6, 7])
ID_KEY = st.sampled_from(['"id"', '"\\u0069d"', '"i\\u0064"'])
SEP = st.sampled_from([",", " , ", ",\t"])


@st.composite
def id_spelling(draw) -> str:
    value = draw(st.one_of(GUESS, st.sampled_from(["1", "2", "s-1"])))
    if isinstance(value, str):
        return json.dumps(value)
    return draw(st.sampled_from([str(value), f"{value}.0", f"{value}e0", "-0",
                                 str(2**53 + value), f" {value}"]))


@st.composite
def params(draw, method: str) -> str:
    members = []
    if method == "notifications/cancelled" or draw(st.booleans()):
        members.append(f'"requestId":{draw(id_spelling())}')
    if draw(st.booleans()):
        members.append(f'"id":{draw(id_spelling())}')
    if draw(st.booleans()):
        meta = [f'"progressToken":{draw(id_spelling())}']
        if draw(st.booleans()):
            meta.append(f'"progressToken":{draw(id_spelling())}')
        members.append('"_meta":{' + ",".join(meta) + "}")
    if method == "tools/call":
        members += ['"name":"echo"', '"arguments":{"text":"x"}']
    return "{" + ",".join(draw(st.permutations(members))) + "}"


def spliced(guess: int, key: str) -> bytes:
    """A tool call shaped as the SDKs write one (where ``with_id`` splices the first id),
    with the id again at the end, in any spelling: the original attack on a guessed id."""
    return (f'{{"jsonrpc":"2.0","id":{guess},"method":"tools/call","params":{{"name":"echo",'
            f'"arguments":{{"text":"x"}}}},{key}:{guess}}}').encode()


def cancel(guess: int, with_id: bool) -> bytes:
    """A cancel of a guessed child id, as a notification or as a request."""
    return jsonrpc.encode({"jsonrpc": "2.0", **({"id": "c"} if with_id else {}),
                           "method": "notifications/cancelled",
                           "params": {"requestId": guess}})


@st.composite
def hostile(draw) -> bytes:
    shape = draw(st.sampled_from(["call", "call", "cancel", "cancel-request", "answer",
                                  "progress"]))
    members = ['"jsonrpc":"2.0"']
    if shape in ("call", "cancel-request", "answer"):
        members.append(f"{draw(ID_KEY)}:{draw(id_spelling())}")
    method = {"call": "tools/call", "cancel": "notifications/cancelled",
              "cancel-request": "notifications/cancelled",
              "progress": "notifications/progress"}.get(shape)
    if method:
        members.append(f'"method":"{method}"')
        members.append(f'"params":{draw(params(method))}')
    else:
        members.append('"result":{}')
    dups = [draw(st.sampled_from([
        f"{draw(ID_KEY)}:{draw(id_spelling())}", '"method":"tools/call"',
        '"method":"notifications/cancelled"', '"params":{"requestId":2}']))
        for _ in range(draw(st.integers(0, 2)))]  # in any spelling
    order = draw(st.one_of(st.just(members + dups), st.permutations(members + dups)))
    return ("{" + draw(SEP).join(order) + "}").encode()


def legit(n: int) -> st.SearchStrategy[bytes]:
    return st.builds(lambda rid: jsonrpc.encode({
        "jsonrpc": "2.0", "id": rid, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": f"client {n}"}}}),
        st.one_of(GUESS, st.sampled_from(["1", "2"])))


def steps(clients: int):
    client = st.integers(0, clients - 1)
    return st.lists(st.one_of(
        st.tuples(st.just("legit"), client, st.integers(0, 6)),
        st.tuples(st.just("hostile"), client, hostile()),
        # child ids are a counter: guess one of the latest
        st.tuples(st.just("spliced"), client, st.tuples(st.integers(0, 3), ID_KEY)),
        st.tuples(st.just("cancel"), client, st.tuples(st.integers(0, 3), st.booleans())),
        st.tuples(st.just("answer"), st.integers(0, 9), st.none()),
        st.tuples(st.just("ask"), st.none(), st.none()),
        st.tuples(st.just("reply"), client, st.integers(0, 9)),
        st.tuples(st.just("close"), client, st.none()),
    ), min_size=1, max_size=40)


def run(clients: int, plan, data) -> None:
    world = World(clients)
    for action, who, what in plan:
        if action == "legit":
            world.send(who, data.draw(legit(who)))
        elif action == "hostile":
            world.send(who, what)
        elif action == "spliced":
            world.send(who, spliced(max(world.assigned) - what[0], what[1]))
        elif action == "cancel":
            world.send(who, cancel(max(world.assigned) - what[0], what[1]))
        elif action == "answer":
            world.child.answer(who)
        elif action == "ask":
            world.child.ask()
        elif action == "reply":
            world.reply(who, what)
        elif action == "close":  # the session ends: the proxy cancels its requests
            world.ports[who].close("client left")


SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(plan=steps(2), data=st.data())
def test_two_clients_reach_only_their_own_work(plan, data):
    run(2, plan, data)


@SETTINGS
@given(plan=steps(3), data=st.data())
def test_three_clients_reach_only_their_own_work(plan, data):
    run(3, plan, data)
