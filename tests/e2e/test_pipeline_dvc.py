"""DVC end to end on a micro configuration: real stages, real files, real DVC. The outputs come
from the session's one run of the pipeline (through the Prefect flow, which runs each stage with
`dvc repro --single-item`); here, in a copy, `dvc repro` finds all of it up to date and an
experiment re-runs only what its change reaches."""

from __future__ import annotations

import json
import sys
import time

import polars as pl
import pytest
from tests.e2e.conftest import PIPELINE_TIMEOUT, run

DVC = [sys.executable, "-m", "dvc"]


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_repro_benchmark_then_unchanged_then_an_experiment(micro_copy):
    repo = micro_copy()
    bench = json.loads((repo / "reports/details/benchmark.json").read_text())
    families = {f for f in bench["oracle"] if f != "all"}
    assert len(families) >= 8
    assert all(bench["oracle"][f]["success_rate"] == 1.0 for f in families)
    assert bench["random"]["all"]["success_rate"] <= 0.05
    # The student: a model directory with its card, benchmarked beside the scripted policies,
    # and K sampled episodes per train task in groups.
    card = json.loads((repo / "models/warmup/card.json").read_text())
    assert card["prompt"]["style"] == "compact" and card["metrics"]["steps"] == 12
    assert set(card["data"]) >= {"data/tasks/tasks.parquet"}
    assert bench["warmup"]["all"]["episodes"] == 2 * len(families)
    rollouts = pl.read_parquet(repo / "data/rollouts/warmup/episodes.parquet")
    assert rollouts.height == 2 * 2 * len(families) and rollouts.group_by("group").len()["len"].unique().to_list() == [2]
    assert set(rollouts["split"]) == {"heldout_train"} and set(rollouts["profile"]) == {"h01"}
    assert (repo / "checkpoints/warmup").is_dir()
    validation = json.loads((repo / "data/tasks/validation.json").read_text())
    assert validation["kept"] == {"train": 2 * len(families), "test": 2 * len(families),
                                  "heldout_train": 2 * len(families), "heldout_test": len(families)}
    # Mined experience and the internalization loop, one record per iteration.
    mined = json.loads((repo / "reports/details/mine.json").read_text())
    assert mined["episodes"] == rollouts.height
    assert (repo / "data/experience/skill_validation.md").exists()
    inter = json.loads((repo / "reports/details/internalize.json").read_text())
    assert [r["iteration"] for r in inter["iterations"]] == [0, 1]
    assert (repo / "models/internalized/card.json").exists()
    # RL (SIRI on the micro config) and distillation (AOPD), one record per iteration.
    rl = json.loads((repo / "reports/details/rl.json").read_text())
    assert rl["method"] == "siri" and [r["iteration"] for r in rl["iterations"]] == [0, 1]
    assert len(rl["curve"]) == 3 and (repo / "models/rl/card.json").exists()
    dist = json.loads((repo / "reports/details/distill.json").read_text())
    assert dist["method"] == "aopd" and [r["iteration"] for r in dist["iterations"]] == [0, 1]
    assert {"student_before", "teacher"} <= set(dist["before"])
    claims = (repo / "reports/claims.md").read_text()
    assert "siri raises" in claims and "aopd closes" in claims
    wording = json.loads((repo / "reports/details/wording.json").read_text())
    assert set(wording["greedy"]) == {"plain", "environment", "neutral"} and "phrasebook's words" in claims
    # SelSkill: every arm measured on the held-out test tasks, one record per round.
    sel = json.loads((repo / "reports/details/selskill.json").read_text())
    assert set(sel["final"]) >= {"selskill", "always", "never"} and [r["round"] for r in sel["rounds"]] == [0]
    assert len(sel["curve"]) == 2 and (repo / "models/selskill/card.json").exists()
    assert "selskill: success and execution precision over always-invoke" in claims
    eps = pl.read_parquet(repo / "data/trajectories/oracle/episodes.parquet")
    steps = pl.read_parquet(repo / "data/trajectories/oracle/steps.parquet")
    assert eps["n_steps"].sum() == steps.height
    assert (repo / "reports/benchmark.html").read_text().count("<img") >= 1
    assert (repo / "reports/quality/collect-oracle/episodes.summary.json").exists()

    # The flow ran every stage; `dvc repro` of the whole pipeline (in a copy of that workspace,
    # its cache and its Git) agrees that nothing is left to run. Bytecode that Python writes into
    # a source folder a stage depends on (as a later stage's imports do in a fresh clone) is not
    # a change: .dvcignore keeps it out of the folder's hash.
    stray = repo / "src/distillery/train/__pycache__/stray.cpython-311.pyc"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"bytecode")
    t0 = time.perf_counter()
    again = run([*DVC, "repro"], repo)
    took = time.perf_counter() - t0
    out = again.stdout + again.stderr
    assert "up to date" in out and "Running stage" not in out, out
    print(f"second dvc repro: {took:.2f} s")

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    # An experiment on a downstream knob: DVC re-runs only what it changes (rl, then claims).
    run([*DVC, "exp", "run", "-S", "rl.seed=1"], repo)
    shown = json.loads(run([*DVC, "exp", "show", "--json"], repo).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert exps, shown
    params = [r["data"]["params"]["params.yaml"]["data"]["rl"]["seed"] for e in exps for r in e["revs"]]
    assert 1 in params
    diff = run([*DVC, "metrics", "diff", "--json"], repo)
    assert diff.returncode == 0
