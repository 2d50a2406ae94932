"""The config file's JSON Schema (``schema.json`` beside this module) and its validator.

The schema is standard JSON Schema (draft 2020-12): an editor can check a file against it.
We validate with this small validator, not the ``jsonschema`` library, for three reasons:
it implements only the keywords the schema uses (the schema is refused at load if it ever
uses another, so a keyword is never silently ignored); a message says where and what was
expected in our words and never echoes the value, which may be a secret (``jsonschema``'s
say ``'sk-...' does not match '^...'``); and start-up stays light (``jsonschema`` brings four
packages, one compiled, and ~95 ms of imports). tests/test_config_file.py checks that it
agrees with ``jsonschema`` on generated files.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

Where = tuple  # a place in the file: the member names and list indexes from its root

# keywords with no effect on validity, and the ones _check implements
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "$comment"}
_KEYWORDS = {"type", "required", "properties", "additionalProperties", "propertyNames",
             "items", "minLength", "minimum", "pattern", "const", "if", "then", "else", "not",
             "$ref"}
_TYPES = {"object": "an object", "array": "a list", "string": "a string",
          "boolean": "true or false", "integer": "a whole number", "number": "a number",
          "null": "null"}
# what a pattern of the schema asks, in words
_PATTERNS = {
    "^[^\\u0000]*$": "must not contain a NUL character (\\u0000)",
    "^[^=\\u0000]+$": "an environment variable name is not empty and has no '=' or NUL",
    "^(?!\\.\\.?$)[A-Za-z0-9._-]+$":
        "a server name is ASCII letters, digits, '-', '_' or '.' (and not '.' or '..')",
    "^[A-Za-z0-9_.-]{1,128}$":
        "a tool name clients accept is 1 to 128 ASCII letters, digits, '_', '-' or '.'",
    "^[A-Za-z0-9_-]{0,32}$": "a prefix is at most 32 ASCII letters, digits, '_' or '-' (\"\" "
                             "for none)",
    "^[!-~]+$": "an API key is visible ASCII characters without spaces ('!' to '~'), and not "
                "empty",
    "^[A-Za-z0-9._@-]{1,64}$": "an id is 1 to 64 ASCII letters, digits, '.', '_', '@' or '-'",
    "^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$":
        "an OAuth scope is printable ASCII without spaces, quotes or backslashes",
    "^(auto|sse|streamablehttp)$": 'must be "auto", "sse" or "streamablehttp"',
    "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$": "a header name is ASCII letters, digits and !#$%&'*+.^_`|~-",
    "^[^\\r\\n\\u0000]*$": "a header value must not contain a line break or NUL",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def json_path(path: Where) -> str:
    """``$.mcpServers.fetch.args[0]``, or ``$.mcpServers["my server"]``: one line always."""
    text = "$"
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _NAME.fullmatch(step):
            text += f".{step}"
        else:
            text += f"[{json.dumps(step)}]"
    return text


@cache
def config_schema() -> dict:
    """The schema shipped in the package, checked to use only keywords we implement."""
    schema = json.loads((Path(__file__).parent / "schema.json").read_text(encoding="utf-8"))
    _only_known(schema)
    return schema


def _only_known(schema: Any) -> None:
    if isinstance(schema, dict):
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise ValueError(f"schema keyword(s) {sorted(unknown)} not implemented")
        for key, sub in schema.items():
            if key in ("properties", "$defs"):
                for each in sub.values():
                    _only_known(each)
            elif key not in _ANNOTATIONS and key not in ("required", "const"):
                _only_known(sub)


def problems(instance: Any, schema: dict | None = None) -> list[tuple[Where, str]]:
    """Every place where ``instance`` breaks the schema, with what was expected there."""
    root = schema if schema is not None else config_schema()
    found: list[tuple[Where, str]] = []
    _check(instance, root, root, (), found)
    return found


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    for kind, name in ((dict, "object"), (list, "array"), (str, "string"), (float, "number")):
        if isinstance(value, kind):
            return name
    return "null"


def _is(value: Any, kind: str) -> bool:
    actual = _type_of(value)
    return actual == kind or (kind == "number" and actual == "integer")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # JSON's false is not 0
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _check(value: Any, schema: dict, root: dict, path: Where, found: list) -> None:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        _check(value, root["$defs"][name], root, path, found)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and not any(_is(value, each) for each in kinds):
        expected = " or ".join(_TYPES[each] for each in kinds)
        found.append((path, f"expected {expected}, got {_TYPES[_type_of(value)]}"))
        return
    if "const" in schema and not _same(value, schema["const"]):
        found.append((path, f"must be {json.dumps(schema['const'])}"))
    if "if" in schema:
        scratch: list = []
        _check(value, schema["if"], root, path, scratch)
        holds = not scratch
        branch = schema.get("then" if holds else "else")
        if branch is not None:
            _check(value, branch, root, path, found)
    if "not" in schema:
        scratch = []
        _check(value, schema["not"], root, path, scratch)
        if not scratch:  # the schema's own words: "not" has no natural message
            found.append((path, schema["not"].get("description", "is not allowed here")))
    if isinstance(value, str):
        _check_string(value, schema, path, found)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append((path, f"must be at least {schema['minimum']}"))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], root, (*path, index), found)
    elif isinstance(value, dict):
        _check_object(value, schema, root, path, found)


def _check_string(value: str, schema: dict, path: Where, found: list) -> None:
    least = schema.get("minLength", 0)
    if len(value) < least:
        found.append((path, "must not be empty" if least == 1 else
                      f"must be at least {least} characters"))
    pattern = schema.get("pattern")
    if pattern is not None and not re.search(pattern, value):
        found.append((path, _PATTERNS.get(pattern, f"must match {json.dumps(pattern)}")))


def _check_object(value: dict, schema: dict, root: dict, path: Where, found: list) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            found.append((path, f"{json.dumps(name)} is required"))
    names = schema.get("propertyNames")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, member in value.items():
        if names is not None:
            _check(key, names, root, (*path, key), found)
        if key in properties:
            _check(member, properties[key], root, (*path, key), found)
        elif extra is False:
            found.append(((*path, key), "is not a known field"))
        elif isinstance(extra, dict):
            _check(member, extra, root, (*path, key), found)
