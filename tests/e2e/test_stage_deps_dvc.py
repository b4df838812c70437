"""DVC re-runs exactly what an edit reaches: a docstring in a module no stage imports changes
nothing; an edit to rollout.py changes exactly the stages whose import closure holds it."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from tests.e2e.conftest import PIPELINE_TIMEOUT, run

from tools import stage_deps as sd

DVC = [sys.executable, "-m", "dvc"]


def _changed(repo) -> set[str]:
    out = run([*DVC, "status", "--json"], repo).stdout
    return set(json.loads(out or "{}"))


def _stages_listing(repo, path: str) -> set[str]:
    """dvc.yaml's stages (foreach ones expanded to name@item) that declare `path` a dependency."""
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    out = set()
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        if path not in body.get("deps", []):
            continue
        if "foreach" in stage:
            section, key = stage["foreach"].strip("${}").split(".")
            out |= {f"{name}@{item}" for item in params[section][key]}
        else:
            out.add(name)
    return out


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_an_edit_reruns_exactly_the_stages_that_import_it(micro_copy):
    repo = micro_copy()
    assert _changed(repo) == set()
    modules = sd.index_modules(repo)
    graph = sd.import_graph(modules, repo)
    assert "distillery.serve" in modules and not any(
        "distillery.serve" in sd.closure([m], graph, modules) for m in modules if m.startswith("stages."))

    serve = repo / "src/distillery/serve.py"
    text = serve.read_text()
    serve.write_text(text.replace('"""', '"""An edited docstring. ', 1))
    assert _changed(repo) == set()
    serve.write_text(text)

    rollout = repo / "src/distillery/rollout.py"
    rollout.write_text(rollout.read_text() + "\n# an edit\n")
    expected = _stages_listing(repo, "src/distillery/rollout.py")
    assert expected and "pghs" not in expected and "claims" not in expected
    assert _changed(repo) == expected
