"""What imported logs feed: the warm-up trains on them, and a model is scored on their
held-out steps (next-action accuracy, teacher-forced), since they cannot be replayed.
"""

from __future__ import annotations

import json
from dataclasses import replace
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


def test_mining_reads_imported_trajectories(imported):
    """The miner takes the import folder's frames as it takes rollouts: instances and skills
    whose provenance is the imported episodes."""
    from distillery.mining.experience import MineConfig, mine

    tasks = tasks_from_frame(pl.read_parquet(LOGS / "tasks.parquet"))
    mined = mine(MineConfig(split="train", validate_skills=False), tasks, imported.episodes, imported.steps)
    assert mined.instances and mined.skills
    ids = set(imported.episodes["episode_id"])
    for item in mined.instances:
        assert set(item.provenance) <= ids


def test_imported_successes_are_internalizations_replay(imported):
    """Internalization mixes replayed episodes, principles shown, into its training data
    (`run_internalize(..., replay=(episodes, steps))`): imported successes serve as that replay."""
    from distillery.agents.prompts import PromptConfig
    from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
    from distillery.train.internalize import replay_examples

    tasks = {t.task_id: t for t in tasks_from_frame(pl.read_parquet(LOGS / "tasks.parquet")) if t.split == "train"}
    texts = [t.instruction for t in tasks.values()] + imported.steps["observation"].to_list() + \
        imported.steps["action_text"].to_list()
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=1024))
    examples = replay_examples(tasks, imported.episodes, imported.steps, tok, PromptConfig(), 100, 0)
    successes = imported.episodes.filter(pl.col("success") & pl.col("task_id").is_in(list(tasks)))
    assert successes.height == 10 and len(examples) >= successes.height     # whole episodes, or per step
    assert all(any(label != -100 for label in ex.labels) for ex in examples)


WARMUP_PARAMS = """
warmup:
  teacher: imported
  eval_fraction: 0.3
  tokenizer: {vocab_size: 1024}
  model: {hidden_size: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, intermediate_size: 128,
          max_position_embeddings: 1024}
  train: {lr: 0.003, warmup_steps: 5, max_steps: 60, batch_size: 4, seed: 3, progress: false,
          num_threads: 1, dvclive: false}
  principles_fraction: 0.0
  induction_steps: 0
"""


@pytest.mark.slow
def test_the_documented_path_import_then_warmup_stage_then_offline_score(tmp_path, monkeypatch):
    """docs/importing.md's recipe in a project folder: `distillery import ... --out
    data/trajectories/imported`, `warmup.teacher: imported`, the warm-up stage itself, then
    `distillery eval --imported` scores the student on exactly the tasks it held out."""
    import os
    import subprocess
    import sys

    from typer.testing import CliRunner

    from distillery.cli import app
    from distillery.train.warmup import held_out

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "tasks").mkdir(parents=True)
    (tmp_path / "data" / "tasks" / "tasks.parquet").write_bytes((LOGS / "tasks.parquet").read_bytes())
    (tmp_path / "params.yaml").write_text(WARMUP_PARAMS)
    runner = CliRunner()
    # --tasks auto: the project's data/tasks/tasks.parquet
    imp = runner.invoke(app, ["import", "openai", str(LOGS / "openai"), "--out", "data/trajectories/imported",
                              "--env", "stage", "--no-progress"], catch_exceptions=False)
    assert imp.exit_code == 0, imp.output
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])}
    stage = subprocess.run([sys.executable, "-m", "stages.warmup"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert stage.returncode == 0, stage.stderr[-3000:]
    card = json.loads((tmp_path / "models" / "warmup" / "card.json").read_text())
    assert card["teacher"] == "imported" and card["data_stats"]["train"]["episodes"] > 0

    score = runner.invoke(app, ["eval", "--policy", "hf", "--model", "models/warmup", "--imported",
                                "data/trajectories/imported", "--device", "cpu", "--max-tokens", "48",
                                "--out", "reports/eval/imported", "--no-progress"], catch_exceptions=False)
    assert score.exit_code == 0, score.output
    res = json.loads((tmp_path / "reports" / "eval" / "imported" / "next_action.json").read_text())
    steps = pl.read_parquet(tmp_path / "reports" / "eval" / "imported" / "next_action_steps.parquet")
    episodes = pl.read_parquet(tmp_path / "data" / "trajectories" / "imported" / "episodes.parquet")
    train_ids = sorted(t.task_id for t in tasks_from_frame(pl.read_parquet(LOGS / "tasks.parquet"))
                       if t.split == "train")
    hold = held_out(train_ids, 0.3, 3)
    # the card's held-out slice, not a guess: exactly the tasks the warm-up did not train on
    assert (res["fraction"], res["seed"]) == (0.3, 3)
    assert set(steps["task_id"]) == hold & set(episodes["task_id"]) != set()
    assert res["accuracy"] is not None and 0.0 <= res["accuracy"] <= 1.0
    print(f"held-out next-action accuracy of the warm-up stage's student on imported logs: "
          f"{res['accuracy']:.3f} ({res['n_correct']}/{res['n_steps']} steps, {res['n_episodes']} episodes)")


MINE_PARAMS = """
mine:
  rollouts: imported
  split: train
  summariser: rules
  validate_skills: false
"""


def test_the_documented_path_import_then_mine_stage(tmp_path, monkeypatch):
    """`distillery import ... --out data/rollouts/imported`, `mine.rollouts: imported`, the mine
    stage itself: a pool whose provenance is the imported episodes."""
    import os
    import subprocess
    import sys

    from typer.testing import CliRunner

    from distillery.cli import app

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "tasks").mkdir(parents=True)
    (tmp_path / "data" / "tasks" / "tasks.parquet").write_bytes((LOGS / "tasks.parquet").read_bytes())
    (tmp_path / "params.yaml").write_text(MINE_PARAMS)
    imp = CliRunner().invoke(app, ["import", "openai", str(LOGS / "openai"), "--out", "data/rollouts/imported",
                                   "--env", "stage", "--no-progress"], catch_exceptions=False)
    assert imp.exit_code == 0, imp.output
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])}
    stage = subprocess.run([sys.executable, "-m", "stages.mine"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert stage.returncode == 0, stage.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports" / "details" / "mine.json").read_text())
    assert metrics["episodes"] == 14 and metrics["instances"] > 0
    ids = set(pl.read_parquet(tmp_path / "data" / "rollouts" / "imported" / "episodes.parquet")["episode_id"])
    instances = [json.loads(line) for line in (tmp_path / "data" / "experience" / "instances.jsonl").read_text()
                 .splitlines() if line.strip()]
    assert instances and all(set(i["provenance"]) <= ids for i in instances)


def test_the_warmup_function_takes_tasks_derived_from_logs(tmp_path):
    """Logs that name no task (derived `imported-…` tasks, not in the project's table): the
    warm-up function trains on the import folder's own tasks.parquet."""
    import torch

    from distillery.lm.model import ModelConfig, ModelLoadError, save_model_dir
    from distillery.lm.tokenizer import TokenizerConfig
    from distillery.train.config import TrainConfig
    from distillery.train.warmup import WarmupConfig, warmup

    torch.set_num_threads(1)
    plain = []
    for line in (LOGS / "openai" / "stage_chat.jsonl").read_text().splitlines()[:9]:
        record = json.loads(line)
        record["metadata"] = {k: record["metadata"][k] for k in ("success", "score")}   # no task id, no env
        plain.append(json.dumps(record))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "plain.jsonl").write_text("\n".join(plain) + "\n")
    result = import_logs("openai", [tmp_path / "in" / "plain.jsonl"], tmp_path / "out", ImportConfig(env="stage"))
    assert result.totals["kept"] == 9
    assert all(t.startswith("imported-") for t in result.logs.tasks["task_id"])
    cfg = WarmupConfig(teacher="imported", eval_fraction=0.3, induction_steps=0,
                       tokenizer=TokenizerConfig(vocab_size=1024),
                       model=ModelConfig(hidden_size=32, n_layers=1, n_heads=4, n_kv_heads=2, intermediate_size=64,
                                         max_position_embeddings=1024),
                       train=TrainConfig(max_steps=5, batch_size=4, progress=False, num_threads=1, dvclive=False))
    tasks = tasks_from_frame(pl.read_parquet(tmp_path / "out" / "tasks.parquet"))
    tok, model, trained, stats = warmup(cfg, tasks, result.logs.episodes, result.logs.steps, tmp_path / "ckpt")
    assert trained.steps == 5 and stats.train.examples > 0 and stats.train.skipped_unsuccessful == 2

    # Warming up from a checkpoint (model.name_or_path) instead of from scratch: its tokenizer
    # and weights are the start; a damaged one is refused naming the setting and the part.
    save_model_dir(tmp_path / "start", model, tok, {})
    from_ckpt = replace(cfg, model=ModelConfig(name_or_path=str(tmp_path / "start")))
    _, _, again, _ = warmup(from_ckpt, tasks, result.logs.episodes, result.logs.steps, tmp_path / "ckpt2")
    assert again.steps == 5
    (tmp_path / "start" / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"model.name_or_path='.*start': cannot load the tokenizer"):
        warmup(from_ckpt, tasks, result.logs.episodes, result.logs.steps, tmp_path / "ckpt3")
