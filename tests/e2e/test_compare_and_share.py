"""Comparing runs and sharing them: the declared metrics stay small, `make compare` fits a
120-column terminal, and a clone that pulls from a DVC remote has every output with nothing
left to run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import PIPELINE_TIMEOUT, run

from distillery.evaluate.headline import MAX_VALUES, count_leaves

DVC = [sys.executable, "-m", "dvc"]
BIN = str(Path(sys.executable).parent)


def declared_metrics(repo: Path) -> list[str]:
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())
    out = []
    for stage in doc["stages"].values():
        for m in stage.get("do", stage).get("metrics", []):
            out.append(m if isinstance(m, str) else next(iter(m)))
    return sorted(set(out))


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_the_declared_metrics_fit_on_one_screen(micro_copy):
    repo = micro_copy()
    files = declared_metrics(repo)
    assert files and all(f.startswith("metrics/") for f in files)
    counts = {f: count_leaves(json.loads((repo / f).read_text())) for f in files}
    assert all(n <= MAX_VALUES for n in counts.values()), counts
    # The agent track with PGHS fits a screen (80 values); each newer track adds a screen part
    # of its own (`make metrics TRACK=...` shows one track).
    newer = ("metrics/sql_", "metrics/vision_", "metrics/table_", "metrics/twx/")
    assert sum(n for f, n in counts.items() if not f.startswith(newer)) <= 80, counts
    for prefix in newer:
        assert sum(n for f, n in counts.items() if f.startswith(prefix)) <= 24, (prefix, counts)
    shown = json.loads(run([*DVC, "metrics", "show", "--json"], repo).stdout)
    values = shown["workspace"]["data"] if "workspace" in shown else shown
    assert count_leaves(values) <= 2 * sum(counts.values())     # DVC's JSON wraps each file's values in "data"
    one = run(["make", "-s", "metrics", "TRACK=sql", f"BIN={BIN}"], repo).stdout
    assert "metrics/sql_evaluate.json" in one and "metrics/rl.json" not in one, one


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_make_compare_shows_two_experiments_in_120_columns(micro_copy):
    repo = micro_copy()
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the micro run"], repo)
    for n in (30, 60):
        run([*DVC, "exp", "run", "-n", f"trees-{n}", "-S", f"pghs.fit.n_estimators={n}", "pghs"], repo)
    out = run(["make", "-s", "compare", f"BIN={BIN}"], repo).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120, out
    assert "trees-30" in out and "trees-60" in out, out
    assert "n_estimators" in out and "error" in out, out         # the changed param, a headline metric
    assert "…" not in out.splitlines()[1], out                    # no column squeezed to nothing


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_a_clone_that_pulls_from_the_remote_has_everything_and_runs_nothing(micro_copy, tmp_path):
    origin = micro_copy("origin")
    store = tmp_path / "store"
    run([*DVC, "remote", "add", "--local", "-f", "-d", "shared", str(store)], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "the micro run"], origin)
    run([*DVC, "push"], origin)                          # what `make push` runs
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    run([*DVC, "remote", "add", "--local", "-f", "-d", "shared", str(store)], clone)
    run([*DVC, "pull"], clone)                           # what `make pull` runs after the set-up
    for out in ("models/warmup/model.safetensors", "reports/claims.md", "metrics/benchmark.json",
                "data/tasks/tasks.parquet", "reports/details/internalize.json"):
        assert (clone / out).read_bytes() == (origin / out).read_bytes(), out
    status = run([*DVC, "status", "--json"], clone).stdout
    assert json.loads(status or "{}") == {}, status
    again = run([*DVC, "repro"], clone)
    assert "Running stage" not in again.stdout + again.stderr, again.stdout
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""
