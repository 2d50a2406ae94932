"""The house rules of the package's layout (ARCHITECTURE.md), checked on the source.

Imports are read with ``ast``: every ``import`` statement counts, at module level or inside a
function, ``TYPE_CHECKING`` ones included, so a circle cannot hide behind a lazy import. A
module's level is 0 when it imports nothing of the package, else one more than the deepest
module it imports: the number of import steps down to the core.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcp_proxy"
# the entry points users name sit above the package's own modules (cli.py and wsgi.py
# assemble the app; __main__ runs cli), and bench/ above those
MAX_LEVEL = 7
ENTRY_LEVELS = {"mcp_proxy.cli": 8, "mcp_proxy.wsgi": 8, "mcp_proxy.__main__": 9}
BENCH_LEVEL = 9
MAX_LINES = 300
# the verbs that move a message are the ones in the package docstring's glossary; these
# were the synonyms that hid which step a function takes
RETIRED_VERBS = ("offer", "put", "take", "push", "transmit", "carry", "on_remote",
                 "to_client", "from_client", "from_child", "receive", "reply")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), str(modules()[name]))


def imported(name: str, node: ast.Import | ast.ImportFrom, known: dict) -> set[str]:
    """The package modules ``node`` (in module ``name``) imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = name if modules().get(name, Path()).name == "__init__.py" else name.rpartition(".")[0]
    if node.level:
        parent = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
        source = f"{parent}.{node.module}" if node.module else parent
    else:
        source = node.module or ""
    found = {f"{source}.{alias.name}" for alias in node.names} & set(known)
    if len(found) < len(node.names) and source in known:
        found.add(source)  # names from the module itself, not submodules
    return found


@cache
def graph() -> dict[str, frozenset[str]]:
    known = modules()
    edges = {}
    for name in known:
        targets = set()
        for node in ast.walk(tree(name)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= imported(name, node, known)
        edges[name] = frozenset(targets - {name})
    return edges


def circles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def chain(edges: dict[str, frozenset[str]], start: str) -> list[str]:
    """The longest import chain down from ``start`` (the graph has no circle)."""
    @cache
    def longest(v: str) -> tuple[str, ...]:
        below = [longest(w) for w in edges.get(v, ())]
        return (v, *max(below, key=len, default=()))
    return list(longest(start))


def bench_graph() -> dict[str, frozenset[str]]:
    edges = dict(graph())
    local = {p.stem for p in (ROOT / "bench").glob("*.py")}
    for path in (ROOT / "bench").glob("*.py"):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module in local:
                    targets.add(f"bench.{node.module}")
                else:
                    targets |= imported("bench.x", node, modules())
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules()}
                targets |= {f"bench.{a.name}" for a in node.names if a.name in local}
        edges[f"bench.{path.stem}"] = frozenset(targets)
    return edges


def test_no_import_circle():
    assert circles(graph()) == []


def test_levels():
    edges = graph()
    assert not circles(edges)
    too_deep = {}
    for name in edges:
        steps = chain(edges, name)
        if len(steps) - 1 > ENTRY_LEVELS.get(name, MAX_LEVEL):
            too_deep[name] = " > ".join(steps)
    assert too_deep == {}


def test_bench_levels():
    edges = bench_graph()
    assert not circles(edges)
    deepest = max((chain(edges, name) for name in edges if name.startswith("bench.")), key=len)
    assert len(deepest) - 1 <= BENCH_LEVEL, " > ".join(deepest)


def test_module_sizes():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_one_name_per_thing():
    classes: dict[str, list[str]] = {}
    stems: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(name)
        if path.name != "__init__.py":
            stems.setdefault(path.stem, []).append(name)
    assert {k: v for k, v in classes.items() if len(v) > 1} == {}
    assert {k: v for k, v in stems.items() if len(v) > 1} == {}


def test_retired_verbs():
    pattern = re.compile(r"_*({})(_|$)".format("|".join(RETIRED_VERBS)))
    found = [f"{name}:{node.lineno} {node.name}" for name in modules()
             for node in ast.walk(tree(name))
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             and pattern.match(node.name)]
    assert found == []


def test_exceptions_derive_from_proxy_error():
    from mcp_proxy import errors

    defined = [f"{name}.{node.name}" for name in modules() if name != "mcp_proxy.errors"
               for node in ast.walk(tree(name)) if isinstance(node, ast.ClassDef)
               and any(re.search(r"(Error|Exception)$", ast.unparse(base))
                       for base in node.bases)]
    assert defined == [], "exceptions live in errors.py"
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.ProxyError), value


@pytest.mark.parametrize("name", ["mcp_proxy.wsgi", "mcp_proxy.gunicorn_conf",
                                  "mcp_proxy.__main__", "mcp_proxy.cli"])
def test_public_entry_points_stay(name):
    assert name in modules()


if __name__ == "__main__":  # python tests/test_layout.py: each module's level, deepest first
    edges = graph()
    for found in circles(edges):
        print("circle:", " ".join(found))
    if not circles(edges):
        for name in sorted(edges, key=lambda n: (-len(chain(edges, n)), n)):
            steps = chain(edges, name)
            print(f"{len(steps) - 1}  {name}  ({' > '.join(steps[1:])})")


def defines(scope: ast.AST, dotted: str) -> bool:
    """Whether ``dotted`` (``Class.method``, ``function.inner``) is defined in ``scope``."""
    head, _, rest = dotted.partition(".")
    for node in ast.walk(scope):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == head:
            if not rest or defines(node, rest):
                return True
    return False


def test_architecture_names_exist():
    """Every ``module:function`` hop that ARCHITECTURE.md names is in the code."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    hops = re.findall(r"`((?:[a-z_]+/)*[a-z_]+):([A-Za-z_][\w.]*)", text)
    assert len(hops) > 40
    missing = []
    for path, dotted in hops:
        name = "mcp_proxy." + path.replace("/", ".")
        if name not in modules() or not defines(tree(name), dotted):
            missing.append(f"{path}:{dotted}")
    assert missing == []
