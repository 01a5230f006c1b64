"""The import graph of what deploys: no cycle, and the layer contracts in pyproject.toml hold.

``make test`` runs ``lint-imports`` over the real package (the contracts); these tests show the
cycle check on the real package and that both checks fail on a planted violation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("agentstream", "agentstream_dev", "agentstream_client", "agentstream_examples")


def import_cycles(package: str) -> list[list[str]]:
    """Each set of ``package``'s modules that import one another in a circle (function-level and
    ``TYPE_CHECKING`` imports included), as a sorted list of module names."""
    graph = grimp.build_graph(package, cache_dir=None)
    modules = sorted(graph.modules)
    imports = {
        module: sorted(m for m in graph.find_modules_directly_imported_by(module) if m in modules)
        for module in modules
    }
    # Tarjan's strongly connected components, iteratively (no recursion limit to meet).
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(imports[root]))]
        index[root] = lowest[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, pending = work[-1]
            following = next(pending, None)
            if following is not None:
                if following not in index:
                    index[following] = lowest[following] = len(index)
                    stack.append(following)
                    on_stack.add(following)
                    work.append((following, iter(imports[following])))
                elif following in on_stack:
                    lowest[module] = min(lowest[module], index[following])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowest[parent] = min(lowest[parent], lowest[module])
            if lowest[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_what_deploys_has_no_import_cycle() -> None:
    assert import_cycles("agentstream") == []


def copy_packages(destination: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, destination / package, ignore=shutil.ignore_patterns("__pycache__")
        )


def plant(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}\n")


def test_a_cycle_hidden_in_a_function_level_import_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "cyclic_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from . import second\n")
    (package / "second.py").write_text("def later() -> None:\n    from . import first\n")
    (package / "third.py").write_text("from . import first\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic_example") == [["cyclic_example.first", "cyclic_example.second"]]


def lint_imports(packages_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts over the packages in ``packages_root``."""
    env = {**os.environ, "PYTHONPATH": str(packages_root)}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "lint-imports"),
            "--config",
            str(REPO / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=packages_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("config.py", "from .api import handlers", "The engine flows one way"),
        ("agents/registry.py", "import agentstream_examples", "never imports an app"),
        ("streamlog/hub.py", "from .. import redis_clients", "The engine flows one way"),
        ("agent.py", "from . import model_probe", "The engine flows one way"),
        ("events.py", "import agentstream_client.render", "What deploys never imports"),
    ],
)
def test_a_planted_layer_violation_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    copy_packages(tmp_path)
    assert lint_imports(tmp_path).returncode == 0
    plant(tmp_path / "agentstream" / module, line)
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_every_module_of_the_engine_has_a_layer() -> None:
    """A new top-level module of ``agentstream`` is placed in the layers contract, so the
    contract constrains it (a module it does not name may import anything)."""
    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in contract["contracts"] if c["type"] == "layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    package = REPO / "agentstream"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in package.glob("*/__init__.py")}
    modules.discard("web")  # the browser page: data, no imports
    assert modules - named == set(), "add these to [tool.importlinter] layers in pyproject.toml"
