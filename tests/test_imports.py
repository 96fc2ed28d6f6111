"""The package's import graph (communication attaches from outside the core; no circles).

Read from the source with ``ast``, so imports inside functions count too (a circle hidden in a
function still means two modules that cannot be understood apart). Every module is a node; ``import
a.b`` and ``from a import b`` add an edge to ``a.b`` when that is a module of the package, else to
``a``. Importing a module also runs its packages' ``__init__``; those implicit edges are left out
(a package importing its own submodules would otherwise be a circle by definition).
"""
from __future__ import annotations

import ast
import functools
import pathlib

import pytest

PKG_DIR = pathlib.Path(__file__).resolve().parents[1] / "poseidon_cli"
PKG = "poseidon_cli"
CORE = ("poseidon_cli.net", "poseidon_cli.solver", "poseidon_cli.layers")
COMMUNICATION = ("poseidon_cli.ps", "poseidon_cli.distributed")
# Circles still being taken apart in parallel work of issue 12 (launch <-> worker: the ClusterSpec
# split). Each entry must still exist: the test fails once it is gone, so the entry gets deleted.
KNOWN_CIRCLES: set[frozenset] = set()


def module_name(path: pathlib.Path, pkg_dir: pathlib.Path) -> str:
    rel = path.relative_to(pkg_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(pkg_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    return {module_name(p, pkg_dir): p for p in sorted(pkg_dir.rglob("*.py"))}


def imports_of(name: str, path: pathlib.Path, known: set) -> set:
    """The package modules ``name`` imports, anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()

    def resolve(target: str):
        while target and target not in known:
            target = target.rpartition(".")[0]  # an attribute of a module: the module
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PKG:
                    resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PKG:
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                resolve(sub if sub in known else mod)
    return out


@functools.lru_cache(maxsize=None)
def graph(pkg_dir: pathlib.Path = PKG_DIR) -> dict[str, set]:
    mods = modules(pkg_dir)
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def circles(g: dict[str, set]) -> list[frozenset]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def reachable(g: dict[str, set], start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for w in g.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_walker_sees_relative_absolute_and_function_level_imports(tmp_path):
    pkg = tmp_path / PKG
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import thing\n")
    (pkg / "c.py").write_text("import poseidon_cli.sub.b as bb\nfrom poseidon_cli import a\n")
    g = graph(pkg)
    assert g["poseidon_cli.a"] == {"poseidon_cli.sub.b"}
    assert g["poseidon_cli.sub.b"] == {"poseidon_cli.a"}
    assert g["poseidon_cli.c"] == {"poseidon_cli.sub.b", "poseidon_cli.a"}
    assert circles(g) == [frozenset({"poseidon_cli.a", "poseidon_cli.sub.b"})]


def test_no_import_circle_in_the_package():
    found = set(circles(graph()))
    new = found - KNOWN_CIRCLES
    assert not new, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in new)
    gone = KNOWN_CIRCLES - found
    assert not gone, "circle(s) no longer there, delete from KNOWN_CIRCLES: " + "; ".join(
        " <-> ".join(sorted(c)) for c in gone)


@pytest.mark.parametrize("core", CORE)
def test_net_solver_and_layers_reach_nothing_of_ps_or_distributed(core):
    g = graph()
    for mod in [m for m in g if under(m, (core,))]:
        bad = sorted(m for m in reachable(g, mod) if under(m, COMMUNICATION))
        assert not bad, f"{mod} imports (directly or through others) {bad}"


def test_ps_transport_is_an_interface_that_imports_no_implementation():
    g = graph()
    assert g["poseidon_cli.ps.transport"] == set()
    # client-side modules take constants from ps/protocol.py, never from server-side modules
    server_side = {"poseidon_cli.ps.server", "poseidon_cli.ps.tcp_server", "poseidon_cli.ps.store"}
    for client_side in ("poseidon_cli.ps.client", "poseidon_cli.ps.grpc_transport",
                        "poseidon_cli.ps.tcp_transport"):
        assert not g[client_side] & server_side, (client_side, g[client_side] & server_side)
