"""Print the package's import facts: units (top-level modules and folders), levels, cycles, upward imports.

    python scripts/import_facts.py

Units are the package's top-level modules and sub-packages; every import counts (lazy ones inside functions and
``TYPE_CHECKING`` blocks included), as grimp (import-linter's graph library) finds them. A unit's level is one
more than the highest level it imports (cycles collapsed first); an import is "upward" when it points at a unit
on its own level or higher: an import inside a cycle.
"""
from __future__ import annotations

import sys
from collections import defaultdict

import grimp

PKG = "napari_clipsam"


def main() -> int:
    graph = grimp.build_graph(PKG, include_external_packages=False)
    unit = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    units = sorted({unit(m) for m in graph.modules if m != PKG} | {PKG})
    edges = defaultdict(set)
    for m in graph.modules:
        for d in graph.find_modules_directly_imported_by(m):
            a, b = (PKG if m == PKG else unit(m)), (PKG if d == PKG else unit(d))
            if a != b:
                edges[a].add(b)
    # strongly connected components (Tarjan)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop(); on.discard(w); comp.add(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for u in units:
        if u not in index:
            visit(u)
    comp_of = {u: i for i, c in enumerate(comps) for u in c}
    level = {}

    def lvl(c):
        if c not in level:
            level[c] = 0
            deps = {comp_of[w] for u in comps[c] for w in edges[u]} - {c}
            level[c] = 1 + max((lvl(d) for d in deps), default=0)
        return level[c]

    for c in range(len(comps)):
        lvl(c)
    cycles = [sorted(c) for c in comps if len(c) > 1]
    upward = [(a, b) for a in units for b in edges[a] if level[comp_of[b]] >= level[comp_of[a]] and a != b]
    loose = [u for u in units if u != PKG and u.rsplit(".", 1)[1] and not graph.find_children(u)
             and "." not in u.split(".", 1)[1] and u.rsplit(".", 1)[1] != "__main__" or u.endswith("__main__")]
    n_arrows = sum(len(v) for v in edges.values())
    print(f"{len(units)} units, {n_arrows} import arrows between them, {max(level.values())} levels")
    by_level = defaultdict(list)
    for u in units:
        by_level[level[comp_of[u]]].append(u.replace(PKG + ".", "") if u != PKG else "__init__")
    for k in sorted(by_level):
        print(f"  level {k}: {', '.join(sorted(by_level[k]))}")
    print(f"cycles between units: {len(cycles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cycles))
    print(f"upward imports: {len(upward)}" + "".join(f"\n  {a} -> {b}" for a, b in upward))
    print(f"loose modules at the package root: {len(loose)} ({', '.join(u.rsplit('.', 1)[1] for u in loose)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
