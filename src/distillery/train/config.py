"""`TrainConfig`: the one configuration of the one training loop (`train.loop.train`); and
`OnPolicyConfig`, the fields every on-policy trainer's config shares.

Every field has a default and a one-line help; `__post_init__` says what to change.
Fields that decide the sequence of updates (learning rate, batch, seed...) form the
config's *fingerprint*: a checkpoint is resumed only by a run with the same fingerprint
(`TRAJECTORY_FIELDS`); logging, evaluation and checkpointing cadence can change freely.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from distillery.config import SPLITS, _f, check_choices  # SPLITS: distillery.types'


@dataclass
class TrainConfig:
    """One training run: optimiser, schedule, batching, evaluation, checkpoints, logging."""

    lr: float = _f(1e-3, "peak learning rate (AdamW), reached after warm-up")
    min_lr_ratio: float = _f(0.1, "the cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = _f(20, "optimizer steps of linear warm-up from 0 to lr")
    max_steps: int = _f(0, "optimizer steps to train; 0 = derive from `epochs`")
    epochs: float = _f(1.0, "passes over the training examples (used when max_steps = 0)")
    batch_size: int = _f(16, "sequences per micro-batch (per process)")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    max_seq_len: int = _f(1024, "longer examples keep their first max_seq_len tokens (counted in metrics)")
    weight_decay: float = _f(0.1, "AdamW decoupled weight decay on matrices (not on norms or biases)")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.95, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this; 0 = no clipping")
    bucket_by_length: bool = _f(True, "batch sequences of similar length together (less padding)")
    bucket_window: int = _f(32, "with bucketing: micro-batches per window sorted by length")
    seed: int = _f(0, "seeds data order, dropout and every RNG of the run")
    eval_every: int = _f(0, "evaluate on the held-out examples every N steps; 0 = only at the end")
    log_every: int = _f(10, "log loss, lr and tokens/s every N steps")
    save_every: int = _f(0, "checkpoint every N steps (and at the end); 0 = no checkpoints")
    keep_checkpoints: int = _f(2, "how many of the latest checkpoints to keep")
    resume: bool = _f(True, "continue from the latest complete checkpoint of the same config and data")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = _f(
        "auto", "auto (bf16 on a CUDA GPU that has it, else none) | no | bf16 | fp16")
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "auto (CUDA when present) | cpu | cuda")
    num_threads: int = _f(0, "CPU threads for torch during training; 0 = as set (torch's default: the "
                             "physical cores). On a CPU shared with other busy processes, 1 can be many times faster")
    dvclive: bool = _f(True, "log metrics with DVCLive")
    log_dir: str = _f("", "DVCLive directory; '' = <out_dir>/dvclive")
    progress: bool = _f(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        check_choices(self, "train")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.max_steps < 0:
            raise ValueError("train.warmup_steps and train.max_steps must be >= 0")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError("set train.max_steps > 0 or train.epochs > 0: nothing says how long to train")
        for name in ("batch_size", "grad_accum", "max_seq_len", "bucket_window", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every < 0 or self.save_every < 0 or self.num_threads < 0:
            raise ValueError("train.eval_every, train.save_every and train.num_threads must be >= 0 (0 = off/default)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train.weight_decay and train.grad_clip must be >= 0")

    def fingerprint(self) -> str:
        """Hash of the fields that decide the sequence of updates."""
        data = {k: v for k, v in asdict(self).items() if k in TRAJECTORY_FIELDS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def trajectory(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k in TRAJECTORY_FIELDS}


TRAJECTORY_FIELDS = frozenset({
    "lr", "min_lr_ratio", "warmup_steps", "max_steps", "epochs", "batch_size", "grad_accum",
    "max_seq_len", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "grad_clip",
    "bucket_by_length", "bucket_window", "seed", "mixed_precision",
})


@dataclass
class OnPolicyConfig:
    """What the on-policy trainers (internalize, rl, selskill, distill) share: the tasks a
    policy learns on and is tested on, and how it samples them. Each trainer's config
    extends it (and restates a field whose default or meaning is its own); `section` names
    the params.yaml section in error messages."""

    section: ClassVar[str] = "on_policy"

    learn_split: str = _f("heldout_train", "tasks the policy samples and learns from")
    test_split: str = _f("heldout_test", "tasks it is evaluated on, greedy")
    tasks_per_family: int = _f(5, "learning tasks per family per iteration (a different slice each time)")
    k: int = _f(4, "episodes sampled per learning task (one group)")
    temperature: float = _f(1.0, "sampling temperature of the rollouts")
    max_new_tokens: int = _f(96, "cap on one action's tokens in every rollout and evaluation")
    batch_size: int = _f(128, "episodes decoded together")
    seed: int = _f(0, "seeds rollouts, data order and training")

    def __post_init__(self) -> None:
        check_choices(self, self.section)
        if self.k < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"{self.section}.k, max_new_tokens and batch_size must be at least 1")
        if self.temperature <= 0:
            raise ValueError(f"{self.section}.temperature must be > 0 (the rollouts sample)")
        for name in ("learn_split", "test_split"):
            if getattr(self, name) not in SPLITS:
                raise ValueError(f"{self.section}.{name}: {getattr(self, name)!r} is not a task split; "
                                 f"choose from {list(SPLITS)}")
