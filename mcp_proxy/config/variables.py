"""``${VAR}`` and ``${VAR:-default}`` in the strings of the config file, from our environment.

- ``${VAR}``: the variable's value; unset is an error naming it and where it is.
- ``${VAR:-default}``: the value, or ``default`` when the variable is unset or empty (as in a
  POSIX shell and Docker Compose). A default is plain text: it cannot hold another ``${``.
- ``$${`` is a literal ``${``. A ``$`` not followed by ``{`` is itself (``"^a$"``, ``"pa$s"``
  mean what they did before variables), so ``$$`` alone is two dollars.

Values are expanded once: a variable whose value holds ``${`` is taken as it is. Only
strings that are values are expanded, never member names (server and variable names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mcp_proxy.config.masking import looks_secret
from mcp_proxy.config.schema import Where

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HINT = "write ${NAME} or ${NAME:-default} (NAME: letters, digits, '_'), or $${ for a literal ${"


class Expansion:
    """One walk over a tree: the expanded tree, the problems, the strings holding a secret."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[tuple[Where, str]] = []
        self.secret: set[Where] = set()  # strings that took the value of a secret-named variable

    def tree(self, node: Any, path: Where = ()) -> Any:
        if isinstance(node, str):
            return self.text(node, path)
        if isinstance(node, list):
            return [self.tree(item, (*path, index)) for index, item in enumerate(node)]
        if isinstance(node, dict):
            return {key: self.tree(value, (*path, key)) for key, value in node.items()}
        return node

    def text(self, text: str, path: Where = ()) -> str:
        if "${" not in text:
            return text
        out, start = [], 0
        while (at := text.find("${", start)) >= 0:
            if at > start and text[at - 1] == "$":  # $${: a literal ${
                out.append(text[start:at - 1] + "${")
                start = at + 2
                continue
            end = text.find("}", at + 2)
            if end < 0:
                return self._refuse(path, f"'${{' without a closing '}}': {_HINT}", text)
            value = self._value(text[at + 2:end], path)
            if value is None:
                return text
            out.append(text[start:at] + value)
            start = end + 1
        out.append(text[start:])
        return "".join(out)

    def _value(self, body: str, path: Where) -> str | None:
        name, colon_dash, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            shown = json.dumps("${" + (body if len(body) <= 40 else body[:40] + "...") + "}")
            return self._refuse(path, f"{shown} is not a variable reference: {_HINT}")
        if "${" in default:
            return self._refuse(path, f"the default of ${{{name}:-...}} holds '${{': a default "
                                      "is plain text")
        value = self.environ.get(name)
        if colon_dash and not value:
            return default
        if value is None:
            return self._refuse(path, f"${{{name}}} is not set: set it, or give a default "
                                      f"with ${{{name}:-default}}")
        if looks_secret(name):
            self.secret.add(path)
        return value

    def _refuse(self, path: Where, message: str, keep: str | None = None) -> Any:
        self.problems.append((path, message))
        return keep

