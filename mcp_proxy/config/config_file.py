"""The named-server config file (``--named-server-config``): read, expanded, validated.

Claude Desktop's ``{"mcpServers": {NAME: {...}}}`` plus our ``cwd``, ``shared``,
``maxSessions``, ``audit``, ``tools``, ``scopes`` and ``toolScopes``, remote servers
(``"url"``: remote_entry.py), and ``"auth": {"keys": [...]}``: the API keys of server mode.
In order: the JSON is parsed (a name twice in one object and a lone surrogate are refused:
JSON parsers read them differently, and a surrogate cannot reach a child's environment), the
enabled servers' strings and ``auth``'s are expanded (``variables.py``), and the result is
validated against the shipped schema (``schema.py``). Every problem is reported, each as one
line ``FILE: $.json.path: what was expected``, in one :class:`ConfigProblems`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp_proxy.config.combined_entry import combined_problems
from mcp_proxy.config.key_file import key_id
from mcp_proxy.config.remote_entry import misplaced, remote_settings
from mcp_proxy.config.schema import Where, config_schema, json_path, problems
from mcp_proxy.config.settings import ApiKey, ServerSpec, rules_of
from mcp_proxy.config.variables import Expansion
from mcp_proxy.core.strict_json import finite_float, reject_constant
from mcp_proxy.errors import ConfigError, ConfigProblems

logger = logging.getLogger("mcp_proxy")

MAX_DEPTH = 64  # the walks below recurse; a real config is five levels deep


@dataclass
class ConfigFile:
    """What a config file resolves to."""

    path: str
    servers: dict  # mcpServers, the enabled ones' strings expanded
    specs: dict[str, ServerSpec]  # the enabled servers
    warnings: list[str] = field(default_factory=list)
    secret: set[Where] = field(default_factory=set)  # strings that took a secret variable
    auth: dict | None = None  # "auth", its strings expanded
    keys: list[ApiKey] = field(default_factory=list)


class _Members(dict):
    """An object of the file, with the member names given more than once."""

    twice: tuple = ()


def _members(pairs: list) -> dict:
    obj = _Members(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        obj.twice = tuple(name for name, _ in pairs if name in seen or seen.add(name))
    return obj


def parse(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        data = json.loads(text, object_pairs_hook=_members, parse_float=finite_float,
                          parse_constant=reject_constant)
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    return data


def _depth(data: Any) -> int:
    """How deep lists and objects nest, without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                todo.extend((child, depth + 1) for child in
                            (node.values() if isinstance(node, dict) else node))
    return deepest


def _text_problems(node: Any, path: Where, found: list) -> None:
    """Names given twice, and strings no child can be given (a lone surrogate)."""
    if isinstance(node, str):
        if not _encodable(node):
            found.append((path, "holds a lone surrogate (\\ud800-\\udfff): not text"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _text_problems(item, (*path, index), found)
    elif isinstance(node, dict):
        for name in getattr(node, "twice", ()):
            found.append((path, f"{json.dumps(name)} is given more than once"))
        for key, value in node.items():
            if not _encodable(key):
                found.append(((*path, json.dumps(key)), "the name holds a lone surrogate"))
            else:
                _text_problems(value, (*path, key), found)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_config(path: str, pass_environment: bool = False,
                environ: Mapping[str, str] | None = None) -> ConfigFile:
    """Read, expand and validate the file; raise :class:`ConfigProblems` naming each problem."""
    data = parse(path)
    found: list[tuple[Where, str]] = []
    _text_problems(data, (), found)
    entries = data.get("mcpServers") if isinstance(data, dict) else None
    auth = data.get("auth") if isinstance(data, dict) else None
    expansion = Expansion(os.environ if environ is None else environ)
    servers = entries
    if isinstance(entries, dict):
        servers = {name: entry if _disabled(entry) else expansion.tree(entry, ("mcpServers", name))
                   for name, entry in entries.items()}
        data = {**data, "mcpServers": servers}
    if auth is not None:
        auth = data["auth"] = expansion.tree(auth, ("auth",))
    found += expansion.problems
    found += problems(data, config_schema())
    if not found and auth is not None:
        found += _unknown_servers(auth, servers)
    if found:
        raise ConfigProblems([f"{path}: {json_path(where)}: {message}"
                              for where, message in found])
    loaded = ConfigFile(path, servers, {}, secret=expansion.secret, auth=auth,
                        keys=_keys(auth, path))
    known = set(config_schema()["$defs"]["server"]["properties"])
    for name, entry in servers.items():
        unknown = sorted(set(entry) - known)
        if unknown:  # a typo would otherwise pass unseen; other clients' fields are harmless
            loaded.warnings.append(f"{path}: {json_path(('mcpServers', name))}: ignoring "
                                   f"{', '.join(map(repr, unknown))} (known: "
                                   f"{', '.join(sorted(known))})")
        if not _disabled(entry) and misplaced(entry):
            loaded.warnings.append(f"{path}: {json_path(('mcpServers', name))}: "
                                   f"{misplaced(entry)}")
        if not _disabled(entry):
            limit = entry.get("maxSessions")
            loaded.specs[name] = ServerSpec(
                entry.get("command", ""), list(entry.get("args", [])),
                dict(entry.get("env", {})), entry.get("cwd"), pass_environment,
                entry.get("shared", False), None if limit is None else int(limit),
                audit=entry.get("audit", False),
                scopes=list(dict.fromkeys(entry.get("scopes", []))),
                tool_scopes=dict(entry.get("toolScopes", {})),
                remote=remote_settings(entry) if "url" in entry else None,
                members=tuple(entry.get("servers", ())), prefixes=dict(entry.get("prefix", {})))
            try:
                loaded.specs[name].tools = rules_of(entry.get("tools"))
            except ConfigError as exc:
                found.append((("mcpServers", name, "tools"), str(exc)))
    for name, entry in servers.items():
        if not _disabled(entry) and "servers" in entry:
            found += combined_problems(name, entry, servers)
    if found:  # what the schema cannot say: two tools renamed to one name, combined members
        raise ConfigProblems([f"{path}: {json_path(where)}: {message}"
                              for where, message in found])
    return loaded


def _unknown_servers(auth: dict, servers: dict) -> list[tuple[Where, str]]:
    """A key's ``servers`` must name servers of the file: a typo would lock a team out."""
    found = []
    for index, entry in enumerate(auth.get("keys", [])):
        for at, name in enumerate(entry.get("servers", [])):
            if name not in servers:
                found.append((("auth", "keys", index, "servers", at),
                              f"no server {json.dumps(name)} in mcpServers"))
    return found


def _keys(auth: dict | None, path: str) -> list[ApiKey]:
    keys, given = [], set()
    for index, entry in enumerate((auth or {}).get("keys", [])):
        key = entry["key"]
        if key in given:  # which of its ids and servers would hold is anyone's guess
            raise ConfigProblems([f"{path}: $.auth.keys[{index}]: the same key is given twice"])
        given.add(key)
        servers = entry.get("servers")
        keys.append(ApiKey(key, entry.get("id") or key_id(key),
                           None if servers is None else frozenset(servers),
                           entry.get("admin", False)))
    return keys


def _disabled(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("enabled") is False


def load_named_servers(path: str, pass_environment: bool) -> ConfigFile:
    """The file read (``specs``: its enabled servers; ``keys``), its warnings logged."""
    loaded = read_config(path, pass_environment)
    for warning in loaded.warnings:
        logger.warning("%s", warning)
    return loaded
