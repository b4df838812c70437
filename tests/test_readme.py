"""The README's Python examples run as written, and what it promises about itself holds."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_every_python_example_in_the_readme_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has no Python example"
    for i, code in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(code)
        p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"README example {i} failed:\n{code}\n{p.stderr[-2000:]}"


def test_the_readme_is_a_guide_not_a_notebook():
    assert len(README.splitlines()) <= 220
    assert not re.search(r"[Ii]ssue #?\d", README)
