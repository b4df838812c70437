"""The task set: deterministic, split by database and by domain/style, every kept task solved
by its reference solution with score 1.0, the random policy nearly never; rejections carry
reasons; the GX suite passes it and catches a broken row."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.envs.sql.conftest import SMALL, SqlRandomPolicy, play

from distillery.config import ConfigError, from_dict
from distillery.envs.sql.config import SqlTasksConfig
from distillery.envs.sql.env import SqlEnv
from distillery.envs.sql.taskset import generate_sql_tasks
from distillery.quality import GateError, gate
from distillery.quality.sql_suites import SQL_TASKS
from distillery.types import tasks_to_frame


def test_generation_is_deterministic(small_set, tmp_path):
    again = generate_sql_tasks(SqlTasksConfig(**SMALL), tmp_path / "again")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "initial_state" and k != "reference_solution"}  # noqa: E731
                          for r in rows]
    assert strip([t.to_row() for t in again.tasks]) == strip([t.to_row() for t in small_set.tasks])
    assert [t.reference_solution for t in again.tasks] == [t.reference_solution for t in small_set.tasks]
    for a, b in zip(again.tasks, small_set.tasks, strict=True):
        assert hashlib.sha256(Path(a.initial_state["db"]).read_bytes()).digest() == \
            hashlib.sha256(Path(b.initial_state["db"]).read_bytes()).digest()


def test_test_databases_are_unseen_in_training(small_set):
    train = [t for t in small_set.tasks if t.split == "train"]
    test = [t for t in small_set.tasks if t.split == "test"]
    assert train and test
    assert not {t.initial_state["db"] for t in train} & {t.initial_state["db"] for t in test}
    assert not {t.initial_state["domain"] for t in train} & {t.initial_state["domain"] for t in test}
    assert not {t.initial_state["style"] for t in train} & {t.initial_state["style"] for t in test}
    assert len({t.family for t in small_set.tasks}) >= 15


def test_every_kept_task_is_solved_by_its_reference_and_rarely_by_the_random_policy(small_set):
    env = SqlEnv()
    policy = SqlRandomPolicy(seed=0)
    random_wins = random_runs = 0
    try:
        for task in small_set.tasks:
            assert play(env, task, None).score == 1.0, task.task_id
            for k in range(2):
                random_runs += 1
                random_wins += play(env, task, policy, sample=k).success
    finally:
        env.close()
    assert random_wins / random_runs <= 0.02


def test_rejections_carry_reasons(small_set):
    assert small_set.rejected
    assert all(r.reasons and all(isinstance(x, str) and x for x in r.reasons) for r in small_set.rejected)
    assert any("decoy" in r.reasons[0] for r in small_set.rejected)
    assert small_set.report["kept"]["train"] >= 0.5 * 4 * 6


def test_a_probe_rejects_what_a_weak_policy_solves(tmp_path):
    cfg = SqlTasksConfig(**{**SMALL, "n_train_dbs": 1, "n_test_dbs": 0, "random_probes": 1, "min_kept_fraction": 0})
    got = generate_sql_tasks(cfg, tmp_path, probe=lambda tasks: {tasks[0].task_id})
    assert any(r.reasons == ["a random policy solved it (trivially solvable)"] for r in got.rejected)


def test_the_config_says_what_to_change():
    with pytest.raises(ConfigError, match="test_domains or test_styles"):
        from_dict(SqlTasksConfig, {"test_domains": ["retail"], "test_styles": ["snake"]}, "sql_tasks")
    with pytest.raises(ConfigError, match="train_domains"):
        from_dict(SqlTasksConfig, {"train_domains": ["space"]}, "sql_tasks")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(SqlTasksConfig, {"n_dbs": 3}, "sql_tasks")


def test_the_gx_suite_passes_the_set_and_catches_a_broken_row(small_set, tmp_path):
    frame = tasks_to_frame(small_set.tasks)
    dirs = {"report_dir": tmp_path / "reports", "quarantine_dir": tmp_path / "quarantine"}
    assert gate(frame, SQL_TASKS, source="mem", **dirs).success
    import polars as pl

    bad = frame.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit('[{"type": "execution", '
                             '"gold_sql": "DROP TABLE x"}]')).otherwise(pl.col("checks")).alias("checks"))
    with pytest.raises(GateError, match="_sql_gold_ok"):
        gate(bad, SQL_TASKS, source="mem2", **dirs)
