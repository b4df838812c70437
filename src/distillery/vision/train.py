"""Training the vision track's models through the project's one training loop.

`train_vlm(scenes, bank, cfg, seed, out_dir)` trains the small LLaVA from scratch; the
weak checkpoint is the same run's weights at ``cfg.weak_step`` (where the prior still
dominates). `train_itm(...)` trains the tiny BLIP image-text matching model whose Grad-CAM
gives PND its views (`vision.saliency`).

**The VLM's data** (per training scene, `vlm_examples`):

- ``questions_per_image`` yes/no questions in POPE's template, half about shapes in the
  scene, half about absent shapes drawn uniformly (the answers are always what the image
  shows; the prior comes from which shapes the scenes put together);
- ``captions_per_image`` captions (every object in reading order, with its colour);
- the same questions over the scene *written as text* (its 4x4 grid of cell words in place
  of the image tokens): text-only data for the language model, as an LLM reads text before
  it ever sees an image. It teaches the lookup a question needs on clean tokens.

**Why the objective has an alignment term (ours).** LLaVA starts from a pretrained CLIP tower
and a pretrained LLM and only aligns them. From scratch, measured here: with captions and
questions alone, a 0.4M-parameter LLaVA did not learn to use the image at all in 1,500
steps (answers stuck at the shape-word prior; the projected patch features drifted to a
constant); with the image tokens replaced by the word embeddings of the cells' shapes, the
same language model learned the questions in ~400 steps. So the objective adds LLaVA
stage 1's purpose as an explicit loss: each projected patch feature must name its cell's
content (shape or ``empty``) through the language model's tied embedding matrix
(`cell_alignment_loss`), weighted ``align_weight``. Both terms are in `vlm_objective`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillery.train.config import TrainConfig
from distillery.train.data import Example, example_from_mask
from distillery.train.loop import TrainResult, checkpoint_dirs, train
from distillery.train.losses import IGNORE_INDEX
from distillery.vision.config import ITMConfig, VisionTrainConfig
from distillery.vision.scenes import Scene, caption, training_questions
from distillery.vision.vlm import (
    CAPTION_PROMPT,
    EMPTY,
    QUESTION,
    answer_example,
    answer_loss,
    build_vlm,
    encode_words,
    n_image_tokens,
    normalize,
    pixel_crc,
)

log = logging.getLogger("distillery.vision")

NO_IMAGE = -1.0


def cell_words(scene: Scene, grid: int = 4) -> list[str]:
    """The scene as grid*grid words in reading order: each cell's shape, or ``empty``."""
    words = [EMPTY] * (grid * grid)
    for o in scene.objects:
        words[o.row * grid + o.col] = o.shape
    return words


def cell_ids(tok: Any, scenes: Sequence[Scene], grid: int = 4) -> torch.Tensor:
    """[N, grid*grid] token ids of every scene's cell words (the alignment targets)."""
    return torch.tensor([[tok.convert_tokens_to_ids(w) for w in cell_words(s, grid)] for s in scenes])


def vlm_examples(scenes: Sequence[Scene], bank: torch.Tensor, tok: Any, n_image: int, cfg: VisionTrainConfig,
                 seed: int, grid: int = 4) -> list[Example]:
    """Training sequences for the VLM (see the module docstring); `scenes[i]`'s image is
    `bank[i]`. Deterministic in `seed`."""
    if n_image != grid * grid:
        raise ValueError(f"the text-only grids have {grid * grid} cells but the model takes {n_image} image "
                         "tokens; use vlm.select='default' with patches aligned to the cells")
    rng = np.random.default_rng([seed, 11])
    out: list[Example] = []
    for i, sc in enumerate(scenes):
        crc = pixel_crc(bank[i])
        words = [tok.convert_tokens_to_ids(w) for w in cell_words(sc, grid)]
        for shape, ans in training_questions(sc, cfg.questions_per_image, rng):
            instruction = QUESTION.format(shape=shape)
            out.append(answer_example(tok, n_image, instruction, ans, i, crc))
            if cfg.text_questions:
                prompt = words + encode_words(tok, instruction)
                target = [*encode_words(tok, ans), tok.eos_token_id]
                out.append(example_from_mask([*prompt, *target], [False] * len(prompt) + [True] * len(target),
                                             {"image": NO_IMAGE, "image_crc": 0.0}))
        for _ in range(cfg.captions_per_image):
            out.append(answer_example(tok, n_image, CAPTION_PROMPT, caption(sc), i, crc))
    return out


def cell_alignment_loss(model: Any, pixels: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy of each projected patch feature read through the LM's (tied) embedding
    matrix against its cell word: [B, P] targets for [B, 3, H, W] normalised pixels."""
    feats = model.model.get_image_features(pixel_values=pixels).pooler_output
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    logits = feats @ model.get_input_embeddings().weight.T
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    with torch.no_grad():
        acc = float((logits.argmax(-1) == targets).float().mean())
    return loss, acc


def vlm_objective(bank: torch.Tensor, cells: torch.Tensor, align_weight: float) -> Any:
    """The VLM's objective for `train.loop.train`: next-token loss on the answer tokens (the
    LM head only at target positions, like `train.loop.action_logits`), the image of each
    sequence looked up in `bank` by its ``image`` extra (-1: a text-only sequence), plus
    ``align_weight`` x `cell_alignment_loss` on the batch's images."""
    pixel_bank = normalize(bank)

    def loss_fn(model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        base = model.module if hasattr(model, "module") else model
        idx = batch.extras["image"].long().cpu()
        has = idx >= 0
        pixels = pixel_bank[idx[has]].to(batch.input_ids.device) if bool(has.any()) else None
        loss, acc = answer_loss(base, batch, pixels)
        stats = {"token_acc": acc}
        if align_weight and pixels is not None:
            al, acc = cell_alignment_loss(base, pixels, cells[idx[has]].to(batch.input_ids.device))
            loss = loss + align_weight * al
            stats["align_loss"], stats["align_acc"] = float(al.detach()), acc
        return loss, stats

    return loss_fn


@dataclass
class VLMRun:
    model: Any
    weak: Any                      # the same run's weights at weak_step
    result: TrainResult
    n_examples: int


def _load_trainable(model: Any, ckpt: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(ckpt / "trainable.safetensors")
    missing = set(dict(model.named_parameters())) - set(weights)
    if missing:
        raise ValueError(f"{ckpt}: no weights for {sorted(missing)[:3]}...")
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(weights[n])


def train_vlm(scenes: Sequence[Scene], bank: torch.Tensor, tok: Any, cfg: VisionTrainConfig, seed: int,
              out_dir: str | Path, eval_scenes: Sequence[Scene] = (), eval_bank: torch.Tensor | None = None,
              image_size: int = 64, grid: int = 4) -> VLMRun:
    """Train one VLM (seed `seed`) through `train.loop.train`; checkpoints under `out_dir`
    (every ``weak_step`` steps, all kept, so the weak checkpoint is there to load)."""
    import copy
    import dataclasses

    model = build_vlm(cfg.vlm, tok, image_size=image_size, seed=seed)
    n_image = n_image_tokens(model)
    examples = vlm_examples(scenes, bank, tok, n_image, cfg, seed, grid)
    tcfg = dataclasses.replace(cfg.train, seed=seed, save_every=cfg.weak_step,
                               keep_checkpoints=cfg.train.max_steps // cfg.weak_step + 2)
    if tcfg.max_steps < cfg.weak_step:
        raise ValueError(f"vision_train.weak_step ({cfg.weak_step}) is after the last step ({tcfg.max_steps})")
    all_bank = bank if eval_bank is None else torch.cat([bank, eval_bank])
    all_cells = cell_ids(tok, [*scenes, *eval_scenes], grid)
    evals = []
    if eval_scenes:
        held = vlm_examples(eval_scenes, eval_bank, tok, n_image, dataclasses.replace(cfg, text_questions=False),
                            seed, grid)
        evals = [Example(e.input_ids, e.labels, {**e.extras, "image": e.extras["image"] + len(scenes)})
                 for e in held]
    result = train(model, examples, evals, tcfg, out_dir, loss_fn=vlm_objective(all_bank, all_cells, cfg.align_weight),
                   pad_id=tok.pad_token_id)
    weak_dir = Path(out_dir) / "checkpoints" / f"step-{cfg.weak_step}"
    if weak_dir not in checkpoint_dirs(out_dir):
        raise FileNotFoundError(f"{weak_dir}: the weak checkpoint is missing (was it deleted?); delete "
                                f"{out_dir} to train afresh")
    weak = copy.deepcopy(model)
    _load_trainable(weak, weak_dir)
    weak.eval()
    return VLMRun(model, weak, result, len(examples))


# ---------------------------------------------------------------------------------------
# The ITM model (BLIP's image-text matching head, tiny, from scratch)
# ---------------------------------------------------------------------------------------


def itm_examples(scenes: Sequence[Scene], bank: torch.Tensor, tok: Any, seed: int, questions: int = 4,
                 captions: bool = True) -> list[Example]:
    """Image-text pairs labelled match / no match: a question about a present shape (match)
    and about an absent one (no match), the scene's caption (match) and another scene's
    (no match, unless it happens to fit). The text starts with ``<enc>``, BLIP's [ENC]."""
    from distillery.vision.saliency import itm_text_ids

    rng = np.random.default_rng([seed, 13])
    out: list[Example] = []
    for i, sc in enumerate(scenes):
        crc = pixel_crc(bank[i])
        pairs = [(QUESTION.format(shape=s), float(a == "yes")) for s, a in training_questions(sc, questions, rng)]
        if captions:
            other = scenes[int(rng.integers(len(scenes)))]
            pairs += [(caption(sc), 1.0), (caption(other), float(other.shapes == sc.shapes))]
        for text, label in pairs:
            ids = itm_text_ids(tok, text)
            out.append(Example(ids, [IGNORE_INDEX] * len(ids), {"image": float(i), "match": label, "image_crc": float(crc)}))
    return out


def itm_objective(bank: torch.Tensor, cells: torch.Tensor, align_weight: float = 1.0, itc_weight: float = 1.0,
                  temperature: float = 0.1) -> Any:
    """BLIP's ITM loss (cross-entropy of the match head) plus its ITC loss (in-batch
    contrastive, image against text, over the matching pairs), plus the same patch-to-cell-word
    alignment as the VLM's (each patch embedding read through the text encoder's word
    embeddings must name its cell; from scratch, without it, the match head stayed at chance)."""
    pixel_bank = normalize(bank)

    def loss_fn(model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        base = model.module if hasattr(model, "module") else model
        idx = batch.extras["image"].long().cpu()
        pixels = pixel_bank[idx].to(batch.input_ids.device)
        mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.input_ids)
        labels = batch.extras["match"].long()
        itm = base(input_ids=batch.input_ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True).itm_score
        loss_itm = torch.nn.functional.cross_entropy(itm, labels)
        stats = {"itm_acc": float((itm.argmax(-1) == labels).float().mean())}
        loss = loss_itm
        if align_weight:
            patches = base.vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
            words = base.text_encoder.embeddings.word_embeddings.weight
            logits = patches @ words.T
            tgt = cells[idx].to(logits.device)
            al = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
            loss = loss + align_weight * al
            stats["align_acc"] = float((logits.argmax(-1) == tgt).float().mean())
        pos = labels.bool()
        if itc_weight and int(pos.sum()) > 1:
            sim = base(input_ids=batch.input_ids[pos], attention_mask=mask[pos], pixel_values=pixels[pos],
                       use_itm_head=False).itm_score / temperature
            # rows that show the same image are not negatives of each other
            same = idx[pos.cpu()][:, None] == idx[pos.cpu()][None, :]
            sim = sim.masked_fill(same.to(sim.device) & ~torch.eye(len(sim), dtype=torch.bool, device=sim.device),
                                  float("-inf"))
            target = torch.arange(len(sim), device=sim.device)
            loss_itc = (torch.nn.functional.cross_entropy(sim, target) + torch.nn.functional.cross_entropy(sim.T, target)) / 2
            loss = loss + itc_weight * loss_itc
            stats["itc_loss"] = float(loss_itc.detach())
        return loss, stats

    return loss_fn


def train_itm(scenes: Sequence[Scene], bank: torch.Tensor, tok: Any, cfg: ITMConfig, tcfg: TrainConfig,
              out_dir: str | Path, image_size: int = 64, patch_size: int = 16, grid: int = 4) -> tuple[Any, TrainResult]:
    from distillery.vision.saliency import build_itm

    if cfg.vision_hidden != cfg.text_hidden:
        raise ValueError("vision_train.itm: vision_hidden must equal text_hidden (the alignment loss reads patch "
                         "embeddings through the word embeddings)")
    model = build_itm(cfg, tok, image_size=image_size, patch_size=patch_size, seed=tcfg.seed)
    examples = itm_examples(scenes, bank, tok, tcfg.seed, cfg.questions_per_image, cfg.captions)
    result = train(model, examples, [], tcfg, out_dir,
                   loss_fn=itm_objective(bank, cell_ids(tok, scenes, grid), cfg.align_weight, cfg.itc_weight), pad_id=tok.pad_token_id)
    return model, result


# ---------------------------------------------------------------------------------------
# The stage's jobs (one process each, one thread each)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainJob:
    """One model to train: ``kind`` vlm (with its weak checkpoint) or itm."""

    kind: str
    seed: int
    cfg: VisionTrainConfig
    image_size: int
    grid: int
    scenes_file: str
    model_root: str
    checkpoint_root: str
    live_root: str
    params: dict[str, Any]


def _split_bank(job: TrainJob, split: str) -> tuple[list[Scene], torch.Tensor]:
    import polars as pl

    from distillery.vision.scenes import scenes_from_frame
    from distillery.vision.vlm import load_images

    frame = pl.read_parquet(job.scenes_file).filter(pl.col("split") == split)
    return scenes_from_frame(frame), load_images(frame["path"].to_list(), frame["image_id"].to_list(),
                                                 size=job.image_size)


def run_train_job(job: TrainJob) -> dict[str, Any]:
    """Train one model and write its directory (two for a VLM: trained and weak); returns
    its metrics. Runs in a worker process of the `vision_train` stage."""
    import dataclasses
    import time

    from distillery.lm.model import save_model_dir
    from distillery.train.card import build_card
    from distillery.vision.vlm import PROMPT_FORMAT, build_tokenizer

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    scenes, bank = _split_bank(job, "train")
    tok = build_tokenizer()
    data = [job.scenes_file, str(Path(job.scenes_file).parent / "images")]
    name = f"vlm-s{job.seed}" if job.kind == "vlm" else "itm"
    ckpt = Path(job.checkpoint_root) / name
    if job.kind == "vlm":
        val_scenes, val_bank = _split_bank(job, "val")
        cfg = dataclasses.replace(job.cfg, train=dataclasses.replace(job.cfg.train, log_dir=f"{job.live_root}/{name}"))
        run = train_vlm(scenes, bank, tok, cfg, job.seed, ckpt, val_scenes, val_bank, job.image_size, job.grid)
        metrics = {**run.result.metrics, "n_examples": run.n_examples, "seconds": round(time.perf_counter() - t0, 1)}
        for model, out, what in ((run.model, name, "trained"), (run.weak, f"vlm-weak-s{job.seed}", "weak")):
            card = build_card(prompt=PROMPT_FORMAT, seed=job.seed, data_files=data, metrics=metrics, params=job.params,
                              model_cfg=cfg.vlm, train_cfg=cfg.train, model=model,
                              extra={"checkpoint": what, "step": run.result.steps if what == "trained" else cfg.weak_step,
                                     "track": "vision"})
            save_model_dir(Path(job.model_root) / out, model, tok, card)
        return {"name": name, "kind": "vlm", "seed": job.seed, **metrics}
    tcfg = dataclasses.replace(job.cfg.itm_train, seed=job.seed, log_dir=f"{job.live_root}/{name}")
    model, result = train_itm(scenes, bank, tok, job.cfg.itm, tcfg, ckpt, job.image_size,
                              job.image_size // job.grid, job.grid)
    metrics = {**result.metrics, "seconds": round(time.perf_counter() - t0, 1)}
    card = build_card(prompt=PROMPT_FORMAT, seed=job.seed, data_files=data, metrics=metrics, params=job.params,
                      model_cfg=job.cfg.itm, train_cfg=tcfg, model=model, extra={"track": "vision", "role": "itm"})
    save_model_dir(Path(job.model_root) / name, model, tok, card)
    return {"name": name, "kind": "itm", "seed": job.seed, **metrics}


def train_headline(details: dict[str, Any]) -> dict[str, float | None]:
    """`metrics/vision_train.json`: the trained VLMs' mean held-out (validation) loss, their
    optimizer steps and the stage's seconds (each model's numbers are in the details)."""
    from distillery.evaluate.headline import number

    vlms = [m for m in details["models"] if m["kind"] == "vlm"]
    if not vlms:
        raise ValueError("vision_train: no VLM was trained (vision_train.seeds is empty?)")
    losses = [m["eval_loss"] for m in vlms if m.get("eval_loss") is not None]
    return {"loss": number(sum(losses) / len(losses), "vision_train loss") if losses else None,
            "steps": number(max(m["steps"] for m in vlms), "vision_train steps"),
            "seconds": number(details["seconds"], "vision_train seconds")}


def run_train_jobs(jobs: Sequence[TrainJob], workers: int) -> list[dict[str, Any]]:
    """The jobs on `workers` spawned processes (inline when 1), results in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [run_train_job(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process holding torch/OpenMP threads can hang.
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(run_train_job, jobs))
