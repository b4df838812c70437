"""What imported logs feed: the warm-up trains on them, and a model is scored on their
held-out steps (next-action accuracy, teacher-forced), since they cannot be replayed.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from distillery.agents.oracle import OraclePolicy
from distillery.importers import ImportConfig, held_out_tasks, import_logs, next_action_accuracy
from distillery.types import tasks_from_frame

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("offline") / "imported"
    result = import_logs("openai", [LOGS / "openai"], out, ImportConfig(env="stage"), tasks=LOGS / "tasks.parquet")
    result.logs.folder = out    # where the CLI finds it
    return result.logs


def test_the_metric_replays_the_logged_context_step_by_step(imported):
    """The oracle plays each task's reference solution: it agrees with every step of a logged
    oracle episode and not with an episode that went another way, so the contexts the metric
    builds are the logged ones, in order."""
    tasks = tasks_from_frame(imported.tasks)
    res = next_action_accuracy("unused", tasks, imported.episodes, imported.steps, fraction=1.0, seed=0,
                               policy=OraclePolicy())
    assert res.n_episodes == imported.episodes.height and res.n_steps == imported.steps.height
    per_ep = dict(res.steps.group_by("episode_id").agg(pl.col("correct").all()).iter_rows())
    records = imported.records.filter(pl.col("verdict") != "rejected")
    by_record = {(Path(s).name, r): per_ep[e] for s, r, e in records.select("source", "record", "episode_id").iter_rows()}
    for line in range(1, 7):                       # oracle episodes
        assert by_record[("stage_chat.jsonl", f"line {line}")] is True
    assert by_record[("stage_chat.jsonl", "line 7")] is False       # fell short of the reference
    assert by_record[("stage_chat.jsonl", "line 9")] is False       # a failed call first
    assert 0 < res.accuracy < 1


def test_held_out_is_the_warmups_own_slice():
    from distillery.train.warmup import held_out

    ids = [f"task-{i}" for i in range(200)]
    assert held_out_tasks(ids, 0.3, 5) == held_out(ids, 0.3, 5)


@pytest.mark.slow
def test_warmup_on_imported_logs_then_scored_on_their_held_out_steps(imported, tmp_path):
    """A tiny student warmed up on imported trajectories (the warm-up's own function, fed the
    import folder's frames), then scored on the imported episodes of the tasks it held out."""
    import torch

    from distillery.config import to_dict
    from distillery.lm.model import ModelConfig, save_model_dir
    from distillery.lm.tokenizer import TokenizerConfig
    from distillery.train.card import build_card
    from distillery.train.config import TrainConfig
    from distillery.train.warmup import WarmupConfig, held_out, warmup

    torch.set_num_threads(1)
    tasks = tasks_from_frame(imported.tasks)
    cfg = WarmupConfig(
        teacher="imported", eval_fraction=0.3, principles_fraction=0.0, induction_steps=0,
        tokenizer=TokenizerConfig(vocab_size=1024),
        model=ModelConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                          max_position_embeddings=1024),
        train=TrainConfig(lr=3e-3, warmup_steps=5, max_steps=60, batch_size=4, grad_accum=1, save_every=0,
                          eval_every=0, log_every=20, seed=3, progress=False, num_threads=1, dvclive=False))
    tok, model, result, stats = warmup(cfg, tasks, imported.episodes, imported.steps, tmp_path / "ckpt")
    hold = held_out(sorted(t.task_id for t in tasks if t.split == "train"), cfg.eval_fraction, cfg.train.seed)
    assert hold and stats.train.episodes > 0
    card = build_card(prompt=cfg.prompt, seed=cfg.train.seed, params=to_dict(cfg), model_cfg=cfg.model,
                      train_cfg=cfg.train)
    model_dir = save_model_dir(tmp_path / "student", model, tok, card)
    res = next_action_accuracy(str(model_dir), tasks, imported.episodes, imported.steps, device="cpu",
                               max_new_tokens=48)
    # the card's held-out slice, not a guess: exactly the tasks the warm-up did not train on
    assert (res.fraction, res.seed) == (0.3, 3)
    assert set(res.steps["task_id"]) == hold & set(imported.episodes["task_id"])
    assert res.n_steps == imported.steps.join(
        imported.episodes.filter(pl.col("task_id").is_in(sorted(hold))).select("episode_id"),
        on="episode_id", how="semi").height
    assert res.accuracy is not None and 0.0 <= res.accuracy <= 1.0
    # the same score from the command line
    from typer.testing import CliRunner

    from distillery.cli import app

    cli = CliRunner().invoke(app, ["eval", "--policy", "hf", "--model", str(model_dir), "--imported",
                                   str(imported.folder), "--device", "cpu", "--max-tokens", "48",
                                   "--out", str(tmp_path / "score"), "--no-progress"], catch_exceptions=False)
    assert cli.exit_code == 0, cli.output
    assert f"held-out next-action accuracy {res.accuracy:.3f}" in cli.output
    assert json.loads((tmp_path / "score" / "next_action.json").read_text())["n_steps"] == res.n_steps
    print(f"held-out next-action accuracy of a student warmed up on imported logs: {res.accuracy:.3f} "
          f"({res.n_correct}/{res.n_steps} steps, {res.n_episodes} episodes)")
