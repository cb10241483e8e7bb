"""The import graph of raymotion matches the layout (STYLE.md 7): no cycles between modules or between
packages, and the heavy optional dependencies each in one place. Imports are read with ``ast`` from every
raymotion/**/*.py, including imports inside functions (a lazy import hides a cycle from Python, not from
the design)."""

import ast
from pathlib import Path

import raymotion

PACKAGE = Path(raymotion.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (top level or in a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def module_graph() -> dict[str, set[str]]:
    """raymotion module -> the raymotion modules it imports (only names that are modules)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {n for n in imported_names(path) if n in files and n != name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_of(module: str) -> str:
    """raymotion.data.frames -> raymotion.data; raymotion.config -> raymotion.config."""
    return ".".join(module.split(".")[:2])


def test_find_cycle_finds_a_hand_made_cycle_and_only_that():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_inside_functions_are_read(tmp_path):
    path = tmp_path / "lazy.py"
    path.write_text("import os\n\ndef f():\n    from raymotion.flow import estimator\n    import nvidia.dali.fn\n")
    assert imported_names(path) == {"os", "raymotion.flow", "raymotion.flow.estimator", "nvidia.dali.fn"}


def test_no_module_imports_itself_back_through_others():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle between modules: " + " -> ".join(cycle)


def test_no_package_imports_itself_back_through_others():
    packages: dict[str, set[str]] = {}
    for module, imports in module_graph().items():
        packages.setdefault(package_of(module), set()).update(
            package_of(n) for n in imports if package_of(n) != package_of(module))
    cycle = find_cycle(packages)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


def test_nvidia_dali_is_imported_in_exactly_one_module():
    users = sorted(module_name(p) for p in PACKAGE.rglob("*.py")
                   if any(n == "nvidia.dali" or n.startswith("nvidia.dali.") for n in imported_names(p)))
    assert users == ["raymotion.dali"]


# Ray Data stages (pairs, labelled frames, the pair store, batch prediction), the training loop and its launcher,
# the resource plan, sweeps, and the doctor's Ray check.
RAY_EDGES = ("raymotion.data.pipeline", "raymotion.data.labelled_pipeline", "raymotion.data.flow_store",
             "raymotion.predict.pipeline", "raymotion.train.worker", "raymotion.train.launch", "raymotion.train.plan", "raymotion.tune.",
             "raymotion.doctor")


def test_ray_stays_at_the_edges():
    users = sorted(module_name(p) for p in PACKAGE.rglob("*.py")
                   if any(n == "ray" or n.startswith("ray.") for n in imported_names(p)))
    inside = [m for m in users if not m.startswith(RAY_EDGES)]
    assert inside == [], f"modules importing ray outside the edges (STYLE.md rule 11): {inside}"
