"""The import graph of the library and each DVC stage's true code dependencies.

    python -m tools.stage_deps            # print the stages whose code deps in dvc.yaml are wrong
    python -m tools.stage_deps --fix      # rewrite those deps in dvc.yaml (comments kept)
    python -m tools.stage_deps --layers   # print import-rule violations and circles

A stage's code dependencies are its own module and every module it can import, transitively:
every `import` in a module counts (those inside functions too: they run when the function
does), except those under `if TYPE_CHECKING:` (they never run), and a module's parent
packages' `__init__.py` count (importing a module runs them). Environments and task families
are loaded by name through entry points, which no import statement shows, so a stage names
the environments it runs in dvc.yaml (`meta: {envs: [stage]}`): each adds the module that
its `distillery.envs` entry point (and the `distillery.families` entry point of the same
name, if any) in pyproject.toml points at, with that module's own closure.

The layer rule (from the team's design notes, `../shared/DESIGN.md`, kept beside the
repository; the layers are listed below): a module imports only its own layer or the ones
below, and no two modules import each other, directly or through others.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "distillery"

# Bottom to top. A package not listed here is a violation (say where it belongs).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"types", "config", "io", "registry", "llm", "journal"}),
    frozenset({"quality", "evaluate", "lm"}),
    frozenset({"envs"}),
    frozenset({"agents", "rollout", "tasks", "importers"}),
    frozenset({"train", "mining", "vision", "pghs"}),
    frozenset({"cli", "serve"}),
)


@dataclass(frozen=True)
class Module:
    name: str          # dotted: distillery.envs.base, stages.tasks
    path: Path         # relative to the repository root
    is_package: bool   # an __init__.py


def index_modules(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the library (src/distillery) and of stages/, by dotted name."""
    out: dict[str, Module] = {}
    for base, top in ((root / "src", root / "src" / LIBRARY), (root, root / "stages")):
        for path in sorted(top.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            out[".".join(parts)] = Module(".".join(parts), path.relative_to(root), is_package)
    return out


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST, runtime_only: bool) -> Iterable[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if runtime_only and _type_checking_block(child):
                stack.extend(child.orelse)     # the else branch of `if TYPE_CHECKING` runs
                continue
            stack.append(child)


def _resolve(name: str, modules: Mapping[str, Module]) -> str | None:
    """The module a dotted import name lands in (`a.b.C` -> `a.b` when C is a name in a.b)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: Module, modules: Mapping[str, Module], root: Path = ROOT,
               runtime_only: bool = True) -> set[str]:
    """The project modules `module` imports (library and stages only; third-party ignored)."""
    tree = ast.parse((root / module.path).read_text(), filename=str(module.path))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(tree, runtime_only):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module.name:
                found.add(resolved)
    return found


def import_graph(modules: Mapping[str, Module], root: Path = ROOT, runtime_only: bool = True) -> dict[str, set[str]]:
    return {name: imports_of(m, modules, root, runtime_only) for name, m in modules.items()}


def _parents(name: str, modules: Mapping[str, Module]) -> list[str]:
    parts = name.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in modules]


def closure(start: Iterable[str], graph: Mapping[str, set[str]], modules: Mapping[str, Module]) -> set[str]:
    """Every module reachable from `start`, with the packages whose __init__ each one runs."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
        todo.extend(_parents(name, modules))
    return seen


# ---------------------------------------------------------------------------------------
# Plugins named by stages (meta.envs) -> the modules their entry points load
# ---------------------------------------------------------------------------------------


def entry_point_modules(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """pyproject.toml's entry points of this package: group -> name -> module."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    groups = project.get("entry-points", {})
    return {group: {name: target.split(":")[0] for name, target in eps.items()} for group, eps in groups.items()}


def plugin_modules(envs: Iterable[str], root: Path = ROOT) -> set[str]:
    eps = entry_point_modules(root)
    out: set[str] = set()
    for env in envs:
        if env not in eps.get("distillery.envs", {}):
            raise ValueError(f"meta.envs names {env!r}, which pyproject.toml does not register under "
                             f"distillery.envs (registered: {sorted(eps.get('distillery.envs', {}))})")
        out.add(eps["distillery.envs"][env])
        if env in eps.get("distillery.families", {}):
            out.add(eps["distillery.families"][env])
    return out


# ---------------------------------------------------------------------------------------
# dvc.yaml
# ---------------------------------------------------------------------------------------

CODE_ROOTS = ("src/", "stages/")


def _stage_module(cmd: str) -> str:
    """`python -m stages.collect ${item} --section play` -> stages.collect."""
    words = cmd.split()
    if "-m" not in words or words.index("-m") + 1 >= len(words):
        raise ValueError(f"stage command {cmd!r} does not run a module (python -m stages.<name>)")
    return words[words.index("-m") + 1]


def _definitions(dvc_yaml: Mapping) -> dict[str, Mapping]:
    """Stage name -> its definition (a foreach stage's `do` block)."""
    return {name: (stage["do"] if "do" in stage else stage) for name, stage in dvc_yaml["stages"].items()}


def expected_code_deps(definition: Mapping, modules: Mapping[str, Module], graph: Mapping[str, set[str]],
                       root: Path = ROOT) -> list[str]:
    """The sorted code dependencies (file paths) a stage definition should declare."""
    start = {_stage_module(definition["cmd"])}
    envs = (definition.get("meta") or {}).get("envs", [])
    start |= plugin_modules(envs, root)
    names = closure(start, graph, modules)
    if f"{LIBRARY}.registry" in names and not envs:
        raise ValueError(f"{definition['cmd']!r} can load plugins by name (it imports {LIBRARY}.registry) but its "
                         "stage names no environment: add `meta: {envs: [<name>]}` to it in dvc.yaml")
    return sorted(str(modules[n].path) for n in names)


def declared_code_deps(definition: Mapping) -> list[str]:
    return sorted(d for d in (definition.get("deps") or []) if isinstance(d, str) and d.startswith(CODE_ROOTS))


def check(root: Path = ROOT) -> dict[str, str]:
    """Stage -> what is wrong, for every stage whose declared code deps are not its closure."""
    import yaml

    modules = index_modules(root)
    graph = import_graph(modules, root)
    wrong: dict[str, str] = {}
    for name, definition in _definitions(yaml.safe_load((root / "dvc.yaml").read_text())).items():
        try:
            want = set(expected_code_deps(definition, modules, graph, root))
        except ValueError as e:
            wrong[name] = str(e)
            continue
        have = set(declared_code_deps(definition))
        if want != have:
            wrong[name] = f"missing {sorted(want - have) or '-'}; not imported {sorted(have - want) or '-'}"
    return wrong


def fix(root: Path = ROOT) -> list[str]:
    """Rewrite the code deps of every stage in dvc.yaml to its closure; returns the stages changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096
    ry.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    doc = ry.load(path.read_text())
    modules = index_modules(root)
    graph = import_graph(modules, root)
    changed = []
    for name, definition in _definitions(doc).items():
        want = expected_code_deps(definition, modules, graph, root)
        deps = definition.get("deps") or CommentedSeq()
        others = [d for d in deps if not (isinstance(d, str) and d.startswith(CODE_ROOTS))]
        if sorted(declared_code_deps(definition)) == want:
            continue
        new = CommentedSeq(want + others)
        # Keep the comments written beside the data deps.
        for i, d in enumerate(deps):
            if d in others and i in deps.ca.items:
                new.ca.items[len(want) + others.index(d)] = deps.ca.items[i]
        definition["deps"] = new
        changed.append(name)
    if changed:
        tmp = path.with_suffix(".yaml.tmp")
        with tmp.open("w") as f:
            ry.dump(doc, f)
        tmp.replace(path)
    return changed


# ---------------------------------------------------------------------------------------
# The layer rule
# ---------------------------------------------------------------------------------------


def layer_of(name: str) -> int | None:
    """The layer of a library module (None: not in the library, or a package no layer lists)."""
    parts = name.split(".")
    if parts[0] != LIBRARY:
        return None
    if len(parts) == 1:
        return 0                # the package's own __init__: a docstring and __version__
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    return None


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports that run upward, and library packages that no layer lists."""
    out = []
    for name, deps in sorted(graph.items()):
        mine = layer_of(name)
        if name.startswith(LIBRARY + ".") and mine is None:
            out.append(f"{name}: its package is in no layer of tools/stage_deps.py:LAYERS")
            continue
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{name} (layer {mine}) imports {dep} (layer {theirs}), a layer above it")
    return out


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def library_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """The library's import graph for the layer rule: every import, type-only ones included."""
    modules = {n: m for n, m in index_modules(root).items() if n.split(".")[0] == LIBRARY}
    return import_graph(modules, root, runtime_only=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fix", action="store_true", help="rewrite the stages' code deps in dvc.yaml")
    ap.add_argument("--layers", action="store_true", help="check the import rule instead")
    args = ap.parse_args(argv)
    if args.layers:
        graph = library_graph()
        problems = layer_violations(graph) + [" -> ".join(c) + " (a circle)" for c in cycles(graph)]
        print("\n".join(problems) or "no upward import, no circle")
        return 1 if problems else 0
    if args.fix:
        changed = fix()
        print(f"dvc.yaml: rewrote the code deps of {', '.join(changed)}" if changed else "dvc.yaml: already true")
        return 0
    wrong = check()
    for stage, problem in wrong.items():
        print(f"{stage}: {problem}")
    if wrong:
        print("fix with: python -m tools.stage_deps --fix")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
