"""The README's Python snippets run, in order, as one script."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run(one_thread):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    assert namespace["top"].converged.all()
    assert namespace["J"].shape == (16, 3, namespace["H"].shape[0])
    assert namespace["scores"]["cos_true"] > 0.9


def test_ci_runs_readme_command_2_verbatim_in_a_fresh_environment():
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    install_and_test = [c for c in commands if "python -m pytest" in c]
    assert len(install_and_test) == 1
    command = install_and_test[0].strip().splitlines()[-1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    assert "python3 -m venv" in ci and "set -euo pipefail" in ci
