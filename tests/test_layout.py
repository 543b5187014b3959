"""The import rules of DESIGN.md, checked on the source tree.

* No module imports a ``_``-prefixed module or name of another package: what is shared is public
  (the package of a module is its first two dotted components, ``ella.laplace``, or the module
  itself when it sits at the top, ``ella.marglik``; experiments/ is one package).
* ``ella`` uses only ``symdisc.curvature`` and ``symdisc.runtime``, and only names they export.
* ``symdisc.curvature`` and ``symdisc.runtime`` import nothing else of the project, except that
  the curvature layer uses the argument checks of ``symdisc.runtime.checks`` (a leaf module).
* ``ella.data`` never imports a method module; no experiment script imports another script.
* ``import ella`` loads none of symdisc's discovery modules.
* Every library module opens with a docstring that names the paper it implements (or says it
  is infrastructure).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted(p for pkg in ("symdisc", "ella") for p in (ROOT / pkg).rglob("*.py"))
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.py"))
SCRIPTS = {p.stem for p in EXPERIMENTS if not p.stem.startswith("_")}
HELPERS = {p.stem for p in EXPERIMENTS if p.stem.startswith("_")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _owner(module: str) -> str:
    """The package a dotted module belongs to, for the privacy rule."""
    parts = module.split(".")
    if parts[0] in SCRIPTS | HELPERS or parts[0] == "experiments":
        return "experiments"
    return ".".join(parts[:2])


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``[(module, [names])]`` imported by the file (absolute modules; relative ones resolved)."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".")
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, [a.name for a in node.names]))
    return out


def _project(module: str) -> bool:
    return module.split(".")[0] in {"symdisc", "ella"} | SCRIPTS | HELPERS


def _all(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


@pytest.mark.parametrize("path", LIBRARY + EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_imports_across_packages(path):
    me = _owner(_module_name(path)) if path.parent.name != "experiments" else "experiments"
    bad = []
    for module, names in _imports(path):
        if not _project(module) or _owner(module) == me:
            continue
        if any(part.startswith("_") and part != "__init__" for part in module.split(".")):
            bad.append(module)
        bad.extend(f"{module}.{n}" for n in names if n.startswith("_"))
    assert not bad, f"{path.relative_to(ROOT)} imports private names of another package: {bad}"


@pytest.mark.parametrize(
    "path", [p for p in LIBRARY if p.parts[len(ROOT.parts)] == "ella"], ids=lambda p: p.name
)
def test_ella_uses_only_the_public_curvature_and_runtime(path):
    allowed = {
        "symdisc.curvature": _all("symdisc.curvature"),
        "symdisc.runtime": _all("symdisc.runtime"),
    }
    bad = []
    for module, names in _imports(path):
        if module.split(".")[0] != "symdisc":
            continue
        if module not in allowed:
            bad.append(module)
            continue
        bad.extend(f"{module}.{n}" for n in names if n not in allowed[module])
    assert not bad, (
        f"{path.relative_to(ROOT)} imports {bad}, outside symdisc.curvature/runtime's __all__"
    )


@pytest.mark.parametrize(
    "layer, allowed",
    [
        # the curvature layer uses nothing of the project but the argument checks, a leaf module
        ("symdisc/curvature", ("symdisc.curvature", "symdisc.runtime.checks")),
        ("symdisc/runtime", ("symdisc.runtime",)),
    ],
)
def test_the_shared_layers_import_nothing_above_them(layer, allowed):
    for path in sorted((ROOT / layer).rglob("*.py")):
        for module, _ in _imports(path):
            if _project(module):
                assert module.startswith(allowed), f"{path} imports {module}"


def test_the_argument_checks_are_a_leaf():
    assert not [m for m, _ in _imports(ROOT / "symdisc/runtime/checks.py") if _project(m)]


def test_data_never_imports_a_method_module():
    methods = ("ella.laplace", "ella.marglik", "ella.invariance", "ella.dynamics", "ella.models")
    for path in sorted((ROOT / "ella" / "data").rglob("*.py")):
        for module, _ in _imports(path):
            assert not module.startswith(methods), f"{path.name} imports the method module {module}"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_no_script_imports_another_script(path):
    imported = {module.split(".")[0] for module, _ in _imports(path)}
    assert not imported & (SCRIPTS - {path.stem}), f"{path.name} imports {imported & SCRIPTS}"


@pytest.mark.parametrize(
    "statement, allowed",
    [
        ("import ella", ("symdisc.curvature", "symdisc.runtime")),
        # the curvature layer's argument checks come from symdisc.runtime (torch only)
        ("import symdisc.curvature", ("symdisc.curvature", "symdisc.runtime")),
    ],
)
def test_light_imports(statement, allowed):
    code = f"{statement}, sys; print(sorted(m for m in sys.modules if m.startswith('symdisc')))"
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}"], capture_output=True, text=True, check=True
    ).stdout
    loaded = ast.literal_eval(out.strip())
    extra = [m for m in loaded if m != "symdisc" and not m.startswith(allowed)]
    assert not extra, f"`{statement}` loads {extra}"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_which_paper_it_implements(path):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert doc, f"{path.relative_to(ROOT)} has no opening docstring"
    assert re.search(r"papers? 00[0-3]|infrastructure", doc, flags=re.I), (
        f"{path.relative_to(ROOT)}: the opening docstring names no paper (000-003) and does not "
        f"say the module is infrastructure"
    )
