"""The SQL student's RL pieces: outcomes by replay, the two tracks' rewards and advantages,
per-token training sequences, the loss through the training loop, and a resumable micro run."""

from __future__ import annotations

import json
from dataclasses import replace

import polars as pl
import pytest
import torch

from distillery.agents.oracle import OraclePolicy
from distillery.agents.prompts import PromptConfig
from distillery.envs.sql.config import SqlTasksConfig
from distillery.envs.sql.taskset import generate_sql_tasks
from distillery.lm.markers import MARKERS
from distillery.lm.model import ModelConfig, build_model, save_model_dir
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.quality import SUITES, gate
from distillery.quality.sql_traj_suites import SQL_OUTCOMES
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.train.config import TrainConfig
from distillery.train.data import collate
from distillery.train.examples import corpus_texts
from distillery.train.loop import train
from distillery.train.rl import score_examples
from distillery.train.sql_rl import (
    SqlRLConfig,
    SqlTrackConfig,
    episode_advantages,
    episode_rewards,
    learning_slice,
    rl_sequences,
    run_sql_rl,
    split_train,
    spread_slice,
    sql_outcomes,
    sql_rl_loss_fn,
    with_old_logprobs,
)

PROMPT = PromptConfig(max_prompt_tokens=1024, max_observation_tokens=200, max_history_turns=14)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Three train databases and their tasks, in a directory the tests chdir into."""
    root = tmp_path_factory.mktemp("sqlrl")
    cfg = SqlTasksConfig(n_train_dbs=3, n_test_dbs=0, questions_per_db=4, min_fillers=100, max_fillers=110,
                         random_probes=0, min_kept_fraction=0.5)
    return root, generate_sql_tasks(cfg, root / "data/sql").tasks


def _play(policy, tasks, k=1, **env_kwargs) -> Trajectories:
    rcfg = RolloutConfig(k=k, batch_size=16, env_kwargs=env_kwargs)
    return run_batch(policy, make_jobs(tasks, policy.name, rcfg), rcfg)


def test_validation_slice_and_spread(tiny):
    _, tasks = tiny
    split = split_train(tasks, SqlTrackConfig(validation_dbs=1, heldout_dbs=1, learn_reference_calls=0))
    learn, val = split.learn, split.validation
    ids = sorted({t.initial_state["db_id"] for t in tasks})
    assert {t.initial_state["db_id"] for t in split.heldout} == {ids[-1]}
    assert {t.initial_state["db_id"] for t in val} == {ids[-2]} and {t.initial_state["db_id"] for t in learn} == {ids[0]}
    short = split_train(tasks, SqlTrackConfig(validation_dbs=1, heldout_dbs=1, learn_reference_calls=5)).learn
    assert short and all(len(t.reference_solution) <= 5 for t in short) and len(short) <= len(learn)
    picked = spread_slice(tasks, 3)
    assert len(picked) == 3 and len({t.initial_state["db_id"] for t in picked}) == 3
    assert learning_slice(learn, 2, 0) != learning_slice(learn, 2, 1)


def test_oracle_outcomes_by_replay(tiny):
    _, tasks = tiny
    traj = _play(OraclePolicy(), tasks[:4])
    out = sql_outcomes({t.task_id: t for t in tasks}, traj)
    assert out.height == 4 and out["replay_matches"].all() and out["correct"].all() and out["format_ok"].all()
    assert out["execution_reward"].to_list() == [1.0] * 4 and out["schema_reward"].to_list() == [1.0] * 4
    props = [[c.tool for c in t.reference_solution].index("propose_schema") for t in tasks[:4]]
    assert sorted(out["proposal_step"].to_list()) == sorted(props)
    assert (out["n_tables_described"] >= 1).all() and (out["described_share"] < 0.1).all()
    gate(out, SQL_OUTCOMES, source="outcomes.parquet", refs={"episodes": traj.episodes, "steps": traj.steps},
         report_dir="reports/q", quarantine_dir="data/q")


def _outcomes(**cols) -> pl.DataFrame:
    base = {"episode_id": ["a", "b", "c", "d"], "group": ["g"] * 4, "correct": [True, False, False, False],
            "execution_reward": [1.0, 0.2, 0.0, 0.2], "format_ok": [True, True, False, False],
            "schema_reward": [1.0, 0.6, 0.3, 0.0], "proposal_step": [4, 2, 1, -1]}
    return pl.DataFrame({**base, **cols})


def test_rewards_gate_the_schema_reward_on_correctness_by_default():
    r = episode_rewards(_outcomes(), SqlRLConfig())
    # exec track: 1.0 + 0.1, 0.2 + 0.1, 0.0, 0.2; schema only for the correct answer
    assert r["exec_track"].to_list() == pytest.approx([1.1, 0.3, 0.0, 0.2])
    assert r["schema_track"].to_list() == [1.0, 0.0, 0.0, 0.0]
    always = episode_rewards(_outcomes(), SqlRLConfig(schema_gate="always"))
    assert always["schema_track"].to_list() == [1.0, 0.6, 0.3, 0.0]      # no proposal: 0


def test_dual_keeps_two_advantages_grpo_sums_them():
    dual = episode_advantages(_outcomes(), SqlRLConfig(schema_gate="always", adv_mode="mean_norm"))
    # exec [1.1, 0.3, 0, 0.2] mean 0.4; schema over the proposers [1, 0.6, 0.3] mean 0.6333
    assert dual["adv_exec"].to_list() == pytest.approx([0.7, -0.1, -0.4, -0.2])
    assert dual["adv_schema"].to_list() == pytest.approx([1 - 1.9 / 3, 0.6 - 1.9 / 3, 0.3 - 1.9 / 3, 0.0])
    grpo = episode_advantages(_outcomes(), SqlRLConfig(method="grpo", schema_gate="always", adv_mode="mean_norm"))
    # sums [2.1, 0.9, 0.3, 0.2] mean 0.875
    assert grpo["adv_exec"].to_list() == pytest.approx([1.225, 0.025, -0.575, -0.675])
    assert grpo["adv_schema"].to_list() == [0.0] * 4


def _tokenizer_and_model(tasks, traj, seed=0):
    tok = train_tokenizer(corpus_texts(tasks, traj.steps), TokenizerConfig(vocab_size=2000))
    torch.manual_seed(seed)
    model = build_model(ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64,
                                    max_position_embeddings=1280, init_seed=seed), tok)
    return tok, model


def test_sequences_carry_per_token_advantages_and_the_prefix(tiny):
    _, tasks = tiny
    by_id = {t.task_id: t for t in tasks}
    short = sorted(tasks, key=lambda t: (len(t.reference_solution), t.task_id))[:2]
    traj = _play(OraclePolicy(), short)
    tok, _ = _tokenizer_and_model(tasks, traj)
    out = sql_outcomes(by_id, traj)
    adv = out.select("episode_id", "proposal_step").with_columns(adv_exec=pl.lit(0.5), adv_schema=pl.lit(-2.0))
    seqs, stats = rl_sequences(by_id, traj, adv, tok, PROMPT)
    assert stats.whole_episode == 2 and len(seqs) == 2
    ordered = out.sort("episode_id")          # rl_sequences and sql_outcomes both go by episode id
    n_steps = traj.episodes.sort("episode_id")["n_steps"].to_list()
    for ex, boundary, n in zip(seqs, ordered["proposal_step"].to_list(), n_steps, strict=True):
        step, prev = -1, False
        for i, lab in enumerate(ex.labels):
            on = lab != -100
            step += on and not prev           # each action (its tokens and the end marker) is one run
            prev = on
            if on:
                assert ex.extras["adv_exec"][i] == 0.5
                assert ex.extras["adv_schema"][i] == -2.0
                assert ex.extras["prefix"][i] == (1.0 if step <= boundary else 0.0)
            else:
                assert ex.extras["adv_exec"][i] == ex.extras["adv_schema"][i] == ex.extras["prefix"][i] == 0.0
        assert step + 1 == n


def test_an_action_cut_at_the_token_cap_has_no_end_marker_target(tiny):
    _, tasks = tiny
    by_id = {t.task_id: t for t in tasks}
    task = sorted(tasks, key=lambda t: (len(t.reference_solution), t.task_id))[0]
    traj = _play(OraclePolicy(), [task])
    tok, _ = _tokenizer_and_model(tasks, traj)
    end = tok.convert_tokens_to_ids(MARKERS["end"])
    adv = sql_outcomes(by_id, traj).select("episode_id", "proposal_step").with_columns(
        adv_exec=pl.lit(1.0), adv_schema=pl.lit(0.0))
    whole, _ = rl_sequences(by_id, traj, adv, tok, PROMPT, max_new_tokens=100)
    cut_traj = Trajectories(traj.episodes, traj.steps.with_columns(
        tokens_out=pl.when(pl.col("t") == 1).then(100).otherwise(pl.col("tokens_out"))))
    cut, _ = rl_sequences(by_id, cut_traj, adv, tok, PROMPT, max_new_tokens=100)
    a, b = whole[0], cut[0]
    assert a.input_ids == b.input_ids                  # the same tokens: the marker stays as context
    lost = [i for i, (x, y) in enumerate(zip(a.labels, b.labels, strict=True)) if x != y]
    assert len(lost) == 1 and b.labels[lost[0]] == -100 and b.extras["adv_exec"][lost[0]] == 0.0
    assert a.input_ids[lost[0]] == end and a.labels[lost[0] - 1] != -100      # the action's own tokens stay


def test_the_loss_trains_through_the_loop(tiny, tmp_path):
    """Oracle and a broken episode in one group: the loss falls over a few epochs and
    the weights move; grpo (w_s = 0) trains too."""
    _, tasks = tiny
    by_id = {t.task_id: t for t in tasks}
    task = tasks[0]
    good = _play(OraclePolicy(), [task])
    bad_task = replace(task, reference_solution=task.reference_solution[:2])
    bad = _play(OraclePolicy(), [bad_task])
    bad = Trajectories(bad.episodes.with_columns(pl.col("episode_id") + "-bad"),
                       bad.steps.with_columns(pl.col("episode_id") + "-bad"))
    traj = Trajectories.concat([good, bad])
    tok, model = _tokenizer_and_model(tasks, traj, seed=1)
    for method in ("dual", "grpo"):
        cfg = SqlRLConfig(method=method, schema_gate="always", temperature=1.0)
        adv = episode_advantages(sql_outcomes(by_id, traj), cfg)
        seqs, _ = rl_sequences(by_id, traj, adv, tok, PROMPT)
        old = score_examples(model, seqs, temperature=1.0, pad_id=tok.pad_token_id)
        batch = with_old_logprobs(seqs, old, None)
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        loss_fn = sql_rl_loss_fn(cfg)
        first = float(loss_fn(model, collate(batch, tok.pad_token_id))[0].detach())
        train(model, batch, [], TrainConfig(lr=3e-3, warmup_steps=0, epochs=6.0, batch_size=2, weight_decay=0.0,
                                            max_seq_len=1280, progress=False, dvclive=False, num_threads=1),
              tmp_path / method, loss_fn, pad_id=tok.pad_token_id)
        last = float(loss_fn(model, collate(batch, tok.pad_token_id))[0].detach())
        assert last < first, (method, first, last)
        assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())


def test_a_micro_run_resumes_its_finished_iterations(tiny, tmp_path, monkeypatch):
    root, tasks = tiny
    monkeypatch.chdir(root)
    short = [replace(t, max_steps=3) for t in tasks]
    split = split_train(short, SqlTrackConfig(validation_dbs=1, heldout_dbs=0, learn_reference_calls=0))
    learn, val = split.learn, split.validation
    traj = _play(OraclePolicy(), learn[:2])
    tok, model = _tokenizer_and_model(short, traj, seed=2)
    save_model_dir(tmp_path / "start", model, tok, {"prompt": {"style": "compact", "max_prompt_tokens": 1024,
                                                               "max_observation_tokens": 200, "max_history_turns": 14}})
    cfg = SqlRLConfig(model_dir=str(tmp_path / "start"), iterations=1, tasks_per_iteration=2, k=2, max_new_tokens=8,
                      batch_size=8, validation_tasks=2, train=TrainConfig(lr=1e-3, warmup_steps=0, batch_size=4,
                                                                          progress=False, dvclive=False, num_threads=1))
    run = tmp_path / "run"
    _, _, before, results = run_sql_rl(cfg, SqlTrackConfig(), learn, val[:2], run)
    assert before == 0.0 and len(results) == 1 and (run / "iter-0" / "result.json").is_file()
    recorded = json.loads((run / "iter-0" / "result.json").read_text())
    assert recorded["iteration"] == 0 and 0.0 <= recorded["rollout_accuracy"] <= 1.0
    _, _, _, again = run_sql_rl(cfg, SqlTrackConfig(), learn, val[:2], run)
    assert again == results                      # read back, not rerun


def test_episodes_gate_applies_to_sql_trajectories(tiny):
    _, tasks = tiny
    traj = _play(OraclePolicy(), tasks[:3])
    refs = {"episodes": traj.episodes, "steps": traj.steps}
    for name in ("episodes", "steps"):
        gate(getattr(traj, name), SUITES[name], source=f"{name}.parquet", refs=refs,
             report_dir="reports/q", quarantine_dir="data/q")


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"k": 1}, {"max_steps": 0}])
def test_a_config_that_cannot_learn_or_start_is_refused(bad):
    with pytest.raises(ValueError, match="sql_rl.iterations"):
        SqlRLConfig(**bad)
