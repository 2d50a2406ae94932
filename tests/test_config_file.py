"""The named-server config file, unit by unit: ``${VAR}`` expansion, the schema and its
validator (checked against the ``jsonschema`` library on generated files), the loader's
refusals, and the masking of ``--print-config``. The command itself: test_check_config.py."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_proxy.config.config_file import read_config
from mcp_proxy.config.masking import MASK, masked
from mcp_proxy.config.schema import config_schema, json_path, problems
from mcp_proxy.config.variables import Expansion
from mcp_proxy.errors import ConfigError, ConfigProblems

HYPOTHESIS = settings(max_examples=200, deadline=None, database=None)
ENV = {"HOME": "/home/u", "EMPTY": "", "GH_TOKEN": "ghp_secret", "DOLLAR": "${HOME}"}


def expand(text: str, environ: dict | None = None) -> tuple[str, list[str]]:
    expansion = Expansion(ENV if environ is None else environ)
    result = expansion.text(text)
    return result, [message for _, message in expansion.problems]


@pytest.mark.parametrize("text, result", [
    ("${HOME}/data", "/home/u/data"),
    ("a${HOME}b${HOME}", "a/home/ub/home/u"),
    ("${MISSING:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),  # as in a shell: unset or empty
    ("${HOME:-fallback}", "/home/u"),
    ("${MISSING:-}", ""),
    ("$${HOME}", "${HOME}"),  # the escape
    ("$$${HOME}", "$${HOME}"),  # only $${ is one: the first $ is itself
    ("^a$", "^a$"),  # a lone $ is itself, as before variables
    ("pa$$word", "pa$$word"),
    ("$HOME", "$HOME"),  # only the braced form is a reference
    ("${DOLLAR}", "${HOME}"),  # one pass: a value is not expanded again
    ("${MISSING:-a:-b}", "a:-b"),
])
def test_expansion(text, result):
    assert expand(text) == (result, [])


@pytest.mark.parametrize("text, message", [
    ("${MISSING}", "${MISSING} is not set: set it, or give a default with ${MISSING:-default}"),
    ("x${HOME", "'${' without a closing '}'"),
    ("${}", '"${}" is not a variable reference'),
    ("${1A}", '"${1A}" is not a variable reference'),
    ("${A B}", '"${A B}" is not a variable reference'),
    ("${A-b}", '"${A-b}" is not a variable reference'),  # only :- is a default
    ("${MISSING:-${HOME}}", "the default of ${MISSING:-...} holds '${'"),
])
def test_expansion_refusals_name_the_variable(text, message):
    result, found = expand(text)
    assert result == text and len(found) == 1 and found[0].startswith(message)


def test_a_secret_variable_marks_its_string():
    expansion = Expansion(ENV)
    tree = expansion.tree({"args": ["--x", "token=${GH_TOKEN}", "${HOME}"]})
    assert tree == {"args": ["--x", "token=ghp_secret", "/home/u"]}
    assert expansion.secret == {("args", 1)}


@HYPOTHESIS
@given(st.text(alphabet=st.sampled_from("${}:-_aZ9 \0\n\"\\é"), max_size=30))
def test_hostile_strings_never_crash_and_every_problem_is_one_line(text):
    result, found = expand(text, {"a": "v", "Z9": ""})
    assert isinstance(result, str)
    assert all("\n" not in message and "\r" not in message for message in found)
    if not found and "${" not in text:
        assert result == text


# --- the schema and its validator ------------------------------------------------------

def test_the_schema_is_valid_json_schema_using_only_implemented_keywords():
    jsonschema.Draft202012Validator.check_schema(config_schema())
    with pytest.raises(ValueError, match="not implemented"):
        from mcp_proxy.config.schema import _only_known

        _only_known({"type": "object", "oneOf": []})


@pytest.mark.parametrize("path, text", [
    ((), "$"),
    (("mcpServers", "fetch", "args", 0), "$.mcpServers.fetch.args[0]"),
    (("mcpServers", "a b", "env", "X=1"), '$.mcpServers["a b"].env["X=1"]'),
    (("mcpServers", "line\nbreak"), '$.mcpServers["line\\nbreak"]'),
])
def test_json_path(path, text):
    assert json_path(path) == text


@pytest.mark.parametrize("servers, where, message", [
    ({"a": {"command": 5}}, "$.mcpServers.a.command", "expected a string, got a whole number"),
    ({"a": {"command": ""}}, "$.mcpServers.a.command", "must not be empty"),
    ({"a": {}}, "$.mcpServers.a", '"command" is required'),
    ({"a": {"command": "x", "args": "y"}}, "$.mcpServers.a.args", "expected a list, got a string"),
    ({"a": {"command": "x", "args": ["\0"]}}, "$.mcpServers.a.args[0]",
     "must not contain a NUL character"),
    ({"a": {"command": "x", "env": {"A=B": "1"}}}, '$.mcpServers.a.env["A=B"]',
     "an environment variable name is not empty and has no '=' or NUL"),
    ({"a": {"command": "x", "env": {"": "1"}}}, '$.mcpServers.a.env[""]',
     "an environment variable name"),
    ({"a": {"command": "x", "env": {"A": "\0"}}}, "$.mcpServers.a.env.A", "must not contain a NUL"),
    ({"a": {"command": "x", "env": {"A": 1}}}, "$.mcpServers.a.env.A", "expected a string"),
    ({"a": {"command": "x", "maxSessions": 0}}, "$.mcpServers.a.maxSessions", "must be at least 1"),
    ({"a": {"command": "x", "maxSessions": True}}, "$.mcpServers.a.maxSessions",
     "expected a whole number, got true or false"),
    ({"a": {"command": "x", "maxSessions": 1.5}}, "$.mcpServers.a.maxSessions",
     "expected a whole number, got a number"),
    ({"a": {"command": "x", "shared": 1}}, "$.mcpServers.a.shared", "expected true or false"),
    ({"..": {"command": "x"}}, '$.mcpServers[".."]', "a server name is ASCII letters"),
    ({"é": {"command": "x"}}, '$.mcpServers["\\u00e9"]', "a server name is ASCII letters"),
    ({"a": []}, "$.mcpServers.a", "expected an object, got a list"),
])
def test_schema_problems_give_the_json_path_and_what_was_expected(servers, where, message):
    found = [(json_path(path), text) for path, text in problems({"mcpServers": servers})]
    assert len(found) == 1 and found[0][0] == where and found[0][1].startswith(message), found


def test_a_disabled_server_needs_no_command():
    assert problems({"mcpServers": {"a": {"enabled": False}}}) == []
    assert problems({"mcpServers": {"a": {"enabled": 0}}}) != []  # 0 is not false


# Files near the schema's shape: mostly right, each part sometimes of a wrong kind.
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(-2, 3),
                    st.text(alphabet="ab=.\0", max_size=3))
_ANY = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=2)
                    | st.dictionaries(st.text("ab", max_size=2), inner, max_size=2), max_leaves=4)
_NAME = st.sampled_from(["a", "b.c", "..", "a b", "", "x=y", "\0", "é"])
_ENTRY = st.fixed_dictionaries({}, optional={
    "command": st.one_of(st.text(alphabet="ab\0", max_size=2), _ANY),
    "args": st.one_of(st.lists(st.text(alphabet="a\0", max_size=2), max_size=3), _ANY),
    "env": st.one_of(st.dictionaries(_NAME, st.text(alphabet="a\0", max_size=2), max_size=3),
                     _ANY),
    "enabled": st.one_of(st.booleans(), _ANY), "cwd": _ANY,
    "shared": st.one_of(st.booleans(), _ANY),
    "maxSessions": st.one_of(st.integers(-1, 3), st.sampled_from([1.0, 2.5, True]), _ANY),
    "other": _ANY})
_FILE = st.one_of(_ANY, st.fixed_dictionaries(
    {"mcpServers": st.one_of(st.dictionaries(_NAME, st.one_of(_ENTRY, _ANY), max_size=3), _ANY)},
    optional={"globalShortcut": _ANY}))


@HYPOTHESIS
@given(_FILE)
def test_the_validator_agrees_with_jsonschema(document):
    reference = jsonschema.Draft202012Validator(config_schema())
    ours = problems(document)
    assert (ours == []) == reference.is_valid(document), ours
    assert {path for path, _ in ours} >= {tuple(error.absolute_path)
                                          for error in reference.iter_errors(document)
                                          if "propertyNames" not in error.schema_path}
    assert all("\n" not in json_path(path) + message for path, message in ours)


# --- the loader ------------------------------------------------------------------------

def write(tmp_path, text: str) -> str:
    path = tmp_path / "servers.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_loader_expands_validates_and_builds_the_specs(tmp_path):
    path = write(tmp_path, json.dumps({"mcpServers": {
        "a": {"command": "${HOME}/bin/s", "args": ["--token", "${GH_TOKEN}"],
              "env": {"K": "${MISSING:-d}"}, "maxSessions": 2.0, "shared": True},
        "off": {"enabled": False, "command": "${MISSING}"},  # not expanded: left out
    }, "other": "${MISSING}"}))
    loaded = read_config(path, environ=ENV)
    spec = loaded.specs["a"]
    assert (spec.command, spec.args, spec.env) == ("/home/u/bin/s", ["--token", "ghp_secret"],
                                                   {"K": "d"})
    assert spec.max_sessions == 2 and type(spec.max_sessions) is int and spec.shared
    assert set(loaded.specs) == {"a"} and loaded.servers["off"]["command"] == "${MISSING}"
    assert loaded.secret == {("mcpServers", "a", "args", 1)}


@pytest.mark.parametrize("text, message", [
    ('{"mcpServers": {"a": {"command": "x"}, "a": {"command": "y"}}}',
     '$.mcpServers: "a" is given more than once'),
    ('{"mcpServers": {"a": {"command": "x", "env": {"K": "1", "K": "2"}}}}',
     '$.mcpServers.a.env: "K" is given more than once'),
    ('{"mcpServers": {"a": {"command": "\\ud800"}}}', "$.mcpServers.a.command: holds a lone"),
    ('{"mcpServers": {"a": {"command": "x", "env": {"T": "${NOPE}"}}}}',
     "$.mcpServers.a.env.T: ${NOPE} is not set"),
    ('{"servers": {}}', '$: "mcpServers" is required'),
    ("[]", "$: expected an object, got a list"),
])
def test_loader_refusals_are_one_line_each_with_the_file_and_path(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigProblems) as caught:
        read_config(path, environ=ENV)
    assert caught.value.problems[0] == f"{path}: {message}" or \
        caught.value.problems[0].startswith(f"{path}: {message}")


@pytest.mark.parametrize("text, message", [
    ("{", "is not valid JSON"), ('{"a": NaN}', "is not valid JSON: NaN is not valid JSON"),
    ('{"a": 1e999}', "number out of range"), (b"\xff\xfe", "is not UTF-8 text"),
    ("[" * 65 + "]" * 65, "nested deeper than 64 levels"),
    ("[" * 100000 + "]" * 100000, "nested deeper than 64 levels"),  # json's own limit
])
def test_unreadable_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "servers.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message) as caught:
        read_config(str(path))
    assert "\n" not in str(caught.value)


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    path = write(tmp_path, json.dumps({"mcpServers": {
        "a": {"command": 1}, "b": {"args": [2]}, "c": {"command": "x", "env": {"V": "${NOPE}"}}}}))
    with pytest.raises(ConfigProblems) as caught:
        read_config(path, environ={})
    assert len(caught.value.problems) == 4
    assert str(caught.value).endswith("(and 3 more)")


# --- masking ---------------------------------------------------------------------------

def test_masking():
    shown = masked({"mcpServers": {"a": {
        "command": "run", "args": ["--api-key", "k", "--token=t", "--port", "1", "${HOME}",
                                   "https://u:pw@h/x?access_token=z&page=2", "Bearer abc"],
        "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "g", "DB_PASSWORD": "p", "PLAIN": "v",
                "FROM_SECRET_VAR": "s"},
        "headers": {"Authorization": "Basic x", "Cookie": "c", "Accept": "text/plain"},
        "maxSessions": 2}}}, {("mcpServers", "a", "env", "FROM_SECRET_VAR")})["mcpServers"]["a"]
    assert shown["args"] == ["--api-key", MASK, f"--token={MASK}", "--port", "1", "${HOME}",
                             f"https://u:{MASK}@h/x?access_token={MASK}&page=2", f"Bearer {MASK}"]
    assert shown["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": MASK, "DB_PASSWORD": MASK,
                            "PLAIN": "v", "FROM_SECRET_VAR": MASK}
    assert shown["headers"] == {"Authorization": MASK, "Cookie": MASK, "Accept": "text/plain"}
    assert shown["maxSessions"] == 2


_HOSTILE = st.text(alphabet=st.sampled_from("${}:-_aZ \0\n\"é\ud800"), max_size=12)


@HYPOTHESIS
@given(st.one_of(_FILE, st.fixed_dictionaries({"mcpServers": st.dictionaries(
    _HOSTILE, st.fixed_dictionaries({"command": _HOSTILE}, optional={
        "args": st.lists(_HOSTILE, max_size=3), "env": st.dictionaries(_HOSTILE, _HOSTILE),
        "cwd": _HOSTILE}), max_size=3)})))
def test_any_file_loads_or_is_refused_in_lines(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("c") / "servers.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    try:
        loaded = read_config(str(path), environ={"a": "1", "Z": ""})
    except ConfigProblems as exc:
        assert exc.problems and all("\n" not in line and line.startswith(f"{path}: $")
                                    for line in exc.problems)
    else:
        for spec in loaded.specs.values():
            assert all("\0" not in text for text in (*spec.argv(), *spec.env, *spec.env.values()))
            assert all("=" not in name for name in spec.env)


@HYPOTHESIS
@given(st.text(alphabet=st.sampled_from('{}[]":,${}\\u0 \n1aé'), max_size=60))
def test_any_text_loads_or_is_refused_in_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("t") / "servers.json"
    path.write_text('{"mcpServers": {"a": {"command": "x", "args": [' + text + "]}}}",
                    encoding="utf-8")
    try:
        read_config(str(path), environ={})
    except ConfigProblems as exc:
        assert all("\n" not in line for line in exc.problems)
    except ConfigError as exc:
        assert "\n" not in str(exc)
