"""The house's arrows point one way: `trajectory/` (what is computed, the format, reading) never
imports `jobs/` (stages, driver, runners, SLURM), and no module of either imports itself back
through others, lazily or not."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("trajectory", "jobs")


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (module level or inside functions)."""
    found = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).glob("*.py"):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            deps = set()
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = (pkg if node.level == 1 else "") if node.level else ""
                    module = ".".join(x for x in (base, node.module) if x)
                    if module in PACKAGES:  # from jobs import build -> jobs.build
                        deps |= {f"{module}.{a.name}" for a in node.names}
                    elif module.split(".")[0] in PACKAGES:
                        deps.add(module)
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
            found[name] = deps
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    out, done = [], set()

    def walk(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                out.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                walk(nxt, path + [nxt])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            walk(node, [node])
    return out


def test_trajectory_never_imports_jobs():
    graph = imports()
    assert "trajectory.plan" in graph and "jobs.driver" in graph  # the scan found the modules
    upward = sorted((m, d) for m, ds in graph.items() if m.startswith("trajectory")
                    for d in ds if d.startswith("jobs"))
    assert upward == []


def test_no_import_cycles():
    found = imports()
    graph = {m: {d for d in ds if d in found} for m, ds in found.items()}
    assert cycles(graph) == []


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
