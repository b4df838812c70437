"""bench/gpu_check.py, the check to run where a GPU is lent, run here on the CPU on a few tasks:
it trains the warm-up's recipe and an RL iteration from the inputs `make gpu-kit` gathers,
without DVC, DVCLive or a gate, and reports what it measured."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))   # the script imports its sibling machine.py, as when run from bench/


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What `make gpu-kit` copies: a task table (every split RL needs) and the oracle's trajectories."""
    from distillery.agents.base import PolicySpec
    from distillery.config import TasksConfig
    from distillery.io import write_parquet
    from distillery.rollout import RolloutConfig, run_episodes
    from distillery.tasks.generate import generate_tasks
    from distillery.types import tasks_to_frame

    folder = tmp_path_factory.mktemp("gpu_kit")
    cfg = TasksConfig(families=["save_note", "file_invoice"], n_train_per_family=4, n_test_per_family=1,
                      heldout_profiles=["h01"], n_heldout_train_per_family=1, n_heldout_test_per_family=1,
                      random_probes=1)
    tasks = generate_tasks(cfg, progress=False).tasks
    traj = run_episodes(tasks, PolicySpec(kind="oracle"), RolloutConfig(), progress=False)
    write_parquet(tasks_to_frame(tasks), folder / "tasks.parquet")
    write_parquet(traj.episodes, folder / "episodes.parquet")
    write_parquet(traj.steps, folder / "steps.parquet")
    return folder


@pytest.mark.slow
def test_the_warm_up_and_an_rl_iteration_run_and_report(inputs, tmp_path):
    import gpu_check

    threads = torch.get_num_threads()
    out = tmp_path / "out"
    try:
        assert gpu_check.main(["--data", str(inputs), "--device", "cpu", "--warmup-steps", "3", "--induction-steps",
                               "0", "--rl-iterations", "1", "--rl-tasks-per-family", "1", "--params",
                               str(REPO / "params.yaml"), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["machine"]["device"] == "cpu"
    assert report["warmup"]["steps"] == 3 and report["warmup"]["tokens_per_s"] > 0
    assert report["rl"]["iterations"] == 1 and report["rl"]["samples"] > 0
    assert len(report["rl"]["test_success"]) == 2
    assert (out / "models" / "warmup" / "config.json").is_file()


def test_missing_inputs_are_named_with_how_to_make_them(tmp_path):
    import gpu_check

    with pytest.raises(SystemExit, match="lacks tasks.parquet, episodes.parquet, steps.parquet: `make gpu-kit`"):
        gpu_check.main(["--data", str(tmp_path), "--device", "cpu", "--out", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cuda_asked_for_where_there_is_none_says_so(tmp_path):
    import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="--device cuda, but torch sees no CUDA device"):
        gpu_check.main(["--data", str(tmp_path), "--device", "cuda"])
