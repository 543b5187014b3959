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
