"""The layer contract: every import points down (or stays in its room), and no two modules import each other, even
through imports inside functions.

    core < modeling < training < eval < model_card < upload < tracing < cli

A module imports only modules of its own room or of rooms to its left. A violation fails with the importing file,
its line and the imported module.
"""

import ast
from pathlib import Path

from helpers.training import REPO_ROOT

LAYERS = ("core", "modeling", "training", "eval", "model_card", "upload", "tracing", "cli")
PACKAGE = "gpt2_owt"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def package_modules() -> dict[str, Path]:
    """Every module of the shipped package: the rooms' files and the top-level verbs."""
    found = {module_name(p): p for room in LAYERS if (REPO_ROOT / room).is_dir()
             for p in (REPO_ROOT / room).rglob("*.py")}
    found.update({module_name(REPO_ROOT / f"{m}.py"): REPO_ROOT / f"{m}.py" for m in LAYERS
                  if (REPO_ROOT / f"{m}.py").is_file()})
    return found


def room(module: str) -> str:
    return module.split(".")[1]


def imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, imported gpt2_owt module) for every import in the file, at module top or inside a function."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else target))
    return sorted({(line, name) for line, name in found if name != PACKAGE})


def graph() -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]]]:
    modules = package_modules()
    return modules, {m: imports(m, p, modules) for m, p in modules.items()}


def test_every_import_points_down():
    modules, edges = graph()
    assert len(modules) > 50, sorted(modules)  # the walk found the package
    wrong = [f"{modules[m].relative_to(REPO_ROOT)}:{line} imports {target} ({room(m)} may import only "
             f"{', '.join(LAYERS[: LAYERS.index(room(m)) + 1])})"
             for m, targets in edges.items() for line, target in targets
             if LAYERS.index(room(target)) > LAYERS.index(room(m))]
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_no_file_circles():
    modules, edges = graph()
    succ = {m: sorted({t for _, t in targets if t in modules and t != m}) for m, targets in edges.items()}
    # Tarjan's strongly connected components: a component of two or more modules is a circle
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
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
                circles.append(component)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    described = []
    for component in circles:
        members = set(component)
        described.append("; ".join(f"{modules[m].relative_to(REPO_ROOT)}:{line} imports {t}"
                                   for m in sorted(members) for line, t in edges[m] if t in members and t != m))
    assert not described, "file circles:\n" + "\n".join(described)


def test_a_violation_is_named(tmp_path):
    """The walk itself: an upward import inside a function is found, with its line."""
    path = tmp_path / "x.py"
    path.write_text("import os\n\ndef f():\n    from gpt2_owt.tracing.text import encode\n")
    assert imports("gpt2_owt.training.x", path, {}) == [(4, "gpt2_owt.tracing.text")]
