"""Warm-up: a tokenizer and a policy model trained on a teacher's trajectories.

    tok, model, result, stats = warmup(cfg, tasks, episodes, steps, ckpt_dir)

The tokenizer is trained on the environment's text (tasks and trajectories) so its names
come out as whole tokens; the model (from scratch by default, or any checkpoint) is trained
by the one training loop on the teacher's successful train-split episodes, one sequence per
episode with loss on the action tokens. A slice of the train tasks (`eval_fraction`) is
held out for the evaluation loss; the test split is never seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from distillery.agents.prompts import PromptConfig
from distillery.config import _f
from distillery.lm.model import ModelConfig, build_model
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.train.config import TrainConfig
from distillery.train.examples import ExampleStats, corpus_texts, sft_examples
from distillery.train.loop import TrainResult, train
from distillery.types import Task


@dataclass
class WarmupConfig:
    """`warmup` stage: tokenizer + supervised training of the student on teacher trajectories."""

    teacher: str = _f("oracle", "whose trajectories to imitate: data/trajectories/<teacher>")
    eval_fraction: float = _f(0.1, "share of the train tasks held out for the evaluation loss")
    only_success: bool = _f(True, "train only on the teacher's successful episodes")
    tokenizer: TokenizerConfig = _f(TokenizerConfig, "how the tokenizer is trained")
    model: ModelConfig = _f(ModelConfig, "the model: size from scratch, or a checkpoint (+ LoRA)")
    train: TrainConfig = _f(TrainConfig, "the training loop")
    prompt: PromptConfig = _f(PromptConfig, "how prompts are rendered (recorded in the model card)")

    def __post_init__(self) -> None:
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"warmup.eval_fraction must be in [0, 1), got {self.eval_fraction}")


def held_out(task_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A stable, seed-dependent slice of the tasks (by hash, so adding tasks moves none)."""
    def h(t: str) -> float:
        return int.from_bytes(hashlib.blake2b(f"{seed}:{t}".encode(), digest_size=8).digest(), "little") / 2**64
    return {t for t in task_ids if h(t) < fraction}


@dataclass
class WarmupStats:
    train: ExampleStats
    eval: ExampleStats
    vocab_size: int
    n_params: int

    def as_dict(self) -> dict[str, Any]:
        return {"train": self.train.as_dict(), "eval": self.eval.as_dict(), "vocab_size": self.vocab_size,
                "n_params": self.n_params}


def warmup(cfg: WarmupConfig, tasks: Sequence[Task], episodes: pl.DataFrame, steps: pl.DataFrame,
           ckpt_dir: str | Path) -> tuple[Any, Any, TrainResult, WarmupStats]:
    """Train tokenizer and model; returns (tokenizer, model, training result, data stats)."""
    train_tasks = [t for t in tasks if t.split == "train"]
    by_id = {t.task_id: t for t in train_tasks}
    episodes = episodes.filter(pl.col("split") == "train")
    steps = steps.join(episodes.select("episode_id"), on="episode_id", how="semi")
    if episodes.is_empty():
        raise ValueError("warmup: the teacher has no train-split episodes to learn from")
    if cfg.model.name_or_path:
        from transformers import AutoTokenizer

        from distillery.lm.tokenizer import ensure_markers

        tok = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
        ensure_markers(tok)
    else:
        tok = train_tokenizer(corpus_texts(train_tasks, steps), cfg.tokenizer)
    model = build_model(cfg.model, tok)
    hold = held_out(sorted(by_id), cfg.eval_fraction, cfg.train.seed)
    is_eval = pl.col("task_id").is_in(sorted(hold))
    train_ex, train_stats = sft_examples(by_id, episodes.filter(~is_eval), steps, tok, cfg.prompt, cfg.only_success)
    eval_ex, eval_stats = sft_examples(by_id, episodes.filter(is_eval), steps, tok, cfg.prompt, cfg.only_success)
    result = train(model, train_ex, eval_ex, cfg.train, ckpt_dir, pad_id=tok.pad_token_id)
    stats = WarmupStats(train_stats, eval_stats, len(tok), sum(p.numel() for p in model.parameters()))
    return tok, model, result, stats
