"""The package's module graph: stages import downwards, never in a circle (lazy imports inside functions
count too: they are cycles all the same once both run)."""

import ast
from pathlib import Path

import dubtool

PKG = Path(dubtool.__file__).resolve().parent
KNOWN: set[frozenset] = set()


def _graph() -> dict[str, set[str]]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = ("dubtool",) + f.with_suffix("").relative_to(PKG).parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        base = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                pkg = ".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                targets = [pkg] + [f"{pkg}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dubtool"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("dubtool")]
            graph[m] |= {t for t in targets if t in mods and t != m and t != "dubtool"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports_it_must():
    g = _graph()
    assert "dubtool.fbx" in g["dubtool.export"] and "dubtool.keyframes" in g["dubtool.keyframes_llm"]


def test_no_module_imports_in_a_circle():
    assert set(_cycles(_graph())) <= KNOWN
