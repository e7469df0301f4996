"""The package's shape: dependencies point one way, no import cycles, a wheel works anywhere.

Layers, lowest first: the plugin contract (errors, params, identity, records, method,
registry, metrics, store), data (datasets, protocols, features), execution, run, results
(and the conformance suite), the command line. A module imports its own layer or lower ones
only, counting imports inside functions too: that is what keeps ``fsad-bench list``
torch-free and lets a plugin import the contract without the runner.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fsad_bench"
LAYERS = {
    "fsad_bench": 0,  # the package's __init__
    "fsad_bench.errors": 0,
    "fsad_bench.params": 0,
    "fsad_bench.identity": 0,
    "fsad_bench.records": 0,
    "fsad_bench.method": 0,
    "fsad_bench.registry": 0,
    "fsad_bench.metrics": 0,
    "fsad_bench.store": 0,
    "fsad_bench.datasets": 1,
    "fsad_bench.protocols": 1,
    "fsad_bench.features": 1,
    "fsad_bench.execution": 2,
    "fsad_bench.run": 3,
    "fsad_bench.results": 4,
    "fsad_bench.testing": 4,
    "fsad_bench.cli": 5,
    "fsad_bench.__main__": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every fsad_bench module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fsad_bench")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fsad_bench"):
            found.add(node.module)
            for alias in node.names:  # `from fsad_bench.run import episode` is a module
                candidate = f"{node.module}.{alias.name}"
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules} - {name}
        for name, path in modules.items()
    }


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_layout.py")


def test_every_module_imports_only_its_own_layer_or_lower() -> None:
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    # a package's __init__ importing its own submodules is not a cycle of two modules
    real = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert not real, "import cycles: " + "; ".join(" -> ".join(c) for c in real)


@pytest.mark.slow
def test_a_built_wheel_runs_from_another_directory(tmp_path: Path) -> None:
    """`pip wheel --no-deps .` holds the protocols and the leaderboard app; installed
    (not editable) it lists methods and plays synthetic_quick from a foreign directory."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheel = next((tmp_path / "dist").glob("fsad_bench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fsad_protocols/synthetic_quick.yaml" in names
    assert "fsad_protocols/manifests/synthetic_loo_v1.json" in names
    assert "fsad_leaderboard/app.py" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fsad_bench", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import fsad_bench, fsad_protocols; "
         "print(fsad_bench.__file__); print(fsad_protocols.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.count(str(target)) == 2, where  # the wheel's files, not the clone's
    listing = cli("list")
    assert listing.returncode == 0 and "synthetic_quick" in listing.stdout, listing.stderr
    played = cli("run", "--protocol", "synthetic_quick", "--out", str(tmp_path / "run"))
    assert played.returncode == 0, played.stderr[-2000:]
    assert (tmp_path / "run" / "records.jsonl").read_text().count("\n") == 4


def test_every_package_is_in_the_wheel_list() -> None:
    """pyproject lists packages by hand (three folders install under other names): a new
    subpackage or plugin missing from the list would be left out of every wheel."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    found |= {
        "fsad_methods" + module_name(p).removeprefix("methods")
        for p in (ROOT / "methods").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"
