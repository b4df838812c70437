"""End-to-end fixtures: the real pipeline on a micro configuration in a temporary copy of
the repository (its own git and DVC), so tests never touch the working tree's outputs.

The pipeline itself runs once per session (`micro_pipeline`, through the Prefect flow); tests
that go on from there (re-runs, experiments, a failing stage) each take a copy (`micro_copy`)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
    # The distillation teacher (the micro student grown by a layer) and the weak start (the
    # micro warm-up, shorter: student_weak is `base: warmup` plus its own keys).
    "teacher": {"n_layers": 3, "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 4,
                                         "save_every": 4, "num_threads": 1}},
    "student_weak": {"train": {"max_steps": 4, "eval_every": 4, "save_every": 4}},
    "rollout": {"k": 2},
    "mine": {"max_groups": 1, "pairs_per_group": 1},
    "internalize": {"iterations": 2, "k": 2, "max_new_tokens": 24, "replay_episodes": 4, "eval_seeds": [0], "tasks_per_family": 1,
                    "train": {"max_steps": 3, "batch_size": 4, "save_every": 2, "num_threads": 1}},
    "rl": {"method": "siri", "iterations": 2, "tasks_per_family": 1, "k": 2, "max_new_tokens": 24,
           "siri_min_successes": 0, "siri_mine_every": 1, "train": {"batch_size": 4, "save_every": 2, "num_threads": 1}},
    "distill": {"method": "aopd", "iterations": 2, "tasks_per_family": 1, "k": 2, "max_new_tokens": 24,
                "train": {"batch_size": 4, "save_every": 2, "num_threads": 1}},
    "selskill": {"rounds": 1, "tasks_per_family": 1, "k": 2, "max_new_tokens": 24, "init_steps": 2,
                 "init": {"batch_size": 4, "warmup_steps": 1, "save_every": 2, "num_threads": 1}},
    # The SQL track on a few small databases (learn from 4, validate on 1, hold out 1) and a micro student.
    "sql_tasks": {"n_train_dbs": 6, "n_test_dbs": 2, "questions_per_db": 8, "min_fillers": 20, "max_fillers": 30,
                  "random_probes": 1},
    "sql_track": {"validation_dbs": 1, "heldout_dbs": 1},
    "sql_collect": {"train_tasks": 40},
    "sql_warmup": {
        "eval_fraction": 0.25,        # the micro set's ~18 demonstrations: a few for the evaluation loss
        "tokenizer": {"vocab_size": 1024},
        "model": {"hidden_size": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "intermediate_size": 64},
        "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "save_every": 2, "num_threads": 1},
        "induction_steps": 2,
    },
    "sql_rl": {"iterations": 1, "tasks_per_iteration": 2, "k": 2, "max_new_tokens": 16, "validation_tasks": 2,
               "train": {"batch_size": 4, "num_threads": 1}},
    "sql_scale": {"sizes": [20], "dbs_per_size": 1, "questions_per_db": 2},
    "sql_evaluate": {"heldout_tasks": 4, "test_tasks": 4, "real_tasks_per_db": 1, "max_steps": 4, "max_new_tokens": 16},
    # The TextWorldExpress track (`--track twx`): most of its sections are `base: <agents' section>`,
    # so they inherit the micro budgets above; these shrink what they set themselves.
    "twx_tasks": {"families": ["twx_coin"], "n_train_per_family": 4, "n_test_per_family": 2,
                  "n_heldout_train_per_family": 2, "n_heldout_test_per_family": 2},
    "twx_warmup": {"tokenizer": {"vocab_size": 1024}, "induction_steps": 4,
                   "train": {"max_steps": 12, "eval_every": 6, "save_every": 6}},
    "policies": {"warmup": {"kwargs": {"max_new_tokens": 24}}, "twx_warmup": {"kwargs": {"max_new_tokens": 24}}},
    "twx_internalize": {"iterations": 1, "k": 2, "tasks_per_family": 1, "replay_episodes": 4, "max_new_tokens": 24,
                        "eval_seeds": [0, 1],
                        "train": {"max_steps": 3}},
    "twx_rl": {"iterations": 1, "tasks_per_family": 1, "k": 2, "max_new_tokens": 24},
    "twx_rollout": {"k": 2},
    # twx_internalize_seeds keeps its two seeds (env_table's deps name both reports); the
    # steps/s row replays a few tasks for a moment.
    "env_table": {"throughput_seconds": 0.2, "throughput_tasks": 4},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@functools.cache
def _checkout_site() -> str:
    """A folder holding this checkout's entry points as installed metadata (tests/envs/conftest.py):
    on PYTHONPATH, stages in a micro repo find the environments this checkout registers even
    where the installed Distillery is another checkout (an entry also installed is the same entry)."""
    from tests.envs.conftest import write_entry_points

    site = Path(tempfile.mkdtemp(prefix="distillery-checkout-plugins-"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    return str(write_entry_points(site))


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), _checkout_site()) if p)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": pythonpath,
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def planned_stages(repo: Path, *targets: str) -> set[str]:
    """The stages `dvc repro` of `targets` would run from scratch in `repo`: forced and dry, so a
    finished repository shows a track's whole upstream without running anything."""
    out = run([sys.executable, "-m", "dvc", "repro", "--dry", "--force", *targets], repo)
    return {line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")}


def up_to_date(repo: Path, *targets: str) -> bool:
    """`dvc status` of `targets` in `repo` finds nothing changed."""
    return run([sys.executable, "-m", "dvc", "status", *targets], repo).stdout.strip().endswith("up to date.")


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
    # ... and the vision track's (a few scenes, a few steps).
    vision_micro = yaml.safe_load((REPO / "tests/vision/micro_params.yaml").read_text())
    params = _merge(params, _merge(_merge(_merge(MICRO, pghs_micro), vision_micro), overrides or {}))
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


# Stages (and DVC experiments) run in subprocesses that inherit this environment. A micro model
# gains nothing from torch's intra-op threads, and with two cores and a process pool of two
# (or anything else running) they oversubscribe the CPUs: `rollout@warmup` took 184 s with
# torch's default threads and 27 s with one, beside another busy process.
STAGE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_torch_thread_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in STAGE_ENV.items():
        monkeypatch.setenv(k, v)


# The whole micro pipeline is the slow part of these tests (minutes on two cores): it runs once
# per test run, through the Prefect flow, and each test works on its own copy of the result.
# Under pytest-xdist the workers share that one run (a file lock beside their temp dirs: the
# first worker to need it runs it, the others wait for it). Every e2e test may be the first to
# ask for it, or wait for it, so each allows for the shared run in its timeout. The timeout
# ends a hung run; it times nothing: on 2 cores of an AVX2-only EPYC, about 3x slower than
# the machines the budgets were set on, the shared run alone took 1,384 s.
PIPELINE_TIMEOUT = 3600


@dataclass(frozen=True)
class MicroRun:
    repo: Path                      # the repository the flow ran in: read it, never change it
    order: list[str]                # stage_order(repo) before the run
    result: dict[str, Any]          # what flows.pipeline.pipeline returned
    artifacts: list[str]            # the artifact keys on the Prefect server the flow reported to


def artifact_keys() -> set[str]:
    """The keys of the artifacts on the Prefect server this process reports to."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> set[str]:
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts() if a.key}

    return asyncio.run(read())


def _run_micro_pipeline(root: Path) -> dict[str, Any]:
    """The micro repo (MICRO params, collect on a 2-worker process pool) under `root` after one
    full run of `flows.pipeline.pipeline` against this process's Prefect test server: every
    output in the workspace and in the DVC cache, dvc.lock written, not committed."""
    from flows.pipeline import pipeline, stage_order

    (root / "repo").mkdir(parents=True)
    repo = make_micro_repo(root / "repo")
    with pytest.MonkeyPatch.context() as mp:       # a session fixture: set up before the autouse one
        for k, v in STAGE_ENV.items():
            mp.setenv(k, v)
        # The flow runs DVC in subprocesses of its own: they need this checkout's plugins too.
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), _checkout_site()) if p))
        order = stage_order(repo)
        result = pipeline(repo=str(repo))
    # The artifacts are read here, from the server the flow ran against: a test on another
    # xdist worker has its own server.
    return {"repo": str(repo), "order": order, "result": result, "artifacts": sorted(artifact_keys())}


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None, worker_id: str) -> MicroRun:
    """The session's one micro-pipeline run (see `_run_micro_pipeline`), shared by the xdist workers."""
    from filelock import FileLock

    # Beside the workers' own temp dirs (each worker's basetemp is a child of the run's).
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    done, failed = shared / "micro-pipeline.json", shared / "micro-pipeline.failed"
    with FileLock(str(shared / "micro-pipeline.lock")):
        if failed.exists():
            pytest.fail(f"the shared micro-pipeline run failed on another worker:\n{failed.read_text()[-3000:]}")
        if not done.exists():
            try:
                record = _run_micro_pipeline(shared / "micro-pipeline")
            except BaseException as e:
                failed.write_text(f"{type(e).__name__}: {e}")
                raise
            # which stage took how long, for whoever times these tests
            done.write_text(json.dumps(record, indent=1, default=str))
    record = json.loads(done.read_text())
    return MicroRun(repo=Path(record["repo"]), order=record["order"], result=record["result"],
                    artifacts=record["artifacts"])


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy that Git and DVC see as the same state: .git, dvc.lock, the outputs and the DVC
    cache (mtimes kept); DVC's per-workspace scratch (.dvc/tmp: locks, state) is left behind."""
    def ignore(d: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(d) == src / ".dvc" else []

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    return dest


@pytest.fixture
def micro_copy(micro_pipeline: MicroRun, tmp_path: Path) -> Callable[..., Path]:
    """Copies of the shared, already-run micro repo under this test's tmp_path."""
    def factory(name: str = "repo") -> Path:
        return copy_repo(micro_pipeline.repo, tmp_path / name)
    return factory
