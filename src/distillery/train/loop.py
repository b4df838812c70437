"""The one training loop (Accelerate) that every objective uses.

    result = train(model, train_examples, eval_examples, cfg, out_dir, loss_fn=None)

- **Objective.** ``loss_fn(model, batch) -> (loss, stats)``: a scalar to minimise and a
  dict of floats to log. The default, `sft_loss_fn`, is supervised next-token loss on the
  action tokens (`train.losses.sft_loss`). Objectives get their logits through
  `action_logits`, which runs the LM head only on target positions: on the small models
  trained here the head is a large share of the compute and most positions are prompt.
- **Batches.** Length-bucketed micro-batches (`train.data.batch_order`), deterministic in
  (seed, epoch); ``grad_accum`` micro-batches per optimizer step, each weighted
  1/grad_accum; AdamW with weight decay on matrices only; cosine decay to
  ``lr * min_lr_ratio`` after a linear warm-up; global gradient-norm clipping.
- **Groups.** With ``groups`` (`train.data.ExampleGroups`), an objective over groups of
  examples (preference pairs) trains here too: the data order is the caller's, over
  groups, ``batch_size`` counts groups, and ``loss_fn`` gets a `train.data.GroupBatch`.
- **Evaluation.** The held-out loss (weighted by target tokens) every ``eval_every`` steps
  and at the end.
- **Checkpoints and exact resume.** Every ``save_every`` steps and at the end,
  ``<out_dir>/checkpoints/step-N`` holds the trainable weights, the optimizer and
  scheduler state, every RNG state (torch, CUDA, python, numpy) and the position in the
  data stream, written into a temporary directory and renamed into place (a kill never
  leaves a half checkpoint that looks complete). A rerun with the same config, data and
  code (`train.card.source_fingerprint`) resumes from the latest one and ends with weights
  bitwise identical to an uninterrupted run on the CPU; a run whose config, data or code
  changed starts afresh (and says so). For a
  DVC stage, keep ``out_dir`` out of the stage's outs or declare it ``persist: true``:
  DVC deletes outs before rerunning a stage.
- **Logging.** DVCLive (``train/loss``, ``train/lr``, ``train/tokens_per_s``,
  ``train/grad_norm``, the objective's stats, ``eval/loss``) with ``dvcyaml=None`` and
  ``save_dvc_exp=False``, so it never edits ``dvc.yaml``; a tqdm bar.
- **Devices.** CUDA when present, with bf16 autocast where the GPU has it; the CPU
  otherwise. Several GPUs through ``accelerate launch`` (DDP): each process takes every
  world-th micro-batch.

The model is trained in place; save it with `lm.model.save_model_dir` afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillery.lm.target_forward import decoder_at_targets
from distillery.lm.target_forward import supports as last_layer_at_targets_supported
from distillery.train.card import source_fingerprint
from distillery.train.config import TrainConfig
from distillery.train.data import (
    Batch,
    Example,
    ExampleGroups,
    GroupBatch,
    batch_order,
    collate,
    collate_groups,
    fingerprint,
)
from distillery.train.losses import IGNORE_INDEX, sft_loss

log = logging.getLogger("distillery.train")

# A GroupBatch when the run trains on ExampleGroups.
LossFn = Callable[[Any, Batch | GroupBatch], tuple[torch.Tensor, dict[str, float]]]

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "trainable.safetensors"


# ---------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------


@dataclass
class ActionLogits:
    """Logits at the target positions only. Position (row, col) of the *shifted* frame
    ([B, T-1]: hidden state at t predicts token t+1) for each of the N targets."""

    logits: torch.Tensor    # [N, V]
    targets: torch.Tensor   # [N] the token each position must predict
    rows: torch.Tensor      # [N]
    cols: torch.Tensor      # [N]
    shape: tuple[int, int]  # (B, T-1)

    def to_dense(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Scatter per-target `values` [N] into the shifted frame [B, T-1] (e.g. token
        log-probs for the [B, T] conventions of `train.losses`)."""
        out = values.new_full(self.shape, fill)
        out[self.rows, self.cols] = values
        return out


# `train(..., last_layer_at_targets=True)` sets this for the run: objectives reach the
# decoder through `action_logits` without being handed the run's settings.
_LAST_LAYER_AT_TARGETS: contextvars.ContextVar[bool] = contextvars.ContextVar("last_layer_at_targets",
                                                                              default=False)


def _head_only_on_targets_is_exact(model: Any) -> bool:
    """Whether logits = output_embeddings(hidden) exactly (no softcapping or scaling that a
    model's own forward applies), so the head can run on selected positions only."""
    cfg = model.config
    return (isinstance(model.get_output_embeddings(), torch.nn.Linear)
            and not getattr(cfg, "final_logit_softcapping", None)
            and getattr(cfg, "logit_scale", None) in (None, 1.0)
            and getattr(cfg, "logits_scaling", None) in (None, 1.0))


def action_logits(model: Any, batch: Batch) -> ActionLogits:
    """The model's logits at every target position of `batch`, and the targets.

    Runs the decoder once and the LM head only where a target is predicted; inside a `train`
    run with ``last_layer_at_targets``, the decoder's last layer too (`lm.target_forward`).
    Falls back to a full forward (logits everywhere, then selected) where that shortcut would
    be wrong or impossible: a model wrapped for DDP (its forward must be called for gradient
    sync) or one whose forward post-processes logits.
    """
    targets = batch.labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # A Batch is right-padded, so under the causal mask no real token can see a pad: the
    # padding mask changes only the pad positions' outputs, which nothing reads. Without it
    # attention takes its plain causal kernel and the model builds no 4-D mask per step.
    if not hasattr(model, "module") and _head_only_on_targets_is_exact(base):
        if _LAST_LAYER_AT_TARGETS.get() and last_layer_at_targets_supported(base):
            hidden = decoder_at_targets(base, batch.input_ids, rows, cols)
        else:
            hidden = base.get_decoder()(input_ids=batch.input_ids, attention_mask=None,
                                        use_cache=False).last_hidden_state[:, :-1][rows, cols]
        logits = base.get_output_embeddings()(hidden)
    else:
        out = model(input_ids=batch.input_ids, attention_mask=None, use_cache=False)
        logits = out.logits[:, :-1][rows, cols]
    return ActionLogits(logits, targets[rows, cols], rows, cols, tuple(targets.shape))


def sft_loss_fn(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised fine-tuning on the action tokens: mean -log p(target), and token accuracy."""
    al = action_logits(model, batch)
    loss = sft_loss(al.logits[None], al.targets[None])
    with torch.no_grad():
        acc = (al.logits.argmax(-1) == al.targets).float().mean() if len(al.targets) else al.logits.new_zeros(())
    return loss, {"token_acc": float(acc)}


# ---------------------------------------------------------------------------------------
# Results and state
# ---------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    metrics: dict[str, float]           # final: train_loss, eval_loss, tokens_per_s, steps, ...
    steps: int                          # optimizer steps the model has had in all
    tokens_per_s: float                 # tokens trained on / seconds in training steps, whole run
    history: list[dict[str, float]] = field(default_factory=list)  # one row per log/eval step
    resumed_from: int | None = None     # the checkpoint step this run started from


@dataclass
class _State:
    step: int = 0                       # optimizer steps done
    micro: int = 0                      # global micro-batches consumed (the data position)
    tokens: int = 0                     # real tokens trained on (this process)
    train_time: float = 0.0             # seconds spent in training steps (eval, checkpoints excluded)
    history: list[dict[str, float]] = field(default_factory=list)


def lr_lambda(cfg: TrainConfig, max_steps: int) -> Callable[[int], float]:
    """Multiplier of cfg.lr at a step: linear warm-up, then cosine to min_lr_ratio."""
    warm = cfg.warmup_steps

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        span = max(1, max_steps - warm)
        progress = min(1.0, (step - warm) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices (linear and embedding weights) but not norms or biases (nanoGPT, TRL).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cpu_runs_natively(precision: str) -> bool:
    """Whether this CPU has the instructions torch's oneDNN kernels need for `precision`
    ('bf16' or 'fp16') matmuls; True for 'no' and when torch cannot tell.

    Without them (an AVX2-only CPU) torch falls back to slow kernels: on 2 cores of such an
    AMD EPYC a bf16 matmul ran 20x (256^3) to 280x (2048^3) slower than the same one in fp32.
    """
    checks = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}
    if precision not in checks:
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, checks[precision])())
    except (AttributeError, RuntimeError):
        return True


def _mixed_precision(cfg: TrainConfig, use_cuda: bool) -> str:
    if cfg.mixed_precision != "auto":
        if not use_cuda and not cpu_runs_natively(cfg.mixed_precision):
            log.warning("train.mixed_precision is %r, but this CPU has no native %s matmuls: they run "
                        "many times slower than fp32 here; 'no' (fp32) is the fast setting on this machine",
                        cfg.mixed_precision, cfg.mixed_precision)
        return cfg.mixed_precision
    return "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"


def _accelerator(use_cuda: bool, mixed_precision: str) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Accelerate keeps one state per process and refuses an Accelerator in another precision
    # than the first one's; a later run in the same process (a grid, the train bench, tests)
    # may ask for another. Only that state is dropped: the process group stays.
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(cpu=not use_cuda, mixed_precision=mixed_precision)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under `out_dir`, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.name.startswith("step-") and p.name[5:].isdigit() and (p / STATE_FILE).is_file():
            found.append((int(p.name[5:]), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(out_dir)
    return dirs[-1] if dirs else None


def _rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, plain


def _set_rng_state(tensors: dict[str, Any], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["cuda"]))
    v, keys, gauss = plain["python"]
    random.setstate((v, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(out_dir: Path, acc: Any, model: Any, optimizer: Any, scheduler: Any,
                     state: _State, meta: dict[str, Any], keep: int) -> Path:
    from safetensors.torch import save_file

    root = out_dir / CHECKPOINTS
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}"
    if acc.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    acc.wait_for_everyone()
    tensors, plain = _rng_state()           # each process has its own RNG streams
    torch.save(tensors, tmp / f"rng-{acc.process_index}.pt")
    (tmp / f"rng-{acc.process_index}.json").write_text(json.dumps(plain))
    acc.wait_for_everyone()
    if acc.is_main_process:
        weights = {n: p.detach().contiguous().cpu() for n, p in _trainable(acc.unwrap_model(model)).items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        body = {"step": state.step, "micro": state.micro, "tokens": state.tokens, "train_time": state.train_time,
                "history": state.history, **meta}
        # Written last: its presence is what marks a checkpoint complete.
        (tmp / STATE_FILE).write_text(json.dumps(body, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def _load_checkpoint(path: Path, acc: Any, model: Any, optimizer: Any, scheduler: Any) -> _State:
    from safetensors.torch import load_file

    body = json.loads((path / STATE_FILE).read_text())
    params = _trainable(acc.unwrap_model(model))
    weights = load_file(path / WEIGHTS_FILE)
    if set(weights) != set(params):
        missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        raise ValueError(f"{path}: its weights do not match this model's trainable parameters "
                         f"(missing {missing[:5]}, unexpected {extra[:5]}); was the model or LoRA "
                         "config changed? Delete the checkpoints to start afresh")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    rank = acc.process_index
    _set_rng_state(torch.load(path / f"rng-{rank}.pt", weights_only=True),
                   json.loads((path / f"rng-{rank}.json").read_text()))
    return _State(body["step"], body["micro"], body["tokens"], body["train_time"], body.get("history", []))


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


class _Stream:
    """Global micro-batch k of the endless stream epoch 0, epoch 1, ... (cached per epoch):
    `order(epoch)` gives an epoch's `per_epoch` micro-batches of item indices."""

    def __init__(self, order: Callable[[int], list[list[int]]], per_epoch: int) -> None:
        self.order, self.per_epoch = order, per_epoch
        self._epoch, self._batches = -1, []

    def __getitem__(self, k: int) -> list[int]:
        epoch, i = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            self._batches = self.order(epoch)
            if len(self._batches) != self.per_epoch:
                raise ValueError(f"train: epoch {epoch}'s order has {len(self._batches)} micro-batches, not "
                                 f"{self.per_epoch} (ceil(items / batch_size))")
            self._epoch = epoch
        return self._batches[i]


def evaluate(model: Any, examples: Sequence[Example], loss_fn: LossFn, *, batch_size: int,
             pad_id: int, accelerator: Any) -> float:
    """Mean loss over `examples`, each batch weighted by its target tokens."""
    if not examples:
        return float("nan")
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    mine = batches[accelerator.process_index:: accelerator.num_processes]
    was_training = model.training
    model.eval()
    rng = torch.get_rng_state()     # evaluation must not move the training RNG streams
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for idx in mine:
            batch = collate([examples[i] for i in idx], pad_id).to(accelerator.device)
            with accelerator.autocast():
                loss, _ = loss_fn(model, batch)
            w = max(batch.n_labels, 1)
            total += torch.tensor([float(loss) * w, w], dtype=torch.float64, device=accelerator.device)
    torch.set_rng_state(rng)
    if was_training:
        model.train()
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def train(
    model: Any,
    train_examples: Sequence[Example],
    eval_examples: Sequence[Example],
    cfg: TrainConfig,
    out_dir: str | Path,
    loss_fn: LossFn | None = None,
    *,
    pad_id: int | None = None,
    groups: ExampleGroups | None = None,
    fused_adamw: bool = True,
    last_layer_at_targets: bool = False,
) -> TrainResult:
    """Train `model` in place on `train_examples`; see the module docstring.

    `out_dir` receives ``checkpoints/`` and (by default) ``dvclive/``. `pad_id` fills
    padding (it is never attended to nor a target); default: the model config's pad id, else 0.
    ``cfg.num_threads`` applies for the duration of the call only. `groups`: train on groups
    of the examples (no held-out evaluation then). `fused_adamw=False` runs torch's default
    AdamW implementation (per parameter on the CPU, foreach on CUDA) instead of the fused
    kernel: the same update, rounded differently (about 1e-7 relative per step), for a
    trainer whose recorded results were made with it. `last_layer_at_targets=True` runs the
    decoder's last layer only at the positions that predict a target (`lm.target_forward`,
    for Llama models with SDPA attention; others run whole): 1.13-1.40x faster training on
    the small models measured (docs/performance.md), the same forward values where measured,
    but gradients that round differently in their last bits, so off by default: the recorded
    runs were made with the whole forward.
    """
    if not train_examples:
        raise ValueError("train: no training examples")
    if groups is not None and eval_examples:
        raise ValueError("train: held-out evaluation is per example; a run on groups takes no eval_examples")
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    forward = _LAST_LAYER_AT_TARGETS.set(last_layer_at_targets)
    try:
        return _train(model, train_examples, eval_examples, cfg, Path(out_dir), loss_fn or sft_loss_fn, pad_id,
                      groups, fused_adamw)
    finally:
        _LAST_LAYER_AT_TARGETS.reset(forward)
        torch.set_num_threads(threads)


def _train(model: Any, train_examples: Sequence[Example], eval_examples: Sequence[Example], cfg: TrainConfig,
           out_dir: Path, loss_fn: LossFn, pad_id: int | None, groups: ExampleGroups | None,
           fused_adamw: bool) -> TrainResult:
    from tqdm.auto import tqdm

    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    acc = _accelerator(use_cuda, _mixed_precision(cfg, use_cuda))
    if pad_id is None:
        pad_id = getattr(model.config, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)

    n_truncated = sum(1 for e in train_examples if len(e) > cfg.max_seq_len)
    train_ex = [e.truncated(cfg.max_seq_len) for e in train_examples]
    eval_ex = [e.truncated(cfg.max_seq_len) for e in eval_examples]
    data = fingerprint(train_ex)
    if groups is None:
        lengths = [len(e) for e in train_ex]
        stream = _Stream(lambda epoch: batch_order(lengths, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                                   bucket=cfg.bucket_by_length, window=cfg.bucket_window),
                         math.ceil(len(train_ex) / cfg.batch_size))

        def micro_batch(idx: list[int]) -> Batch | GroupBatch:
            return collate([train_ex[i] for i in idx], pad_id)
    else:
        stream = _Stream(groups.order, math.ceil(len(groups.members) / cfg.batch_size))
        data = hashlib.sha256(json.dumps([data, [list(m) for m in groups.members]]).encode()).hexdigest()[:16]

        def micro_batch(idx: list[int]) -> Batch | GroupBatch:
            return collate_groups(train_ex, groups, idx, pad_id)
    per_step = cfg.grad_accum * acc.num_processes
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * stream.per_epoch / per_step))
    meta = {"config": cfg.fingerprint(), "data": data, "code": source_fingerprint(),
            "max_steps": max_steps, "world": acc.num_processes, "trajectory": cfg.trajectory(),
            "forward": "last layer at targets" if _LAST_LAYER_AT_TARGETS.get() else "whole"}

    model = model.to(acc.device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters")
    # The fused kernel (CPU and CUDA) is one pass per tensor instead of a dozen elementwise
    # ops: about 5x faster a step on the small models here, and just as deterministic.
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                  fused=all(p.is_floating_point() for p in params) if fused_adamw else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, max_steps))
    model, optimizer = acc.prepare(model, optimizer)

    state, resumed_from = _State(), None
    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if ckpt is not None:
        saved = json.loads((ckpt / STATE_FILE).read_text())
        stale = [k for k in ("config", "data", "code", "world", "forward") if saved.get(k) != meta[k]]
        if stale:
            log.warning("%s: written by a run with a different %s; starting afresh", ckpt, " and ".join(stale))
            ckpt = None
    if ckpt is not None:
        state = _load_checkpoint(ckpt, acc, model, optimizer, scheduler)
        resumed_from = state.step
        log.info("resuming from %s (step %d of %d)", ckpt, state.step, max_steps)
    else:
        if acc.is_main_process and (out_dir / CHECKPOINTS).exists():
            shutil.rmtree(out_dir / CHECKPOINTS)   # another run's checkpoints must not be resumed later
        _seed_all(cfg.seed)

    live = None
    if cfg.dvclive and acc.is_main_process:
        from dvclive import Live

        live = Live(dir=str(Path(cfg.log_dir) if cfg.log_dir else out_dir / "dvclive"),
                    resume=resumed_from is not None, dvcyaml=None, save_dvc_exp=False, report=None)

    def log_row(row: dict[str, float]) -> None:
        state.history.append(row)
        if live is not None:
            live.step = int(row["step"])
            for k, v in row.items():
                if k != "step":
                    live.log_metric(k, v)
            live.sync()

    bar = tqdm(total=max_steps, initial=state.step, desc="train", dynamic_ncols=True,
               disable=not (cfg.progress and acc.is_main_process))
    model.train()
    optimizer.zero_grad(set_to_none=True)   # gradients left on the model by earlier work are not this run's
    window_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
    window_stats: dict[str, float] = {}
    window_micro, window_tokens, window_time = 0, 0, 0.0
    grad_norm = float("nan")
    while state.step < max_steps:
        t0 = time.perf_counter()
        for k in range(cfg.grad_accum):
            batch = micro_batch(stream[state.micro + k * acc.num_processes + acc.process_index]).to(acc.device)
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            sync = contextlib.nullcontext() if k == cfg.grad_accum - 1 else acc.no_sync(model)
            with sync:
                with acc.autocast():
                    loss, stats = loss_fn(model, batch)
                acc.backward(loss / cfg.grad_accum)
            window_loss += loss.detach().double()
            for s, v in stats.items():
                window_stats[s] = window_stats.get(s, 0.0) + float(v)
            window_micro += 1
            window_tokens += batch.n_tokens
            state.tokens += batch.n_tokens
        state.micro += per_step
        if cfg.grad_clip:
            grad_norm = float(acc.clip_grad_norm_(params, cfg.grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        dt = time.perf_counter() - t0           # eval and checkpoints are not training time
        state.train_time += dt
        window_time += dt
        bar.update(1)

        last = state.step == max_steps
        if state.step % cfg.log_every == 0 or last:
            totals = acc.reduce(torch.stack([window_loss, torch.tensor(float(window_tokens), dtype=torch.float64,
                                                                       device=acc.device)]), reduction="sum")
            tokens = int(totals[1])
            row = {"step": state.step, "train/loss": float(totals[0]) / (window_micro * acc.num_processes),
                   "train/lr": scheduler.get_last_lr()[0], "train/tokens_per_s": tokens / max(window_time, 1e-9),
                   "train/grad_norm": grad_norm,
                   **{f"train/{s}": v / window_micro for s, v in window_stats.items()}}
            log_row(row)
            bar.set_postfix(loss=f"{row['train/loss']:.4f}", lr=f"{row['train/lr']:.2e}")
            window_loss.zero_()
            window_stats, window_micro, window_tokens, window_time = {}, 0, 0, 0.0
        if eval_ex and cfg.eval_every and state.step % cfg.eval_every == 0 and not last:
            log_row({"step": state.step, "eval/loss": evaluate(
                model, eval_ex, loss_fn, batch_size=cfg.batch_size, pad_id=pad_id, accelerator=acc)})
        if cfg.save_every and (state.step % cfg.save_every == 0 or last):
            _save_checkpoint(out_dir, acc, model, optimizer, scheduler, state, meta, cfg.keep_checkpoints)
    bar.close()

    tokens = int(acc.reduce(torch.tensor(float(state.tokens), dtype=torch.float64, device=acc.device),
                            reduction="sum"))
    tokens_per_s = tokens / state.train_time if state.train_time > 0 else 0.0
    metrics: dict[str, float] = {"steps": state.step, "max_steps": max_steps, "tokens": tokens,
                                 "train_time_s": state.train_time, "tokens_per_s": tokens_per_s,
                                 "n_train": len(train_ex), "n_eval": len(eval_ex), "n_truncated": n_truncated}
    train_rows = [r for r in state.history if "train/loss" in r]
    if train_rows:
        metrics["train_loss"] = train_rows[-1]["train/loss"]
        metrics["train_loss_first"] = train_rows[0]["train/loss"]
    if eval_ex:
        metrics["eval_loss"] = evaluate(model, eval_ex, loss_fn, batch_size=cfg.batch_size, pad_id=pad_id,
                                        accelerator=acc)
        log_row({"step": state.step, "eval/loss": metrics["eval_loss"]})
    if live is not None:
        live.summary.update({f"final/{k}": v for k, v in metrics.items()})
        live.end()
    model = acc.unwrap_model(model)
    model.eval()
    return TrainResult(metrics, state.step, tokens_per_s, state.history, resumed_from)
