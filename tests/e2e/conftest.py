"""End-to-end fixtures: the real pipeline on a micro configuration in a temporary copy of
the repository (its own git and DVC), so tests never touch the working tree's outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

MICRO = {
    "tasks": {"n_train_per_family": 2, "n_test_per_family": 2, "random_probes": 1,
              "n_heldout_train_per_family": 2, "n_heldout_test_per_family": 1},
    "collect": {"batch_size": 16, "executor": {"kind": "process", "workers": 2, "address": ""}},
    "warmup": {
        "tokenizer": {"vocab_size": 1024},
        "model": {"hidden_size": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "intermediate_size": 64},
        "train": {"max_steps": 12, "batch_size": 4, "warmup_steps": 2, "eval_every": 6, "save_every": 6,
                  "num_threads": 1},
        "induction_steps": 4,
    },
    # Issue 5's teacher (the micro student grown by a layer) and weak start (the micro recipe, shorter).
    "teacher": {"n_layers": 3, "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 4,
                                         "save_every": 4, "num_threads": 1}},
    "student_weak": {
        "tokenizer": {"vocab_size": 1024},
        "model": {"hidden_size": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "intermediate_size": 64},
        "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 2, "eval_every": 4, "save_every": 4,
                  "num_threads": 1},
        "induction_steps": 4,
    },
    "policies": {"warmup": {"kwargs": {"max_new_tokens": 24}}},
    "rollout": {"k": 2},
    "mine": {"max_groups": 1, "pairs_per_group": 1},
    "internalize": {"iterations": 2, "k": 2, "max_new_tokens": 24, "replay_episodes": 4, "eval_seeds": [0], "max_tasks_per_family": 1,
                    "train": {"max_steps": 3, "batch_size": 4, "save_every": 2, "num_threads": 1}},
    "rl": {"method": "siri", "iterations": 2, "tasks_per_family": 1, "k": 2, "max_new_tokens": 24,
           "siri_min_successes": 0, "siri_mine_every": 1, "train": {"batch_size": 4, "save_every": 2, "num_threads": 1}},
    "distill": {"method": "aopd", "iterations": 2, "tasks_per_family": 1, "k": 2, "max_new_tokens": 24,
                "train": {"batch_size": 4, "save_every": 2, "num_threads": 1}},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def make_micro_repo(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the project's source files (tracked and new, not ignored) and set micro params."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file() and not rel.startswith((".dvc/", "dvc.lock")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # PGHS's own micro world (a few merchants and weeks) keeps its stages in seconds.
    pghs_micro = yaml.safe_load((REPO / "tests/pghs/micro_params.yaml").read_text())
    params = _merge(params, _merge(_merge(MICRO, pghs_micro), overrides or {}))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "micro"], dest)
    return dest


@pytest.fixture
def micro_repo(tmp_path: Path) -> Callable[..., Path]:
    def factory(name: str = "repo", overrides: dict[str, Any] | None = None) -> Path:
        d = tmp_path / name
        d.mkdir()
        return make_micro_repo(d, overrides)
    return factory
