"""The hallucination benchmarks and every decoding method on them.

**POPE** (`AoiDragon/POPE`): for each image, up to 3 present objects, each paired with one
absent object drawn *random*, *popular* or *adversarial* (`scenes.pope_questions`); the
question "is there a {} in the image ?"; the answer is "no" when the first sentence of the
reply holds the word no or not (`parse_yes_no`); `pope_metrics` gives accuracy, precision,
recall and F1 of the "yes" class, and the yes-ratio.

**CHAIR** on captions (`chair`): CHAIR_i = hallucinated object mentions / all object
mentions, CHAIR_s = captions with at least one hallucination / all captions, recall =
mentioned true objects / true objects. The vocabulary is the scenes' closed set of shapes.

**Running the methods** (`ViewSet`, `pope_logits`, `caption_run`). A POPE answer is the first
generated token, so every method's POPE answers come from each view's first-step logits,
computed once per (question, view) and combined by the same `Method.combine` the logits
processors call at every step (`decoding.decode_first_token`; a test checks it against
`contrastive_generate`). That is also what lets hyper-parameters be tuned on the validation
split over a grid for free. Captions run the processors through `generate`.

Views of a batch (`ViewSet.build`):
``noised`` (VCD: diffusion noise at t on the normalised pixels, per noise seed),
``positive`` (the ITM Grad-CAM's salient pixels kept: AGLA's and PND's v⁺),
``negative`` (the ITM Grad-CAM's core region destroyed: PND's v⁻, per noise seed),
``no_image`` (M3ID), ``disturbed`` (ICD: the disturbance before the instruction), and for
the ablation ``attn_positive``/``attn_negative`` from the VLM's own attention
(keep fraction `attn_keep`, as no ITC score exists there).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from distillery.vision.decoding import (
    Method,
    contrastive_generate,
    diffusion_noise,
    first_token_logits,
    with_pixels,
    without_image,
)
from distillery.vision.saliency import (
    attention_map,
    attention_saliency,
    fuse_min,
    negative_view,
    positive_view,
)
from distillery.vision.scenes import mentioned_shapes
from distillery.vision.vlm import normalize, prompt_ids, vlm_inputs

# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


def parse_yes_no(text: str) -> str:
    """POPE's rule: "no" if the first sentence holds the word no or not, else "yes"."""
    first = re.split(r"[.!?\n]", text.strip(), maxsplit=1)[0] if text.strip() else ""
    words = re.findall(r"[a-z]+", first.lower())
    return "no" if ("no" in words or "not" in words) else "yes"


def pope_metrics(labels: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class: yes) and yes-ratio."""
    if len(labels) != len(answers):
        raise ValueError(f"pope_metrics: {len(labels)} labels but {len(answers)} answers")
    if not labels:
        raise ValueError("pope_metrics: no questions")
    tp = sum(1 for y, a in zip(labels, answers, strict=True) if y == "yes" and a == "yes")
    fp = sum(1 for y, a in zip(labels, answers, strict=True) if y == "no" and a == "yes")
    tn = sum(1 for y, a in zip(labels, answers, strict=True) if y == "no" and a == "no")
    fn = len(labels) - tp - fp - tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(labels), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / len(labels), "n": float(len(labels))}


def chair(captions: Sequence[str], truths: Sequence[set[str] | frozenset[str] | Sequence[str]]) -> dict[str, float]:
    """CHAIR_i, CHAIR_s and object recall of `captions` against each image's true shapes."""
    if len(captions) != len(truths) or not captions:
        raise ValueError(f"chair: {len(captions)} captions for {len(truths)} images")
    mentions = hallucinated = bad_captions = found = total = 0
    for text, truth in zip(captions, truths, strict=True):
        truth = set(truth)
        ment = mentioned_shapes(text)
        bad = [m for m in ment if m not in truth]
        mentions += len(ment)
        hallucinated += len(bad)
        bad_captions += bool(bad)
        found += len(truth & set(ment))
        total += len(truth)
    return {"chair_i": hallucinated / mentions if mentions else 0.0, "chair_s": bad_captions / len(captions),
            "recall": found / total if total else 0.0, "mentions": float(mentions)}


def mean_std(xs: Sequence[float]) -> dict[str, Any]:
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "runs": xs}


# ---------------------------------------------------------------------------------------
# Views of a batch
# ---------------------------------------------------------------------------------------


@dataclass
class ViewConfig:
    vcd_noise_step: int = 500
    pnd_noise_step: int = 999
    pnd_threshold: float = 0.6
    icd_prefix: str = "you are a confused object detector"
    attn_keep: float = 0.5


@dataclass
class ItmMaps:
    """The ITM Grad-CAM views' inputs for a batch: positive map, negative fused map [B, H, W]
    and the positive keep fraction [B] (`saliency.pnd_maps`)."""

    positive: torch.Tensor
    negative: torch.Tensor
    keep: torch.Tensor


@dataclass
class ViewSet:
    """Every view's model inputs for one batch. `noise` views are per noise seed."""

    base: dict[str, torch.Tensor]
    fixed: dict[str, dict[str, torch.Tensor]]                 # positive, no_image, disturbed, attn_positive
    noisy: dict[int, dict[str, dict[str, torch.Tensor]]]      # seed -> noised, negative, attn_negative

    def views(self, seed: int) -> dict[str, dict[str, torch.Tensor]]:
        return {**self.fixed, **self.noisy.get(seed, {})}

    @staticmethod
    def build(model: Any, tok: Any, pixels: torch.Tensor, instructions: Sequence[str], itm: ItmMaps | None,
              seeds: Sequence[int], cfg: ViewConfig, *, attn: bool = True,
              batch_offset: int = 0) -> tuple[ViewSet, torch.Tensor | None]:
        """The views of `pixels` ([B, 3, H, W] in [0, 1]) with their instructions. With
        `attn`, also the ablation's views, from the attention of one forward of the original
        input, whose first-step logits are returned too (else None). `batch_offset` keys the
        noise to the rows, so a row's noise does not depend on how the rows were batched."""
        n_img = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
        image_id = model.config.image_token_id
        prompts = [prompt_ids(tok, n_img, ins) for ins in instructions]
        base = vlm_inputs(tok, pixels, prompts)
        size = pixels.shape[-1]
        fixed: dict[str, dict[str, torch.Tensor]] = {
            "no_image": without_image(base, image_id, tok.pad_token_id),
            "disturbed": vlm_inputs(tok, pixels, [prompt_ids(tok, n_img, ins, prefix=cfg.icd_prefix)
                                                  for ins in instructions]),
        }
        if itm is not None:
            fixed["positive"] = with_pixels(base, normalize(positive_view(pixels, itm.positive, itm.keep)))
        l0 = attn_neg = None
        if attn:
            l0, attentions = first_token_logits(model, base, output_attentions=True)
            per_layer = attention_saliency(attentions, base["input_ids"] == image_id)      # [B, L, P]
            attn_pos = attention_map(per_layer.mean(1), size)
            attn_neg = fuse_min([attention_map(per_layer[:, k], size) for k in range(per_layer.shape[1])])
            fixed["attn_positive"] = with_pixels(base, normalize(positive_view(
                pixels, attn_pos, torch.full((len(pixels),), cfg.attn_keep))))
        noisy: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + batch_offset)
            views = {"noised": with_pixels(base, diffusion_noise(base["pixel_values"], cfg.vcd_noise_step, g))}
            if itm is not None:
                views["negative"] = with_pixels(base, normalize(negative_view(
                    pixels, itm.negative, threshold=cfg.pnd_threshold, step=cfg.pnd_noise_step, generator=g)))
            if attn_neg is not None:
                views["attn_negative"] = with_pixels(base, normalize(negative_view(
                    pixels, attn_neg, threshold=cfg.pnd_threshold, step=cfg.pnd_noise_step, generator=g)))
            noisy[int(seed)] = views
        return ViewSet(base, fixed, noisy), l0


# Which views each method reads, by the names ViewSet uses ("pnd_attn" is PND on the
# model's own attention: its positive and negative come from attn_*).
METHOD_VIEWS: dict[str, dict[str, str]] = {
    "greedy": {}, "vcd": {"noised": "noised"}, "agla": {"positive": "positive"}, "icd": {"disturbed": "disturbed"},
    "m3id": {"no_image": "no_image"}, "pnd": {"positive": "positive", "negative": "negative"},
    "pnd_attn": {"positive": "attn_positive", "negative": "attn_negative"},
}
STOCHASTIC = frozenset({"vcd", "pnd", "pnd_attn"})      # their views depend on the noise seed


def method_of(name: str, params: Mapping[str, float]) -> Method:
    return Method("pnd" if name == "pnd_attn" else name, dict(params))


def method_views(name: str, views: Mapping[str, Any]) -> dict[str, Any]:
    """`views` renamed to what `Method` expects for method `name`."""
    return {want: views[have] for want, have in METHOD_VIEWS[name].items()}


def pope_logits(model: Any, tok: Any, pixels: torch.Tensor, instructions: Sequence[str], itm: ItmMaps | None,
                seeds: Sequence[int], cfg: ViewConfig, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """First-step logits of every view for every row: {"orig": [N, V], "no_image": ...,
    "noised@<seed>": ...}. Rows are batched `batch_size` at a time."""
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(instructions), batch_size):
        sl = slice(start, start + batch_size)
        maps = None if itm is None else ItmMaps(itm.positive[sl], itm.negative[sl], itm.keep[sl])
        vs, l0 = ViewSet.build(model, tok, pixels[sl], instructions[sl], maps, seeds, cfg, batch_offset=start)
        out.setdefault("orig", []).append(l0 if l0 is not None else first_token_logits(model, vs.base))
        for name, inputs in vs.fixed.items():
            out.setdefault(name, []).append(first_token_logits(model, inputs))
        for seed, views in vs.noisy.items():
            for name, inputs in views.items():
                out.setdefault(f"{name}@{seed}", []).append(first_token_logits(model, inputs))
    return {k: torch.cat(v) for k, v in out.items()}


def first_answers(name: str, params: Mapping[str, float], logits: Mapping[str, torch.Tensor], seed: int) -> torch.Tensor:
    """Token ids `name` answers first for every row, from `pope_logits`' output."""
    method = method_of(name, params)
    views = {want: logits[have if have in logits else f"{have}@{seed}"] for want, have in METHOD_VIEWS[name].items()}
    return method.combine(logits["orig"], views, 1).argmax(-1)


@dataclass
class CaptionRun:
    captions: list[str]
    n_tokens: int
    forwards_per_step: float
    wall_s: float


def caption_run(model: Any, tok: Any, pixels: torch.Tensor, instruction: str, itm: ItmMaps | None, name: str,
                params: Mapping[str, float], seed: int, cfg: ViewConfig, *, max_new_tokens: int,
                batch_size: int = 128) -> CaptionRun:
    """Captions of `pixels` by method `name` (views built per batch, noise seeded by `seed`)."""
    caps: list[str] = []
    n_tok, fwd, steps, wall = 0, 0, 0, 0.0
    for start in range(0, len(pixels), batch_size):
        sl = slice(start, start + batch_size)
        maps = None if itm is None else ItmMaps(itm.positive[sl], itm.negative[sl], itm.keep[sl])
        px = pixels[sl]
        vs, _ = ViewSet.build(model, tok, px, [instruction] * len(px), maps, [seed], cfg,
                              attn=name == "pnd_attn", batch_offset=start)
        d = contrastive_generate(model, vs.base, method_of(name, params), method_views(name, vs.views(seed)),
                                 max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        caps += [tok.decode(row, skip_special_tokens=True) for row in d.sequences]
        n_tok += d.n_tokens
        fwd += d.main_forwards + d.branch_forwards
        steps += d.steps
        wall += d.wall_s
    return CaptionRun(caps, n_tok, fwd / max(steps, 1), wall)
