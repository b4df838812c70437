"""The table track's models: the SFT warm-up on oracle chains, the learned process critic,
and RL from the same start under GRPO, DAPO and PGPO (our reading), through the project's
training loop.

- **Policy.** The vision track's small LLaVA (`vision.vlm`), its patches aligned to the table's
  cells; the prompt is the image's patch tokens and the question, the target the gold chain.
  The warm-up adds, like the first part of the vision track, the same chains over the table
  *written as words* in place of the image tokens (the look-up on clean tokens) and the
  patch-to-cell-word alignment loss (`vision.train.vlm_objective`).
- **Learned critic.** The same architecture, trained to say ``ok`` or ``bad`` after a chain
  prefix (image, question, the steps up to t): labels from the rule critic on gold chains
  and perturbed ones (`envs.table.chains.perturb_chain`). Its agreement with the rule critic
  is measured on held-out test items. PGPO runs with either critic (`TableRLConfig.critic`).
- **RL.** Each iteration samples ``k`` chains for ``tasks_per_iteration`` training items,
  scores them (rule critic: outcome, step validity, coverage), builds each variant's rewards
  and batch (`VARIANTS`), and trains ``epochs`` passes of PPO-clip mini-batches against the
  sampling log-probs: GRPO (outcome reward, symmetric clip, sequence-mean), DAPO (decoupled
  clip, token mean, mixed-outcome groups refilled up to ``max_gen_batches``, overlong rows
  dropped, soft length penalty), PGPO (the outcome gated by the critic's step scores, decoupled
  clip, mixed groups refilled and the batch balanced over program lengths). The ablations
  drop PGPO's gate or its decoupled clip.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from distillery.config import _f
from distillery.envs.table.chains import (
    PERTURBATIONS,
    ChainVerdict,
    number_words,
    perturb_chain,
    split_steps,
    verify_chain,
    vocabulary_words,
)
from distillery.train.advantages import (
    dense_group_index,
    group_relative_advantages,
    length_balanced_groups,
    mixed_groups,
    process_gated_rewards,
    soft_overlong_penalty,
)
from distillery.train.config import TrainConfig
from distillery.train.data import Batch, Example, example_from_mask
from distillery.train.loop import train
from distillery.train.losses import IGNORE_INDEX, dapo_loss, grpo_loss, pgpo_loss
from distillery.vision.config import VLMConfig
from distillery.vision.tables import TableItem, cell_words
from distillery.vision.train import NO_IMAGE
from distillery.vision.vlm import (
    answer_loss,
    build_tokenizer,
    build_vlm,
    encode_words,
    n_image_tokens,
    normalize,
    pixel_crc,
    target_logits,
)

OK, BAD = "ok", "bad"


def model_input(pixels: torch.Tensor) -> torch.Tensor:
    """The vision tower's input from a uint8 [N, 3, H, W] bank (kept as bytes: a float bank of
    ten thousand 80x80 images would take a gigabyte per process) or [0, 1] floats."""
    return normalize(pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels)


def unit_pixels(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels
VARIANTS: dict[str, dict[str, Any]] = {
    "grpo": {"loss": "grpo", "reward": "outcome", "dynamic": False, "overlong": False, "balance": False},
    "dapo": {"loss": "dapo", "reward": "outcome", "dynamic": True, "overlong": True, "balance": False},
    "pgpo": {"loss": "pgpo", "reward": "gated", "dynamic": True, "overlong": False, "balance": True},
    "pgpo_no_gate": {"loss": "pgpo", "reward": "outcome", "dynamic": True, "overlong": False, "balance": True},
    "pgpo_no_decoupled": {"loss": "pgpo", "reward": "gated", "dynamic": True, "overlong": False, "balance": True,
                          "symmetric": True},
}


def table_tokenizer(max_rows: int = 9, max_cols: int = 9) -> Any:
    return build_tokenizer([*vocabulary_words(max_rows, max_cols), *number_words(), OK, BAD])


@dataclass
class TableTrainConfig:
    """`params.yaml:table_train`: the SFT warm-up (the policy every RL run starts from) and
    the learned critic."""

    vlm: VLMConfig = _f(VLMConfig, "the policy's and the critic's architecture")
    train: TrainConfig = _f(TrainConfig, "the warm-up's training loop")
    critic_train: TrainConfig = _f(TrainConfig, "the learned critic's training loop")
    align_weight: float = _f(1.0, "weight of the patch-to-cell-word alignment loss")
    text_tables: bool = _f(False, "also the chains over the table written as words (text only; no place "
                                   "information there)")
    critic_items: int = _f(1500, "training items whose gold and perturbed chains teach the critic")
    critic_eval_items: int = _f(150, "held-out test items on which agreement with the rule critic is measured")
    seed: int = _f(0, "seed of both models")
    workers: int = _f(2, "processes (the policy and the critic train side by side)")


@dataclass
class TableRLConfig:
    """`params.yaml:table_rl`: the grid of objectives x seeds from the same warm-up."""

    variants: list[str] = _f(list(VARIANTS), "objectives to run (see vision/table_rl.py VARIANTS)")
    seeds: list[int] = _f([0, 1, 2], "RL seeds (rollouts and data order); runs pair by seed")
    iterations: int = _f(12, "rollout -> reward -> update cycles per run")
    tasks_per_iteration: int = _f(8, "groups in each update batch")
    k: int = _f(8, "chains sampled per item (a group)")
    temperature: float = _f(1.0, "sampling temperature")
    max_new_tokens: int = _f(64, "cap on a chain's tokens (DAPO's L_max)")
    overlong_cache: int = _f(16, "DAPO's soft-penalty buffer (tokens before L_max)")
    clip_low: float = _f(0.2, "lower clip (every objective)")
    clip_high: float = _f(0.28, "upper clip of the decoupled objectives (GRPO uses clip_low both sides)")
    prefix_credit: float = _f(0.1, "PGPO: reward share for a sound chain start when the answer is wrong")
    gate: Literal["min", "product"] = _f("min", "PGPO: how the step scores combine into the gate")
    critic: Literal["rule", "learned"] = _f("rule", "PGPO's critic: the rule verifier or the learned critic")
    max_gen_batches: int = _f(2, "dynamic sampling: rollout batches drawn at most per update (refill)")
    epochs: int = _f(2, "passes over each update batch")
    minibatches: int = _f(2, "PPO mini-batches per pass")
    train: TrainConfig = _f(TrainConfig, "optimizer settings of the updates (lr, clipping)")
    eval_items: int = _f(100, "items of each test split evaluated (greedy)")
    batch_size: int = _f(128, "sequences per generation batch")
    workers: int = _f(2, "runs side by side (one thread each)")
    n_examples: int = _f(3, "example items with chains and verdicts in the report")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown or not self.variants:
            raise ValueError(f"table_rl.variants: unknown {unknown}; choose from {list(VARIANTS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("table_rl.seeds must be distinct and non-empty")
        if self.k < 2:
            raise ValueError("table_rl.k must be at least 2 (a group compares its chains)")
        if not 0 < self.overlong_cache <= self.max_new_tokens:
            raise ValueError("table_rl.overlong_cache must lie in (0, max_new_tokens]")
        if self.temperature <= 0:
            raise ValueError(f"table_rl.temperature must be > 0 (the rollouts sample), got {self.temperature}")
        if not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ValueError(f"table_rl.clip_low must be in [0, 1) and table_rl.clip_high >= 0 (the ratio is "
                             f"clipped to [1 - clip_low, 1 + clip_high]), got {self.clip_low} and {self.clip_high}")
        for name in ("iterations", "tasks_per_iteration", "max_gen_batches", "epochs", "minibatches", "eval_items",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"table_rl.{name} must be at least 1, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------


def chain_example(tok: Any, n_image: int, item: TableItem, chain: str, image: int, crc: int,
                  table_words: list[int] | None = None) -> Example:
    prefix = table_words if table_words is not None else [tok.convert_tokens_to_ids("<image>")] * n_image
    prompt = prefix + encode_words(tok, item.item.question)
    target = [*encode_words(tok, chain), tok.eos_token_id]
    return example_from_mask([*prompt, *target], [False] * len(prompt) + [True] * len(target),
                             {"image": float(image) if table_words is None else NO_IMAGE,
                              "image_crc": float(crc) if table_words is None else 0.0})


def place_targets(tok: Any, items: Sequence[TableItem], grid: int) -> torch.Tensor:
    """[N, P, 3] token ids each patch must name: its word, then its row label and column
    letter (a value cell) or its word repeated (a header or empty cell)."""
    out = torch.empty((len(items), grid * grid, 3), dtype=torch.long)
    for n, it in enumerate(items):
        words = cell_words(it.table, grid)
        for p, w in enumerate(words):
            r, c = divmod(p, grid)
            if 1 <= r <= it.table.n_rows and 1 <= c <= it.table.n_cols:
                trio = (w, words[r * grid], words[c])
            else:
                trio = (w, w, w)
            out[n, p] = torch.tensor([tok.convert_tokens_to_ids(x) for x in trio])
    return out


def place_alignment_loss(model: Any, pixels: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Each projected patch feature, read through the LM's tied embeddings, must name its
    content *and its place*: cross-entropy against the uniform distribution over its
    [word, row label, column letter] (`place_targets`), so a look-up can find a cell by
    content rather than by its position in the sequence (ours). Measured here, 800 steps,
    one seed: content only, 2,000 tables: train accuracy 0.28, test 0.08; with the place,
    2,000 tables: train 0.54, test 0.08 (memorised); 12,000 tables: train 0.18, test 0.12."""
    feats = model.model.get_image_features(pixel_values=pixels).pooler_output
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    logp = torch.log_softmax((feats @ model.get_input_embeddings().weight.T).float(), -1)
    picked = logp.gather(-1, targets)
    loss = -picked.mean()
    with torch.no_grad():
        acc = float((logp.argmax(-1) == targets[..., 0]).float().mean())
    return loss, acc


def table_objective(bank: torch.Tensor, places: torch.Tensor, align_weight: float) -> Any:
    """The warm-up's and the critic's objective for `train.loop.train`: next-token loss on the
    targets (the LM head at target positions only), the image of each sequence looked up in
    `bank` by its ``image`` extra (-1: a text-only sequence), plus ``align_weight`` x
    `place_alignment_loss` on the batch's images."""
    def loss_fn(model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        base = model.module if hasattr(model, "module") else model
        idx = batch.extras["image"].long().cpu()
        has = idx >= 0
        pixels = model_input(bank[idx[has]]).to(batch.input_ids.device) if bool(has.any()) else None
        loss, acc = answer_loss(base, batch, pixels)
        stats = {"token_acc": acc}
        if align_weight and pixels is not None:
            al, acc = place_alignment_loss(base, pixels, places[idx[has]].to(batch.input_ids.device))
            loss = loss + align_weight * al
            stats["align_loss"], stats["align_acc"] = float(al.detach()), acc
        return loss, stats

    return loss_fn


def sft_examples(tok: Any, n_image: int, items: Sequence[TableItem], bank: torch.Tensor, grid: int,
                 text_tables: bool) -> list[Example]:
    out = []
    for i, it in enumerate(items):
        crc = pixel_crc(unit_pixels(bank[i]))
        out.append(chain_example(tok, n_image, it, it.item.chain, i, crc))
        if text_tables:
            words = [tok.convert_tokens_to_ids(w) for w in cell_words(it.table, grid)]
            out.append(chain_example(tok, n_image, it, it.item.chain, i, crc, table_words=words))
    return out


def critic_prefixes(item: TableItem, chain: str) -> list[tuple[str, str]]:
    """(prefix up to and including step t, ok|bad) for every step of `chain`, labelled by the
    rule critic: the step is valid, and an answer step also needs every gold cell read."""
    v = verify_chain(item.table, item.item, chain)
    steps = split_steps(chain)
    out = []
    for t, s in enumerate(v.steps):
        good = s.valid and (s.op != "answer" or v.coverage >= 1.0)
        out.append((" ; ".join(steps[: t + 1]), OK if good else BAD))
    return out


def critic_chains(item: TableItem, rng: random.Random) -> list[str]:
    chains = [item.item.chain]
    for how in PERTURBATIONS:
        p = perturb_chain(item.table, item.item, rng, how)
        if p is not None:
            chains.append(p)
    return chains


def critic_examples(tok: Any, n_image: int, items: Sequence[TableItem], bank: torch.Tensor, seed: int,
                    chains: Sequence[Sequence[str]] | None = None) -> list[Example]:
    """Prefix -> ok/bad sequences; `chains[i]` the chains of item i (gold + perturbed by default)."""
    rng = random.Random(seed)
    out = []
    for i, it in enumerate(items):
        crc = pixel_crc(unit_pixels(bank[i]))
        for chain in (chains[i] if chains is not None else critic_chains(it, rng)):
            for prefix, label in critic_prefixes(it, chain):
                prompt = [tok.convert_tokens_to_ids("<image>")] * n_image + encode_words(
                    tok, f"{it.item.question} {prefix}")
                target = [tok.convert_tokens_to_ids(label)]
                out.append(example_from_mask([*prompt, *target], [False] * len(prompt) + [True],
                                             {"image": float(i), "image_crc": float(crc)}))
    return out


# ---------------------------------------------------------------------------------------
# Sampling and scoring with the VLM
# ---------------------------------------------------------------------------------------


def image_prompt(tok: Any, n_image: int, item: TableItem) -> list[int]:
    return [tok.convert_tokens_to_ids("<image>")] * n_image + encode_words(tok, item.item.question)


@torch.no_grad()
def generate_chains(model: Any, tok: Any, items: Sequence[TableItem], pixels: torch.Tensor, *, k: int,
                    temperature: float, max_new_tokens: int, seed: int, batch_size: int = 128,
                    ) -> list[tuple[list[int], str, bool]]:
    """k chains per item (greedy when temperature <= 0): (token ids incl. <eos> if any, text,
    truncated) for item 0's k chains, then item 1's, ... `pixels[i]` is item i's image."""
    model.eval()
    n_image = n_image_tokens(model)
    rows = [(i, s) for i in range(len(items)) for s in range(k)]
    out: list[tuple[list[int], str, bool]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b in range(0, len(rows), batch_size):
            chunk = rows[b: b + batch_size]
            prompts = [image_prompt(tok, n_image, items[i]) for i, _ in chunk]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, p in enumerate(prompts):
                ids[j, width - len(p):] = torch.tensor(p)
                mask[j, width - len(p):] = 1
            px = model_input(pixels[[i for i, _ in chunk]])
            kw: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} \
                if temperature > 0 else {"do_sample": False}
            gen = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw)
            for row in gen[:, width:].tolist():
                toks: list[int] = []
                ended = False
                for t in row:
                    toks.append(t)
                    if t == tok.eos_token_id:
                        ended = True
                        break
                text_ids = toks[:-1] if ended else toks
                text = " ".join(tok.convert_ids_to_tokens(text_ids))
                out.append((toks, text, not ended))
    return out


def _vlm_target_logits(model: Any, batch: Batch, pixel_bank: torch.Tensor) -> tuple[torch.Tensor, Any, Any, Any]:
    base = model.module if hasattr(model, "module") else model
    idx = batch.extras["image"].long().cpu()
    pixels = model_input(pixel_bank[idx]).to(batch.input_ids.device)
    return target_logits(base, batch, pixels)


@torch.no_grad()
def score_logprobs(model: Any, examples: Sequence[Example], pixel_bank: torch.Tensor, *, temperature: float,
                   pad_id: int, batch_size: int = 64) -> list[list[float]]:
    """Per-token log-probs of each example's targets under softmax(logits / T), aligned with
    input_ids (0 off the targets): the sampler's log-probs the PPO ratio is taken against."""
    from distillery.train.data import collate

    model.eval()
    out: list[list[float]] = [[0.0] * len(e) for e in examples]
    for s in range(0, len(examples), batch_size):
        chunk = list(range(s, min(s + batch_size, len(examples))))
        batch = collate([examples[i] for i in chunk], pad_id)
        logits, tgt, rows, cols = _vlm_target_logits(model, batch, pixel_bank)
        lp = torch.log_softmax(logits.float() / temperature, -1).gather(-1, tgt[:, None])[:, 0]
        for r, c, v in zip(rows.tolist(), cols.tolist(), lp.tolist(), strict=True):
            out[chunk[r]][c + 1] = v
    return out


@torch.no_grad()
def learned_step_scores(critic: Any, tok: Any, items: Sequence[TableItem], pixels: torch.Tensor,
                        chains: Sequence[str], batch_size: int = 256) -> list[list[float]]:
    """p(ok) of the learned critic after every step prefix of each chain (item i, chain i)."""
    critic.eval()
    n_image = n_image_tokens(critic)
    ok_id, bad_id = tok.convert_tokens_to_ids(OK), tok.convert_tokens_to_ids(BAD)
    jobs = []
    for i, (it, chain) in enumerate(zip(items, chains, strict=True)):
        steps = split_steps(chain)[:24]
        for t in range(len(steps)):
            jobs.append((i, image_prompt(tok, n_image, it) + encode_words(tok, " ".join([" ; ".join(steps[: t + 1])]))))
    scores: list[list[float]] = [[] for _ in chains]
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b: b + batch_size]
        width = max(len(p) for _, p in chunk)
        ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, (_, p) in enumerate(chunk):
            ids[j, width - len(p):] = torch.tensor(p)
            mask[j, width - len(p):] = 1
        logits = critic(input_ids=ids, attention_mask=mask, pixel_values=model_input(pixels[[i for i, _ in chunk]]),
                        use_cache=False).logits[:, -1]
        p_ok = torch.softmax(logits[:, [ok_id, bad_id]].float(), -1)[:, 0]
        for (i, _), p in zip(chunk, p_ok.tolist(), strict=True):
            scores[i].append(p)
    return scores


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------


def chain_numbers(verdicts: Sequence[ChainVerdict], lengths: Sequence[int]) -> dict[str, float]:
    n = max(1, len(verdicts))
    looks = sum(v.n_looks for v in verdicts)
    return {"accuracy": sum(v.correct for v in verdicts) / n,
            "valid_chain_rate": sum(v.valid for v in verdicts) / n,
            "right_answer_wrong_process": sum(v.right_answer_wrong_process for v in verdicts) / n,
            "hallucination_rate": sum(v.n_misread for v in verdicts) / looks if looks else 0.0,
            "response_tokens": float(np.mean(lengths)) if lengths else 0.0}


def evaluate_policy(model: Any, tok: Any, splits: dict[str, tuple[list[TableItem], torch.Tensor]], *,
                    max_new_tokens: int, batch_size: int = 128) -> dict[str, Any]:
    """Greedy chains on every split: accuracy, valid-chain rate, right-answer-wrong-process,
    misread (hallucinated) look-ups, response length; shortcut-prone items apart on test."""
    out: dict[str, Any] = {}
    for name, (items, pixels) in splits.items():
        gens = generate_chains(model, tok, items, pixels, k=1, temperature=0.0, max_new_tokens=max_new_tokens,
                               seed=0, batch_size=batch_size)
        verdicts = [verify_chain(it.table, it.item, text) for it, (_, text, _) in zip(items, gens, strict=True)]
        out[name] = {**chain_numbers(verdicts, [len(g[0]) for g in gens]), "n_items": len(items)}
        sc = [v for it, v in zip(items, verdicts, strict=True) if it.item.shortcut]
        if sc:
            out[name]["shortcut_items"] = chain_numbers(sc, [1])
            out[name]["shortcut_items"].pop("response_tokens")
        out[name]["chains"] = [text for _, text, _ in gens[:8]]
    return out


# ---------------------------------------------------------------------------------------
# RL
# ---------------------------------------------------------------------------------------


def rl_loss_fn(kind: str, pixel_bank: torch.Tensor, temperature: float, clip_low: float,
               clip_high: float) -> Callable[[Any, Batch], tuple[torch.Tensor, dict[str, float]]]:
    """The objective for `train.loop.train`: `grpo_loss`, `dapo_loss` or `pgpo_loss` on the
    batch's per-token ``old_logp`` and ``adv`` extras (the sampler's log-probs, the advantage)."""

    def loss_fn(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits, tgt, rows, cols = _vlm_target_logits(model, batch, pixel_bank)
        lp = torch.log_softmax(logits.float() / temperature, -1).gather(-1, tgt[:, None])[:, 0]
        shape = (batch.input_ids.shape[0], batch.input_ids.shape[1] - 1)
        dense = lp.new_zeros(shape)
        dense[rows, cols] = lp
        old = batch.extras["old_logp"][:, 1:].to(dense.dtype)
        adv = batch.extras["adv"][:, 1:].to(dense.dtype)
        mask = batch.labels[:, 1:] != IGNORE_INDEX
        if kind == "grpo":
            loss = grpo_loss(dense, old, adv, mask, clip=clip_low)
        elif kind == "dapo":
            loss = dapo_loss(dense, old, adv, mask, clip_low=clip_low, clip_high=clip_high)
        else:
            loss = pgpo_loss(dense, old, adv, mask, clip_low=clip_low, clip_high=clip_high)
        with torch.no_grad():
            ratio = torch.exp((dense - old).clamp(-20, 20))[mask]
        return loss, {"ratio_max": float(ratio.max()) if ratio.numel() else 1.0}

    return loss_fn


@dataclass
class Rollout:
    item: int                   # index into the training items
    ids: list[int]
    text: str
    truncated: bool
    verdict: ChainVerdict


def _rollout_batch(model: Any, tok: Any, items: Sequence[TableItem], pixels: torch.Tensor, picks: Sequence[int],
                   cfg: TableRLConfig, seed: int) -> list[list[Rollout]]:
    gens = generate_chains(model, tok, [items[i] for i in picks], pixels[list(picks)], k=cfg.k,
                           temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=seed,
                           batch_size=cfg.batch_size)
    groups = []
    for g, i in enumerate(picks):
        rows = gens[g * cfg.k: (g + 1) * cfg.k]
        groups.append([Rollout(i, ids, text, trunc, verify_chain(items[i].table, items[i].item, text))
                       for ids, text, trunc in rows])
    return groups


def group_rewards(groups: Sequence[Sequence[Rollout]], variant: dict[str, Any], cfg: TableRLConfig,
                  step_scores: Callable[[Sequence[Rollout]], list[list[float]]]) -> list[torch.Tensor]:
    """Each group's rewards under the variant (float64 [k] each)."""
    out = []
    for grp in groups:
        outcome = torch.tensor([float(r.verdict.correct) for r in grp], dtype=torch.float64)
        if variant["reward"] == "gated":
            cov = torch.tensor([r.verdict.coverage for r in grp], dtype=torch.float64)
            rew = process_gated_rewards(outcome, step_scores(grp), coverage=cov if cfg.critic == "rule" else None,
                                        gate=cfg.gate, prefix_credit=cfg.prefix_credit)
        else:
            rew = outcome
        if variant["overlong"]:
            rew = rew + soft_overlong_penalty(torch.tensor([len(r.ids) for r in grp]), max_length=cfg.max_new_tokens,
                                              cache=cfg.overlong_cache)
        out.append(rew)
    return out


def run_rl(model: Any, tok: Any, variant_name: str, items: Sequence[TableItem], pixels: torch.Tensor,
           cfg: TableRLConfig, seed: int, run_dir: str | Path, critic: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    """One RL run from `model` (trained in place); returns it and the per-iteration log."""
    variant = VARIANTS[variant_name]
    clip_high = cfg.clip_low if (variant["loss"] == "grpo" or variant.get("symmetric")) else cfg.clip_high
    pixel_bank = pixels
    n_image = n_image_tokens(model)
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    cursor = 0

    def next_tasks(n: int) -> list[int]:
        nonlocal cursor
        picks = [order[(cursor + j) % len(order)] for j in range(n)]
        cursor += n
        return picks

    def step_scores(grp: Sequence[Rollout]) -> list[list[float]]:
        if cfg.critic == "learned" and critic is not None:
            return learned_step_scores(critic, tok, [items[r.item] for r in grp], pixels[[r.item for r in grp]],
                                       [r.text for r in grp])
        return [r.verdict.step_scores for r in grp]

    log: list[dict[str, Any]] = []
    for it in range(cfg.iterations):
        t0 = time.perf_counter()
        kept: list[tuple[list[Rollout], torch.Tensor]] = []
        sampled = 0
        rolled: list[Rollout] = []
        batches = cfg.max_gen_batches if variant["dynamic"] else 1
        for b in range(batches):
            groups = _rollout_batch(model, tok, items, pixels, next_tasks(cfg.tasks_per_iteration), cfg,
                                    seed * 100_003 + it * 101 + b)
            rewards = group_rewards(groups, variant, cfg, step_scores)
            sampled += len(groups)
            rolled += [r for g in groups for r in g]
            for grp, rew in zip(groups, rewards, strict=True):
                # DAPO keeps groups with mixed outcomes (0 < #correct < k), not mixed penalties;
                # under the gate, a group of right answers with different processes is mixed too
                signal = rew if variant["reward"] == "gated" else torch.tensor([float(r.verdict.correct) for r in grp])
                if not variant["dynamic"] or bool(mixed_groups(signal, torch.zeros(len(grp), dtype=torch.long)).any()):
                    kept.append((grp, rew))
            if len(kept) >= cfg.tasks_per_iteration:
                break
        if variant["balance"]:
            pick = length_balanced_groups([items[g[0].item].item.n_steps for g, _ in kept], cfg.tasks_per_iteration)
            kept = [kept[i] for i in pick]
        else:
            kept = kept[: cfg.tasks_per_iteration]
        all_roll = [r for g, _ in kept for r in g]
        examples: list[Example] = []
        if kept:
            values = torch.cat([rew for _, rew in kept])
            gi = dense_group_index([j for j, (g, _) in enumerate(kept) for _ in g])
            adv = group_relative_advantages(values, gi, mode="mean_std_norm")
            for r, a in zip(all_roll, adv.tolist(), strict=True):
                if variant["overlong"] and r.truncated:
                    continue        # DAPO's overlong filtering: a cut chain carries no gradient
                if a == 0.0:
                    continue
                prompt = image_prompt(tok, n_image, items[r.item])
                ids = prompt + r.ids
                labels = [IGNORE_INDEX] * len(prompt) + list(r.ids)
                examples.append(Example(ids, labels, {"image": float(r.item), "image_crc": 0.0,
                                                      "adv": [0.0] * len(prompt) + [a] * len(r.ids)}))
        trained = bool(examples)
        if trained:
            old = score_logprobs(model, examples, pixel_bank, temperature=cfg.temperature, pad_id=tok.pad_token_id)
            examples = [Example(e.input_ids, e.labels, {**e.extras, "old_logp": o}) for e, o in zip(examples, old,
                                                                                                 strict=True)]
            tcfg = dataclasses.replace(cfg.train, seed=seed * 1000 + it, epochs=float(cfg.epochs), max_steps=0,
                                       batch_size=max(1, math.ceil(len(examples) / cfg.minibatches)), dvclive=False,
                                       log_dir="", progress=False, save_every=0, resume=False, warmup_steps=0,
                                       bucket_by_length=False)
            model.train()
            train(model, examples, [], tcfg, Path(run_dir) / f"iter-{it}",
                  rl_loss_fn(variant["loss"], pixel_bank, cfg.temperature, cfg.clip_low, clip_high),
                  pad_id=tok.pad_token_id)
            model.eval()
        log.append({"iteration": it, "groups_sampled": sampled, "groups_kept": len(kept),
                    "kept_fraction": len(kept) / sampled if sampled else 0.0, "sequences": len(examples),
                    "rollout_accuracy": float(np.mean([r.verdict.correct for r in rolled])) if rolled else 0.0,
                    "rollout_valid": float(np.mean([r.verdict.valid for r in rolled])) if rolled else 0.0,
                    "response_tokens": float(np.mean([len(r.ids) for r in rolled])) if rolled else 0.0,
                    "trained": trained, "seconds": round(time.perf_counter() - t0, 2)})
    return model, log


# ---------------------------------------------------------------------------------------
# The stages' jobs (one process each, one thread each)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableJob:
    kind: str                       # sft | critic | rl
    items_file: str
    image_size: int
    grid: int
    out_dir: str
    train_cfg: TableTrainConfig | None = None
    rl_cfg: TableRLConfig | None = None
    variant: str = ""
    seed: int = 0
    sft_dir: str = ""
    critic_dir: str = ""
    params: dict[str, Any] | None = None


def load_split(items_file: str, split: str, image_size: int, limit: int | None = None
               ) -> tuple[list[TableItem], torch.Tensor]:
    import polars as pl

    from distillery.vision.tables import items_from_frame
    from distillery.vision.vlm import load_images

    frame = pl.read_parquet(items_file).filter(pl.col("split") == split).sort("item_id")
    if limit is not None:
        frame = frame.head(limit)
    items = items_from_frame(frame)
    bank = torch.empty((len(items), 3, image_size, image_size), dtype=torch.uint8)
    paths, names = frame["path"].to_list(), frame["item_id"].to_list()
    for s in range(0, len(items), 512):      # a float copy of 512 images at a time, at most
        bank[s: s + 512] = load_images(paths[s: s + 512], names[s: s + 512], size=image_size).mul(255).round().to(
            torch.uint8)
    return items, bank


def _save(model: Any, tok: Any, path: str | Path, card: dict[str, Any]) -> None:
    from distillery.lm.model import save_model_dir

    save_model_dir(path, model, tok, card)


def run_table_job(job: TableJob) -> dict[str, Any]:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tok = table_tokenizer()
    if job.kind in ("sft", "critic"):
        cfg = job.train_cfg
        assert cfg is not None
        items, bank = load_split(job.items_file, "train", job.image_size)
        model = build_vlm(cfg.vlm, tok, image_size=job.image_size, seed=cfg.seed + (job.kind == "critic"))
        n_image = n_image_tokens(model)
        if n_image != job.grid * job.grid:
            raise ValueError(f"table_train: the model takes {n_image} image tokens but the tables have "
                             f"{job.grid * job.grid} cells; set vlm.patch_size to image_size / grid")
        places = place_targets(tok, items, job.grid)
        if job.kind == "sft":
            examples = sft_examples(tok, n_image, items, bank, job.grid, cfg.text_tables)
            tcfg = cfg.train
        else:
            sub = items[: cfg.critic_items]
            examples = critic_examples(tok, n_image, sub, bank, cfg.seed)
            tcfg = cfg.critic_train
        tcfg = dataclasses.replace(tcfg, seed=cfg.seed, dvclive=False, log_dir="", progress=False)
        result = train(model, examples, [], tcfg, Path(job.out_dir) / "checkpoints",
                       loss_fn=table_objective(bank, places, cfg.align_weight), pad_id=tok.pad_token_id)
        metrics: dict[str, Any] = {"steps": result.steps, "train_loss": result.metrics.get("train_loss"),
                                   "n_examples": len(examples)}
        if job.kind == "critic":
            metrics["agreement"] = critic_agreement(model, tok, job, cfg)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        _save(model, tok, Path(job.out_dir) / "model", {"role": job.kind, "track": "tables", "metrics": metrics,
                                                        "params": job.params or {}})
        return {"kind": job.kind, **metrics}
    # one RL run from the warm-up
    from distillery.vision.vlm import load_vlm_dir

    cfg = job.rl_cfg
    assert cfg is not None
    items, pixels = load_split(job.items_file, "train", job.image_size)
    model = load_vlm_dir(job.sft_dir).model
    critic = load_vlm_dir(job.critic_dir).model if cfg.critic == "learned" and "pgpo" in job.variant else None
    t_rl = time.perf_counter()
    model, log = run_rl(model, tok, job.variant, items, pixels, cfg, job.seed, job.out_dir, critic)
    rl_seconds = time.perf_counter() - t_rl
    splits = {s: load_split(job.items_file, s, job.image_size, cfg.eval_items)
              for s in ("test", "test_large", "test_long")}
    ev = evaluate_policy(model, tok, splits, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    import shutil

    shutil.rmtree(job.out_dir, ignore_errors=True)
    return {"kind": "rl", "variant": job.variant, "seed": job.seed, "eval": ev, "log": log,
            "kept_fraction": float(np.mean([r["kept_fraction"] for r in log])) if log else 0.0,
            "seconds_per_step": rl_seconds / max(1, len(log)), "seconds": round(time.perf_counter() - t0, 1)}


def critic_agreement(critic: Any, tok: Any, job: TableJob, cfg: TableTrainConfig) -> dict[str, float]:
    """The learned critic against the rule critic on held-out test items' gold and perturbed
    chains: per step (ok/bad at 0.5) and per chain (all steps ok)."""
    items, pixels = load_split(job.items_file, "test", job.image_size, cfg.critic_eval_items)
    rng = random.Random(cfg.seed + 7)
    rows_items, rows_px, chains = [], [], []
    for i, it in enumerate(items):
        for ch in critic_chains(it, rng):
            rows_items.append(it)
            rows_px.append(i)
            chains.append(ch)
    return agreement(critic, tok, rows_items, pixels[rows_px], chains)


def agreement(critic: Any, tok: Any, items: Sequence[TableItem], pixels: torch.Tensor,
              chains: Sequence[str]) -> dict[str, float]:
    """The learned critic against the rule critic on `chains` (chain i about items[i], whose
    image is pixels[i]): per step (ok/bad at 0.5), per chain (all steps ok), and the share of
    the rule critic's invalid chains the learned one flags."""
    rows_items = list(items)
    scores = learned_step_scores(critic, tok, rows_items, pixels, chains)
    step_agree, chain_agree, n_steps, bad_caught, n_bad = 0, 0, 0, 0, 0
    for it, ch, sc in zip(rows_items, chains, scores, strict=True):
        rule = [lab == OK for _, lab in critic_prefixes(it, ch)]
        learned = [p >= 0.5 for p in sc]
        step_agree += sum(a == b for a, b in zip(rule, learned, strict=False))
        n_steps += len(rule)
        chain_agree += all(rule) == all(learned)
        n_bad += not all(rule)
        bad_caught += (not all(rule)) and not all(learned)
    return {"step_agreement": step_agree / max(1, n_steps), "chain_agreement": chain_agree / max(1, len(chains)),
            "invalid_chains_caught": bad_caught / max(1, n_bad), "n_chains": len(chains)}


def run_jobs(jobs: Sequence[TableJob], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        return [run_table_job(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(run_table_job, jobs))
