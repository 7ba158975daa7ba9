"""The module import graph of the project, and the check that its arrows only go downhill.

    .venv/bin/python scripts/import_graph.py            # check; print the layer graph
    .venv/bin/python scripts/import_graph.py --markdown # the graph as a Markdown list
    .venv/bin/python scripts/import_graph.py --mermaid  # ... as a Mermaid diagram
    .venv/bin/python scripts/import_graph.py --update-doc  # rewrite it in docs/internals.md

Static: every ``import``/``from … import`` of a project module anywhere in a file (also inside
functions — a lazy import is still a dependency) is an arrow. Layers, top to bottom: ``rho_cli``
and ``deployments`` → ``flows`` → ``tasks`` → ``rho_core`` (the bottom; it imports only
itself). Checked: (1) ``rho_core``
imports nothing from ``rho_cli``, ``tasks``, ``flows``, ``deployments``; (2) ``tasks`` nothing
from ``flows``, ``rho_cli``, ``deployments``; (3) ``flows`` nothing from ``rho_cli``,
``deployments``; (4) no cycles between modules. Exit status 1 on a violation.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rho_core", "rho_cli", "tasks", "flows", "deployments")
#: package -> packages it must not import
FORBIDDEN = {
    "rho_core": {"rho_cli", "tasks", "flows", "deployments"},
    "tasks": {"flows", "rho_cli", "deployments"},
    "flows": {"rho_cli", "deployments"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(p)] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                up = up[: len(up) - (node.level - 1)] if node.level > 1 else up
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                add(full if full in known else base)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in sorted(g.items()):
        top = m.split(".")[0]
        for d in sorted(deps):
            if d.split(".")[0] in FORBIDDEN.get(top, ()):
                bad.append(f"{m} imports {d} (uphill: {top} must not import {d.split('.')[0]})")
    for comp in cycles(g):
        bad.append("import cycle: " + " ↔ ".join(comp))
    return bad


def layer_edges(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package-level arrows (rho_core split into its subpackages' top modules is too much)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for m, deps in g.items():
        for d in deps:
            a, b = m.split(".")[0], d.split(".")[0]
            if a != b:
                edges[a].add(b)
    return edges


def markdown(g: dict[str, set[str]]) -> str:
    lines = ["Package arrows (A → B: A imports B):", ""]
    for a, bs in sorted(layer_edges(g).items()):
        lines.append(f"- `{a}` → {', '.join(f'`{b}`' for b in sorted(bs))}")
    lines += ["", "Modules of `rho_core` and what they import inside `rho_core`:", ""]
    for m, deps in sorted(g.items()):
        if m.startswith("rho_core"):
            inner = sorted(d.removeprefix("rho_core.") for d in deps if d.startswith("rho_core"))
            lines.append(f"- `{m.removeprefix('rho_core.')}` → {', '.join(inner) or '—'}")
    return "\n".join(lines)


def mermaid(g: dict[str, set[str]]) -> str:
    lines = ["```mermaid", "graph TD"]
    for a, bs in sorted(layer_edges(g).items()):
        for b in sorted(bs):
            lines.append(f"  {a} --> {b}")
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="print the graph as Markdown")
    ap.add_argument("--mermaid", action="store_true", help="print the package graph as Mermaid")
    ap.add_argument("--update-doc", action="store_true", help="rewrite it in docs/internals.md")
    args = ap.parse_args(argv)
    g = graph()
    if args.update_doc:
        doc = ROOT / "docs" / "internals.md"
        text = doc.read_text()
        start, end = "<!-- import-graph:start -->", "<!-- import-graph:end -->"
        if start not in text or end not in text:
            print(f"{doc} lacks the {start} … {end} markers", file=sys.stderr)
            return 2
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        body = f"{mermaid(g)}\n\n{markdown(g)}"
        doc.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    elif args.markdown:
        print(markdown(g))
    elif args.mermaid:
        print(mermaid(g))
    else:
        for a, bs in sorted(layer_edges(g).items()):
            print(f"{a} -> {', '.join(sorted(bs))}")
    bad = violations(g)
    for line in bad:
        print(f"VIOLATION: {line}", file=sys.stderr)
    n_edges = sum(len(v) for v in g.values())
    print(f"{len(g)} modules, {n_edges} import arrows, {len(bad)} violation(s)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
