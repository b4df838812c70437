"""The rollout engine: every step recorded, identical results however episodes are batched
or sharded (inline, a process pool, a local Dask cluster), errors recorded as rows."""

from __future__ import annotations

import polars as pl
import pytest

from distillery.agents.base import PolicySpec
from distillery.config import ExecutorConfig, TasksConfig
from distillery.rollout import (
    POLICY_ERROR_PREFIX,
    RolloutConfig,
    error_counts,
    make_jobs,
    run_batch,
    run_episodes,
)
from distillery.tasks.generate import generate_tasks
from distillery.types import ActionOutput

VOLATILE = ["wall_s"]


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(n_train_per_family=1, n_test_per_family=0, random_probes=0),
                          progress=False).tasks


def _stable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop([c for c in VOLATILE if c in frame.columns])


def test_inline_process_pool_and_dask_agree(tasks):
    from dask.distributed import LocalCluster

    spec = PolicySpec("random", {"seed": 3})
    cfg = RolloutConfig(k=2, seed=1, batch_size=3)
    inline = run_episodes(tasks, spec, cfg, ExecutorConfig(kind="inline"), progress=False)
    pool = run_episodes(tasks, spec, cfg, ExecutorConfig(kind="process", workers=2), progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = run_episodes(tasks, spec, cfg, ExecutorConfig(address=cluster.scheduler_address), progress=False)
    assert inline.episodes.height == 2 * len(tasks)
    for other in (pool, dask):
        assert _stable(other.episodes).equals(_stable(inline.episodes))
        assert _stable(other.steps).equals(_stable(inline.steps))
    # Every step is recorded, and groups hold the K samples of one task.
    assert inline.episodes["n_steps"].sum() == inline.steps.height
    assert inline.episodes.group_by("group").len()["len"].unique().to_list() == [2]


def test_oracle_succeeds_and_steps_carry_state_hashes(tasks):
    cfg = RolloutConfig()
    traj = run_batch(__import__("distillery.agents.oracle", fromlist=["x"]).OraclePolicy(),
                     make_jobs(tasks, "oracle", cfg), cfg)
    assert traj.episodes["success"].all() and (traj.episodes["failure_mode"] == "none").all()
    mutating = traj.steps.filter(pl.col("tool").is_in(["move", "send_mail", "create_event"]))
    assert (mutating["state_hash"].str.len_chars() == 16).all()


class _FlakyPolicy:
    """Fails to produce an action for one episode, as an endpoint down after retries would."""

    name = "flaky"
    model = "-"

    def act(self, contexts):
        return [ActionOutput(text="", error="endpoint unreachable") if c.episode_id.startswith(("save_note",))
                else ActionOutput(text="finish()") for c in contexts]


def test_policy_errors_become_errored_episodes_not_gaps(tasks):
    cfg = RolloutConfig()
    traj = run_batch(_FlakyPolicy(), make_jobs(tasks, "flaky", cfg), cfg)
    assert traj.episodes.height == len(tasks)
    bad = traj.episodes.filter(pl.col("family") == "save_note")
    assert bad["failure_mode"].to_list() == ["error"] and "endpoint unreachable" in bad["error"][0]
    assert error_counts(traj.episodes) == (1, 0)      # the policy's, not the environment's


def test_error_counts_tell_the_policy_from_the_environment():
    episodes = pl.DataFrame({"error": ["", f"{POLICY_ERROR_PREFIX}timeout", "Traceback ...\nKeyError: 'x'", None]})
    assert error_counts(episodes) == (1, 1)
    assert error_counts(pl.DataFrame({"episode_id": ["e"]})) == (0, 0)


def test_a_model_policy_sharded_over_processes_plays_as_inline(tasks, tmp_path):
    """Per-row seeds make sampled episodes independent of the sharding; each worker loads the
    model once and batches its whole shard."""
    from distillery.lm.model import ModelConfig, build_model, save_model_dir
    from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
    from distillery.train.examples import corpus_texts

    tok = train_tokenizer(corpus_texts(tasks), TokenizerConfig(vocab_size=400))
    model = build_model(ModelConfig(hidden_size=16, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                    max_position_embeddings=512, init_seed=0), tok)
    save_model_dir(tmp_path / "model", model, tok)
    spec = PolicySpec("hf", {"model_dir": str(tmp_path / "model"), "temperature": 0.7, "max_new_tokens": 8,
                             "device": "cpu"}, "tiny")
    cfg = RolloutConfig(k=2, seed=1, batch_size=8, max_steps=3)
    inline = run_episodes(tasks, spec, cfg, ExecutorConfig(kind="inline"), progress=False)
    pool = run_episodes(tasks, spec, cfg, ExecutorConfig(kind="process", workers=2), progress=False)
    assert inline.episodes.height == 2 * len(tasks) and inline.steps.height > 0
    assert _stable(pool.episodes).equals(_stable(inline.episodes))
    # The same tokens; their log-probs only to rounding, since a shard pads its batch differently.
    assert _stable(pool.steps).drop("logprob").equals(_stable(inline.steps).drop("logprob"))
    assert pool.steps["logprob"].to_list() == pytest.approx(inline.steps["logprob"].to_list(), rel=1e-5)


def test_pool_workers_share_the_cores_and_keep_their_policy(monkeypatch):
    import os

    from distillery import rollout

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with rollout.make_executor(ExecutorConfig(kind="process", workers=2)) as ex:
        threads = ex.submit(os.getenv, "OMP_NUM_THREADS").result()
    assert threads == str(rollout.worker_threads(2)) and int(threads) >= 1

    first = rollout._worker_policy(PolicySpec("random", {"seed": 1}))
    assert rollout._worker_policy(PolicySpec("random", {"seed": 1})) is first
    assert rollout._worker_policy(PolicySpec("random", {"seed": 2})) is not first


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"k": 0}, {"max_steps": 0}])
def test_a_rollout_that_could_never_start_is_refused(bad):
    # batch_size 0 would start no episode and wait for one forever.
    with pytest.raises(ValueError, match="rollout: "):
        RolloutConfig(**bad)
