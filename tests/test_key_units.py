"""API keys without a running proxy: the key file's text, the config file's ``auth``, the
verdict on a request's headers, and the one-line errors of the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import RAW_SERVER
from mcp_proxy.config.config_file import read_config
from mcp_proxy.config.key_file import key_id, parse_key_file
from mcp_proxy.config.settings import ApiKey, ServerSettings, ServerSpec
from mcp_proxy.errors import ConfigError
from mcp_proxy.server.api_keys import ACCEPTED, FORBIDDEN, UNAUTHORIZED, KeyRing, sent_keys


def test_the_key_file_skips_comments_and_blanks_and_trims_lines():
    keys = parse_key_file("# team keys\n\n  one  \n\ttwo#three\n   # indented comment\none\n",
                          "keys.txt")
    assert [key.key for key in keys] == ["one", "two#three"]  # no trailing comments; once
    assert keys[0].id == key_id("one") and keys[0].servers is None and not keys[0].admin


@pytest.mark.parametrize("text, message", [
    ("", "keys.txt holds no key"),
    ("# nothing\n\n", "keys.txt holds no key"),
    ("good\nbad key here\n", "keys.txt, line 2: an API key is visible ASCII"),
    ("gööd\n", "keys.txt, line 1: an API key is visible ASCII"),
])
def test_a_bad_key_file_is_named_by_line_never_by_its_text(text, message):
    with pytest.raises(ConfigError) as refused:
        parse_key_file(text, "keys.txt")
    assert str(refused.value).startswith(message)
    assert "bad key" not in str(refused.value) and "gööd" not in str(refused.value)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=200))
def test_any_key_file_text_is_keys_or_one_line_error(text):
    try:
        keys = parse_key_file(text, "k")
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert keys and all(key.key.isascii() and " " not in key.key for key in keys)


@pytest.mark.parametrize("environ, sent", [
    ({}, []),
    ({"HTTP_AUTHORIZATION": "Bearer k"}, ["k"]),
    ({"HTTP_AUTHORIZATION": "  bEaReR     k   "}, ["k"]),
    ({"HTTP_AUTHORIZATION": "Bearer"}, []),
    ({"HTTP_AUTHORIZATION": "Basic k"}, []),
    ({"HTTP_X_API_KEY": " k "}, ["k"]),
    ({"HTTP_AUTHORIZATION": "Bearer a", "HTTP_X_API_KEY": "b"}, ["a", "b"]),
])
def test_the_keys_a_request_carries(environ, sent):
    assert sent_keys(environ) == sent


def ring(*keys: ApiKey) -> KeyRing:
    return KeyRing(ServerSettings(servers={"": ServerSpec("x"), "one": ServerSpec("x")},
                                  api_keys=list(keys)))


def test_a_verdict_names_the_caller_and_checks_the_server():
    keys = ring(ApiKey("all-key", "everyone"), ApiKey("one-key", "team", frozenset({"one"})))
    environ = {"HTTP_X_API_KEY": "one-key"}
    assert keys.check(environ, "one") == ACCEPTED and environ["mcp_proxy.auth"] == "key:team"
    assert keys.check({"HTTP_X_API_KEY": "one-key"}, "") == FORBIDDEN  # the default server
    assert keys.check({"HTTP_X_API_KEY": "one-key"}, None) == ACCEPTED  # /status: no admins
    assert keys.check({"HTTP_X_API_KEY": "all-key"}, "") == ACCEPTED
    refused = {"HTTP_X_API_KEY": "nope"}
    assert keys.check(refused, "one") == UNAUTHORIZED and "mcp_proxy.auth" not in refused
    # a wrong Bearer does not hide a right X-API-Key (a gateway may hold Authorization)
    assert keys.check({"HTTP_AUTHORIZATION": "Bearer gw", "HTTP_X_API_KEY": "all-key"},
                      "") == ACCEPTED


def test_once_a_key_is_admin_only_admins_open_status():
    keys = ring(ApiKey("ops-key", "ops", admin=True), ApiKey("dev-key", "dev"))
    assert keys.check({"HTTP_X_API_KEY": "ops-key"}, None) == ACCEPTED
    assert keys.check({"HTTP_X_API_KEY": "dev-key"}, None) == FORBIDDEN
    assert keys.check({"HTTP_X_API_KEY": "dev-key"}, "") == ACCEPTED


def write_config(tmp_path, auth) -> str:
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {"one": {"command": RAW_SERVER[0]}, "off": {
        "enabled": False}}, "auth": auth}))
    return str(path)


def test_config_keys_take_variables_ids_servers_and_admin(tmp_path):
    path = write_config(tmp_path, {"keys": [
        {"key": "${TEAM_KEY}", "id": "team", "servers": ["one", "off"]},
        {"key": "plain-key", "admin": True}]})
    loaded = read_config(path, environ={"TEAM_KEY": "from-env"})
    assert loaded.keys == [ApiKey("from-env", "team", frozenset({"one", "off"})),
                           ApiKey("plain-key", key_id("plain-key"), None, True)]
    assert "from-env" not in repr(loaded.keys)


@pytest.mark.parametrize("auth, problem", [
    ({"keys": [{"key": "a b"}]}, "$.auth.keys[0].key: an API key is visible ASCII"),
    ({"keys": [{"key": ""}]}, "$.auth.keys[0].key: an API key is visible ASCII"),
    ({"keys": [{"id": "x"}]}, '$.auth.keys[0]: "key" is required'),
    ({"keys": [{"key": "k", "id": "no spaces"}]}, "$.auth.keys[0].id: an id is 1 to 64"),
    ({"keys": [{"key": "k", "servers": ["two"]}]},
     '$.auth.keys[0].servers[0]: no server "two" in mcpServers'),
    ({"keys": [{"key": "k", "scopes": []}]}, "$.auth.keys[0].scopes: is not a known field"),
    ({"keys": [{"key": "k"}, {"key": "k", "id": "b"}]},
     "$.auth.keys[1]: the same key is given twice"),
    ({"keys": {"key": "k"}}, "$.auth.keys: expected a list"),
    ({"tokens": []}, "$.auth.tokens: is not a known field"),
])
def test_config_key_problems_are_one_line_each_and_never_show_the_key(tmp_path, auth,
                                                                       problem):
    path = write_config(tmp_path, auth)
    with pytest.raises(ConfigError) as refused:
        read_config(path, environ={})
    assert any(line == f"{path}: {problem}" or line.startswith(f"{path}: {problem}")
               for line in refused.value.problems), refused.value.problems
    assert "a b" not in str(refused.value.problems)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_proxy", *args], capture_output=True,
                          text=True, timeout=30, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, error", [
    (("--auth-token", "has space"), "--auth-token: an API key is visible ASCII"),
    (("--auth-token", ""), "--auth-token: an API key is visible ASCII"),
    (("--auth-token-file", "/nonexistent/keys"), "cannot read the key file /nonexistent/keys"),
])
def test_cli_key_errors_are_one_line(args, error):
    done = cli(*args, "--check-config", "--", *RAW_SERVER)
    assert done.returncode == 1 and done.stderr.strip().startswith(f"mcp-proxy: error: {error}")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "has space" not in done.stderr


def test_the_same_key_twice_with_two_ids_is_refused(tmp_path):
    path = write_config(tmp_path, {"keys": [{"key": "shared-key", "id": "team"}]})
    done = cli("--auth-token", "shared-key", "--named-server-config", path, "--check-config")
    assert done.returncode == 1 and "the same API key is given twice (ids" in done.stderr
    assert "shared-key" not in done.stderr


def test_the_environment_gives_a_key_and_print_config_masks_keys(tmp_path):
    path = write_config(tmp_path, {"keys": [{"key": "${TEAM_KEY}", "id": "team"},
                                            {"key": "literal-key"}]})
    done = cli("--named-server-config", path, "--print-config", env={"TEAM_KEY": "env-key"})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["auth"]["keys"]
    assert shown == [{"key": "***", "id": "team"}, {"key": "***"}]
    ok = cli("--check-config", "--", *RAW_SERVER, env={"MCP_PROXY_AUTH_TOKEN": "env-token"})
    assert ok.returncode == 0, ok.stderr
