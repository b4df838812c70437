"""The distillation teacher: the warm-up student grown deeper and trained on.

A larger model trained from scratch needs the student's whole schedule and more (a
3-layer, 192-wide model trained for 1,200 steps scored 0.05 on the test split against the
student's 0.71), so the teacher starts from the student instead: `lm.model.deepen` appends
decoder blocks that start as the identity (the grown model computes exactly what the
student does), then the warm-up recipe's data (the oracle's train-split episodes, the same
share of prompts showing the task's principles) trains all of it for `train.max_steps`
more steps. It is larger (its `n_layers` against the student's) and trained longer on the
same data; it shares the student's tokenizer by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from distillery.config import _f
from distillery.train.config import TrainConfig
from distillery.train.examples import sft_examples
from distillery.train.internalize import model_prompt
from distillery.train.loop import TrainResult, train
from distillery.train.warmup import held_out, principle_experience
from distillery.types import Task


@dataclass
class TeacherConfig:
    """`teacher` stage: the student deepened to `n_layers` and trained on the same data."""

    student_dir: str = _f("models/warmup", "the model to grow (its tokenizer and prompt format are kept)")
    n_layers: int = _f(4, "decoder blocks of the teacher (the student's are copied, the rest start as identity)")
    trajectories: str = _f("oracle", "whose trajectories to imitate: data/trajectories/<name>")
    eval_fraction: float = _f(0.1, "share of the train tasks held out for the evaluation loss")
    principles_fraction: float = _f(0.5, "share of prompts showing the task's principles (as the student)")
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-3, warmup_steps=50, max_steps=1000, batch_size=16, weight_decay=0.0, eval_every=500,
        save_every=250, seed=1), metadata={"help": "the training loop (seed 1: another data order than the student's)"})

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"teacher.n_layers must be >= 1, got {self.n_layers}")
        if not 0 <= self.eval_fraction < 1 or not 0 <= self.principles_fraction <= 1:
            raise ValueError("teacher.eval_fraction must be in [0, 1) and teacher.principles_fraction in [0, 1]")


def grow_teacher(cfg: TeacherConfig, tasks: Sequence[Task], episodes: pl.DataFrame, steps: pl.DataFrame,
                 ckpt_dir: str | Path) -> tuple[Any, Any, TrainResult, dict[str, int]]:
    """(tokenizer, teacher model, training result, sizes) from the student and the data."""
    from distillery.lm.model import deepen, load_model_dir, n_params

    student = load_model_dir(cfg.student_dir)
    before = n_params(student.model)
    model = deepen(student.model, cfg.n_layers)
    tok = student.tokenizer
    prompt = model_prompt(cfg.student_dir)
    train_tasks = {t.task_id: t for t in tasks if t.split == "train"}
    episodes = episodes.filter(pl.col("split") == "train")
    steps = steps.join(episodes.select("episode_id"), on="episode_id", how="semi")
    if episodes.is_empty():
        raise ValueError("teacher: the trajectories have no train-split episodes to learn from")
    is_eval = pl.col("task_id").is_in(sorted(held_out(sorted(train_tasks), cfg.eval_fraction, cfg.train.seed)))
    shown = principle_experience(episodes, train_tasks, cfg.principles_fraction, cfg.train.seed)
    train_ex, _ = sft_examples(train_tasks, episodes.filter(~is_eval), steps, tok, prompt, True, experience=shown)
    eval_ex, _ = sft_examples(train_tasks, episodes.filter(is_eval), steps, tok, prompt, True, experience=shown)
    model.train()
    result = train(model, train_ex, eval_ex, cfg.train, ckpt_dir, pad_id=tok.pad_token_id)
    model.eval()
    return tok, model, result, {"student_params": before, "teacher_params": n_params(model),
                                "train_examples": len(train_ex), "eval_examples": len(eval_ex)}
