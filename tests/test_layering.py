"""The house's arrows point one way: `trajectory/` (what is computed, the format, reading) never
imports `jobs/` (stages, driver, runners, SLURM), and no module of either imports itself back
through others, lazily or not.

Inside `trajectory/` the rooms are subpackages in the order the data goes through them (README
"How it runs"): a room imports only from the rooms before it and from the shared base, never
from a later one. The base is three modules every room may use and that use nothing of the
project: `atomic` (how a file reaches disk), `record` (the record format, docs/FORMAT.md) and
`splits` (which split a subject is in: the torch datasets and the MEDS export agree on it). The
public surface (`trajectory` itself, `trajectory.torch`, the `replicate` and `demo_notes`
commands) sits on top, like `jobs/`: it may import any room, and no room imports it."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("trajectory", "jobs")
ROOMS = ("raw", "events", "cleaning", "windows", "assembly", "use", "synth")  # data-flow order
BASE = ("trajectory.atomic", "trajectory.record", "trajectory.splits")
PUBLIC = ("trajectory", "trajectory.torch", "trajectory.replicate", "trajectory.demo_notes")


def modules() -> dict[str, Path]:
    """Every module of the project packages, by dotted name (a package by its own name)."""
    found = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (module level or inside functions)."""
    mods = modules()
    found = {}
    for name, f in mods.items():
        package = name if f.stem == "__init__" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                if module.split(".")[0] not in PACKAGES:
                    continue
                for a in node.names:  # from jobs import build -> jobs.build
                    deps.add(f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        found[name] = deps
    return found


def place(module: str) -> str | int:
    """'jobs', 'base', 'public', or the room's index in ROOMS."""
    if module.startswith("jobs"):
        return "jobs"
    if module in BASE:
        return "base"
    if any(module == p or module.startswith(p + ".") for p in PUBLIC[1:]) or module in PUBLIC:
        return "public"
    parts = module.split(".")
    assert len(parts) >= 2 and parts[1] in ROOMS, f"{module}: in no room, not base, not public"
    return ROOMS.index(parts[1])


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
    assert "trajectory.events.plan" in graph and "jobs.driver" in graph  # the scan found them
    upward = sorted((m, d) for m, ds in graph.items() if m.startswith("trajectory")
                    for d in ds if d.startswith("jobs"))
    assert upward == []


def test_no_import_cycles():
    found = imports()
    graph = {m: {d for d in ds if d in found} for m, ds in found.items()}
    assert cycles(graph) == []


def test_every_module_has_a_place():
    """A new module goes into a room (or, deliberately, the base or the public surface)."""
    placed = {m: place(m) for m in modules() if m.startswith("trajectory")}
    assert {p for p in placed.values() if isinstance(p, int)} == set(range(len(ROOMS)))
    assert [m for m in BASE + PUBLIC if m not in placed] == []


def test_rooms_import_only_earlier_rooms_and_the_base():
    wrong = []
    for m, deps in imports().items():
        here = place(m)
        for d in deps:
            there = place(d)
            if here in ("jobs", "public") or there == "jobs":
                continue  # on top; trajectory -> jobs is the test above
            if here == "base" and d != m:
                wrong.append((m, d))  # the base stands on nothing of the project
            elif there == "public" or (isinstance(there, int) and there > here):
                wrong.append((m, d))
    assert sorted(wrong) == []


def test_kernels_stay_beside_their_callers():
    """A numba kernel module is imported only by modules of its own room."""
    wrong = [(m, d) for m, deps in imports().items() for d in deps
             if d.rpartition(".")[2].startswith("kernels_")
             and m.rpartition(".")[0] != d.rpartition(".")[0]]
    assert wrong == []


def test_place_names_a_later_room_wrong():
    """The order check itself: a windows module importing an assembly module is caught."""
    assert place("trajectory.windows.grids") < place("trajectory.assembly.assemble")
    assert place("trajectory.record") == "base" and place("trajectory.torch.data") == "public"


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
