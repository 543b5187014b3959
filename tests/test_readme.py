"""The README's Python snippets run, each on its own (a user copies one snippet, not the file)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _first_line(block: str) -> int:
    """The README line of a snippet's first line (for the traceback)."""
    text = README.read_text()
    return text[: text.index(block)].count("\n") + 1


def _run(block: str) -> dict:
    namespace: dict = {}
    code = "\n" * (_first_line(block) - 1) + block  # tracebacks point at README lines
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102
    return namespace


def test_readme_has_snippets():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs_on_its_own(index, one_thread):
    namespace = _run(BLOCKS[index])
    if "scores" in namespace and "cos_true" in namespace["scores"]:  # the discovery quick start
        assert namespace["scores"]["cos_true"] > 0.9
    if "top" in namespace and "J" in namespace:  # the curvature tour
        assert namespace["top"].converged.all()
        assert namespace["J"].shape == (16, 3, namespace["H"].shape[0])


def test_ci_runs_readme_command_2_verbatim_in_a_fresh_environment():
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    install_and_test = [c for c in commands if "python -m pytest" in c]
    assert len(install_and_test) == 1
    command = install_and_test[0].strip().splitlines()[-1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    assert "python3 -m venv" in ci and "set -euo pipefail" in ci
