"""Secrets masked out of a config before it is shown (``--print-config``).

Masked, as ``***``: a string member whose name looks secret (an ``env`` variable like
``API_KEY``, a header like ``Authorization`` or ``Cookie``, a field like ``clientSecret``); in
``args``, the value after a secret-looking flag (``--token X``, ``--api-key=X``); in any
string, what follows ``Bearer``/``Basic``/``Token``, a URL's password and its secret-looking
query values; and any string that took the value of a secret-looking variable (``${GH_TOKEN}``).
Too much is masked rather than too little: ``MONKEY`` looks like a key.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET = re.compile(r"token|secret|passw|pwd|key|credential|auth|cookie|session|private"
                     r"|signature|bearer", re.IGNORECASE)
_SCHEME = re.compile(r"\b(Bearer|Basic|Token|Digest)\s+\S+", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")
_QUERY = re.compile(r"([?&;]([^=&;#\s]+)=)([^&;#\s]*)")
_FLAG = re.compile(r"(-{1,2}[^=\s]+)=(.*)", re.DOTALL)


def looks_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def scrub(text: str) -> str:
    """``text`` with credentials in it masked: a scheme's token, a URL's password, a query's
    secret-looking values."""
    text = _SCHEME.sub(lambda match: f"{match.group(1)} {MASK}", text)
    text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _QUERY.sub(lambda match: match.group(1) + MASK if looks_secret(match.group(2))
                      else match.group(0), text)


def masked(node: Any, secret: set[tuple] = frozenset(), path: tuple = ()) -> Any:
    """A copy of ``node`` with the secrets masked; ``secret``: the paths of strings to mask."""
    if isinstance(node, str):
        return MASK if path in secret else scrub(node)
    if isinstance(node, dict):
        return {key: MASK if isinstance(value, str) and looks_secret(key)
                else masked(value, secret, (*path, key)) for key, value in node.items()}
    if isinstance(node, list):
        items = [masked(item, secret, (*path, index)) for index, item in enumerate(node)]
        return _mask_flag_values(node, items) if path[-1:] == ("args",) else items
    return node


def _mask_flag_values(raw: list, items: list) -> list:
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not item.startswith("-"):
            continue
        flag = _FLAG.fullmatch(item)
        if flag and looks_secret(flag.group(1)):
            items[index] = f"{flag.group(1)}={MASK}"
        elif not flag and looks_secret(item) and index + 1 < len(items) \
                and isinstance(items[index + 1], str):
            items[index + 1] = MASK
    return items
