"""Contrastive decoding against hallucination, as `transformers` logits processors.

Each method contrasts the model's next-token logits on the original input ``l = l(x, v)``
with its logits on other *views* of the same prompt (another image, no image, another
instruction), run in step with `model.generate`:

==========  =====================================================  ===============================
method      next-token logits                                       views (extra forwards/token)
==========  =====================================================  ===============================
greedy      ``l``                                                   none (1)
VCD         ``(1+α)·l − α·l(x, v')``, v' = diffusion-noised image   noised (2)
AGLA        ``l + α·l(x, v⁺)``, v⁺ = the image's salient part only  positive (2)
ICD         ``(1+α)·l − α·l(x_d, v)``, x_d = disturbed instruction  disturbed (2)
M3ID        ``lc + (1−γ_t)/γ_t·(lc − lu)``, γ_t = exp(−λ·t),         no image (2)
            lc, lu log-probabilities with and without the image
PND         ``α·l(x, v⁺) − γ·l(x, v⁻)``, v⁻ = core region destroyed  positive, negative (3)
==========  =====================================================  ===============================

Every method but greedy then applies the adaptive plausibility cutoff of VCD: tokens whose
logit on the original input is below ``log β + max l`` get −inf (``β = 0`` turns it off).
Decoding takes the argmax of the result (the papers sample at temperature 1; greedy makes the
comparison deterministic given the views; with argmax PND's α matters only through γ/α).

The formulas: VCD, PND and AGLA as in their released code (`DAMO-NLP-SG/VCD`
``vcd_sample.py``, `JiangYubo4399/PND` ``sample_new.py``); ICD's contrast is VCD's with the
instruction disturbed; M3ID's from its paper (not code-checked), t counting generated tokens
from 1. The pure functions below (`vcd_logits`, ...) are the arithmetic; the processors run
the views.

**Any transformers VLM.** A view is a dict of model inputs (``input_ids``,
``attention_mask``, ``pixel_values`` and whatever else the model takes: ``image_sizes``,
``image_grid_thw``...). `ViewBranch` prefills it once and then feeds each generated token
with its own KV cache, through the model's own ``prepare_inputs_for_generation`` and
``_update_model_kwargs_for_generation`` (the methods `generate` uses, so position ids, M-RoPE,
pixel inputs that only the prefill takes are handled as the model's generate handles them).
Per generated token that is one forward of one token per view: VCD two forwards, PND three.
Views may differ in prompt length (left padding; the generated tokens are appended to each).
Views of a batch: `with_pixels`, `without_image`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

# ---------------------------------------------------------------------------------------
# Diffusion noise (VCD's and PND's)
# ---------------------------------------------------------------------------------------

N_STEPS = 1000


def _alpha_bars() -> torch.Tensor:
    betas = torch.sigmoid(torch.linspace(-6, 6, N_STEPS)) * (0.5e-2 - 1e-5) + 1e-5
    return torch.cumprod(1 - betas, dim=0)


def diffusion_noise(x: torch.Tensor, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Forward diffusion ``sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·ε`` at step t (VCD's schedule:
    betas = sigmoid(linspace(−6, 6, 1000))·(5e−3 − 1e−5) + 1e−5)."""
    if not 0 <= step < N_STEPS:
        raise ValueError(f"diffusion step must be in [0, {N_STEPS - 1}], got {step}")
    abar = _alpha_bars()[step]
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return abar.sqrt() * x + (1 - abar).sqrt() * eps


# ---------------------------------------------------------------------------------------
# The arithmetic of each method (pure functions of logits)
# ---------------------------------------------------------------------------------------


def plausibility_cutoff(final: torch.Tensor, original: torch.Tensor, beta: float) -> torch.Tensor:
    """`final` with −inf wherever ``original < log β + max(original)`` (β <= 0: unchanged)."""
    if beta <= 0:
        return final
    cut = math.log(beta) + original.max(dim=-1, keepdim=True).values
    return final.masked_fill(original < cut, float("-inf"))


def vcd_logits(orig: torch.Tensor, l_noised: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return plausibility_cutoff((1 + alpha) * orig - alpha * l_noised, orig, beta)


def icd_logits(orig: torch.Tensor, l_disturbed: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return plausibility_cutoff((1 + alpha) * orig - alpha * l_disturbed, orig, beta)


def agla_logits(orig: torch.Tensor, l_aug: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return plausibility_cutoff(orig + alpha * l_aug, orig, beta)


def m3id_logits(orig: torch.Tensor, l_noimage: torch.Tensor, t: int, lam: float, beta: float) -> torch.Tensor:
    """t: the 1-based index of the token being generated."""
    lc, lu = torch.log_softmax(orig.float(), -1), torch.log_softmax(l_noimage.float(), -1)
    gamma_t = math.exp(-lam * t)
    return plausibility_cutoff(lc + (1 - gamma_t) / gamma_t * (lc - lu), orig, beta)


def pnd_logits(orig: torch.Tensor, l_pos: torch.Tensor, l_neg: torch.Tensor, alpha: float, gamma: float,
               beta: float) -> torch.Tensor:
    return plausibility_cutoff(alpha * l_pos - gamma * l_neg, orig, beta)


# ---------------------------------------------------------------------------------------
# Methods: a name, its hyper-parameters and the views it needs
# ---------------------------------------------------------------------------------------

VIEWS: dict[str, tuple[str, ...]] = {
    "greedy": (), "vcd": ("noised",), "agla": ("positive",), "icd": ("disturbed",), "m3id": ("no_image",),
    "pnd": ("positive", "negative"),
}
DEFAULTS: dict[str, dict[str, float]] = {
    "greedy": {}, "vcd": {"alpha": 1.0, "beta": 0.2}, "agla": {"alpha": 1.0, "beta": 0.1},
    "icd": {"alpha": 1.0, "beta": 0.1}, "m3id": {"lam": 0.02, "beta": 0.1},
    "pnd": {"alpha": 2.2, "gamma": 0.4, "beta": 0.4},
}


@dataclass(frozen=True)
class Method:
    """A decoding method: `kind` (a key of VIEWS) and its hyper-parameters (DEFAULTS' keys)."""

    kind: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in VIEWS:
            raise ValueError(f"unknown decoding method {self.kind!r}; methods: {sorted(VIEWS)}")
        unknown = set(self.params) - set(DEFAULTS[self.kind])
        if unknown:
            raise ValueError(f"{self.kind}: unknown hyper-parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(DEFAULTS[self.kind])}")

    @property
    def views(self) -> tuple[str, ...]:
        return VIEWS[self.kind]

    def value(self, name: str) -> float:
        return float(self.params.get(name, DEFAULTS[self.kind][name]))

    def combine(self, orig: torch.Tensor, views: Mapping[str, torch.Tensor], t: int) -> torch.Tensor:
        """The method's next-token scores from the original logits `orig` [B, V], each view's
        logits (by name) and t, the 1-based index of the token being generated."""
        v = self.value
        if self.kind == "greedy":
            return orig
        if self.kind == "vcd":
            return vcd_logits(orig, views["noised"], v("alpha"), v("beta"))
        if self.kind == "agla":
            return agla_logits(orig, views["positive"], v("alpha"), v("beta"))
        if self.kind == "icd":
            return icd_logits(orig, views["disturbed"], v("alpha"), v("beta"))
        if self.kind == "m3id":
            return m3id_logits(orig, views["no_image"], t, v("lam"), v("beta"))
        return pnd_logits(orig, views["positive"], views["negative"], v("alpha"), v("gamma"), v("beta"))


# ---------------------------------------------------------------------------------------
# Running a view beside generate
# ---------------------------------------------------------------------------------------


class ViewBranch:
    """One view of the prompt, decoded in step with `generate`: the first call prefills it
    (its own prompt plus whatever has been generated), each later call feeds the one new
    token through the view's own KV cache. `forwards` counts model calls, `tokens` the
    positions they processed."""

    def __init__(self, model: Any, inputs: Mapping[str, Any]) -> None:
        if "input_ids" not in inputs:
            raise ValueError("a view needs input_ids (and usually attention_mask and the image inputs)")
        self.model = model
        self.prompt = inputs["input_ids"]
        self.inputs = {k: v for k, v in inputs.items() if k != "input_ids"}
        self.kwargs: dict[str, Any] | None = None
        self.ids: torch.Tensor | None = None
        self.fed = 0                        # generated tokens already in this view's cache
        self.forwards = 0
        self.tokens = 0

    def _prefill(self, generated: torch.Tensor) -> torch.Tensor:
        model = self.model
        ids = torch.cat([self.prompt.to(generated.device), generated], dim=1)
        kwargs: dict[str, Any] = dict(self.inputs)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(self.prompt)
        kwargs["attention_mask"] = torch.cat([mask.to(generated.device), torch.ones_like(generated)], dim=1)
        kwargs["use_cache"] = True
        # What generate does before its first forward: position ids from the mask (M-RoPE
        # models override this), when the model takes them.
        if getattr(model, "_prepare_position_ids_for_generation", None) is not None and \
                "position_ids" in _forward_params(model) and "position_ids" not in kwargs:
            kwargs["position_ids"] = model._prepare_position_ids_for_generation(ids, {**kwargs, "input_ids": ids})
        inputs = model.prepare_inputs_for_generation(ids, is_first_iteration=True, **kwargs)
        out = model(**inputs, return_dict=True)
        self.forwards += 1
        self.tokens += int(ids.shape[1])
        self.kwargs = model._update_model_kwargs_for_generation(out, kwargs,
                                                                is_encoder_decoder=model.config.is_encoder_decoder)
        self.ids = ids
        self.fed = generated.shape[1]
        return out.logits[:, -1].float()

    def logits(self, generated: torch.Tensor) -> torch.Tensor:
        """Next-token logits of this view after `generated` ([B, n] tokens so far)."""
        if self.kwargs is None:
            return self._prefill(generated)
        new = generated.shape[1] - self.fed
        if new != 1:
            raise RuntimeError(f"a view advances one token per step; {new} arrived (was the processor "
                               "reused across generate calls?)")
        self.ids = torch.cat([self.ids, generated[:, -1:]], dim=1)
        inputs = self.model.prepare_inputs_for_generation(self.ids, next_sequence_length=1, **self.kwargs)
        out = self.model(**inputs, return_dict=True)
        self.forwards += 1
        self.tokens += 1
        self.kwargs = self.model._update_model_kwargs_for_generation(
            out, self.kwargs, is_encoder_decoder=self.model.config.is_encoder_decoder)
        self.fed += 1
        return out.logits[:, -1].float()


def _forward_params(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


class ContrastiveLogitsProcessor(LogitsProcessor):
    """`method.combine` over the main logits and its views' logits. Give it to
    `model.generate(logits_processor=LogitsProcessorList([...]))` as the *first* processor
    (it needs the raw logits), with `do_sample=False`; one instance per generate call.

    `views` maps each name in ``method.views`` to that view's model inputs (same batch
    order as the main input). `prompt_len` is the main input's prompt length (the processor
    sees prompt + generated tokens)."""

    def __init__(self, model: Any, method: Method, views: Mapping[str, Mapping[str, Any]], prompt_len: int) -> None:
        missing = [v for v in method.views if v not in views]
        if missing:
            raise ValueError(f"{method.kind} needs the view(s) {missing}; given {sorted(views)}")
        self.method = method
        self.prompt_len = prompt_len
        self.branches = {name: ViewBranch(model, views[name]) for name in method.views}
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len:]
        self.calls += 1
        view_logits = {name: b.logits(generated) for name, b in self.branches.items()}
        return self.method.combine(scores.float(), view_logits, generated.shape[1] + 1)

    @property
    def branch_forwards(self) -> int:
        return sum(b.forwards for b in self.branches.values())


# Named processors for the usual call sites (each a ContrastiveLogitsProcessor).
def VCDLogitsProcessor(model: Any, noised: Mapping[str, Any], prompt_len: int, alpha: float = 1.0,  # noqa: N802
                       beta: float = 0.2) -> ContrastiveLogitsProcessor:
    return ContrastiveLogitsProcessor(model, Method("vcd", {"alpha": alpha, "beta": beta}), {"noised": noised},
                                      prompt_len)


def PNDLogitsProcessor(model: Any, positive: Mapping[str, Any], negative: Mapping[str, Any], prompt_len: int,  # noqa: N802
                       alpha: float = 2.2, gamma: float = 0.4, beta: float = 0.4) -> ContrastiveLogitsProcessor:
    return ContrastiveLogitsProcessor(model, Method("pnd", {"alpha": alpha, "gamma": gamma, "beta": beta}),
                                      {"positive": positive, "negative": negative}, prompt_len)


@dataclass
class Decoded:
    """What `contrastive_generate` returns."""

    sequences: torch.Tensor       # [B, n] generated tokens only (pad after eos)
    n_tokens: int                 # generated tokens up to and including each row's eos
    main_forwards: int            # forward calls of the model on the original input
    branch_forwards: int          # forward calls on the views
    steps: int                    # decoding steps (tokens per row, at most)
    wall_s: float

    @property
    def forwards_per_step(self) -> float:
        """Model forward calls per decoding step (1 for greedy, 1 + views otherwise)."""
        return (self.main_forwards + self.branch_forwards) / max(self.steps, 1)


def contrastive_generate(model: Any, inputs: Mapping[str, Any], method: Method,
                         views: Mapping[str, Mapping[str, Any]] | None = None, *, max_new_tokens: int,
                         eos_token_id: int | None = None, pad_token_id: int | None = None) -> Decoded:
    """`model.generate` with `method`'s processor (greedy: none), argmax decoding."""
    prompt_len = int(inputs["input_ids"].shape[1])
    procs = LogitsProcessorList()
    proc = None
    if method.views:
        proc = ContrastiveLogitsProcessor(model, method, views or {}, prompt_len)
        procs.append(proc)
    calls = _CallCounter()
    procs.append(calls)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, logits_processor=procs, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    wall = time.perf_counter() - t0
    seq = out[:, prompt_len:]
    n = 0
    for row in seq.tolist():
        k = len(row)
        if eos_token_id is not None and eos_token_id in row:
            k = row.index(eos_token_id) + 1
        n += k
    return Decoded(seq, n, calls.calls, proc.branch_forwards if proc else 0, seq.shape[1], wall)


class _CallCounter(LogitsProcessor):
    """Counts decoding steps (one call per main forward); changes nothing."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.calls += 1
        return scores


# ---------------------------------------------------------------------------------------
# Building views of a batch of model inputs
# ---------------------------------------------------------------------------------------

IMAGE_KEY_PARTS = ("pixel", "image")


def with_pixels(inputs: Mapping[str, Any], pixel_values: torch.Tensor) -> dict[str, Any]:
    """The same prompt with other pixels (a noised, masked or destroyed image)."""
    if "pixel_values" in inputs and tuple(inputs["pixel_values"].shape) != tuple(pixel_values.shape):
        raise ValueError(f"view pixels {tuple(pixel_values.shape)} differ in shape from the original "
                         f"{tuple(inputs['pixel_values'].shape)}")
    return {**inputs, "pixel_values": pixel_values}


def without_image(inputs: Mapping[str, Any], image_token_id: int, pad_token_id: int) -> dict[str, Any]:
    """The same prompt with its image tokens removed and no image inputs (every key naming
    pixels or images dropped), re-padded on the left: the text-only view M3ID contrasts."""
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    rows = [r[(m.bool()) & (r != image_token_id)] for r, m in zip(ids, mask, strict=True)]
    width = max(len(r) for r in rows)
    if width == 0:
        raise ValueError("without_image: a prompt has nothing but image tokens")
    new_ids = torch.full((len(rows), width), pad_token_id, dtype=ids.dtype, device=ids.device)
    new_mask = torch.zeros((len(rows), width), dtype=mask.dtype, device=ids.device)
    for i, r in enumerate(rows):
        new_ids[i, width - len(r):] = r
        new_mask[i, width - len(r):] = 1
    keep = {k: v for k, v in inputs.items()
            if k not in ("input_ids", "attention_mask") and not any(p in k for p in IMAGE_KEY_PARTS)
            and k not in ("mm_token_type_ids", "token_type_ids")}
    return {**keep, "input_ids": new_ids, "attention_mask": new_mask}


def first_token_logits(model: Any, inputs: Mapping[str, Any], *, output_attentions: bool = False) -> Any:
    """One forward of the whole prompt: the next-token logits [B, V] (float32), and the
    attentions when asked. The first decoding step of every method, computed once."""
    with torch.no_grad():
        out = model(**inputs, use_cache=False, output_attentions=output_attentions, return_dict=True)
    return (out.logits[:, -1].float(), out.attentions) if output_attentions else out.logits[:, -1].float()


def decode_first_token(method: Method, orig: torch.Tensor, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The token `method` picks first, from precomputed first-step logits: exactly what
    `contrastive_generate` picks at its first step (the processors call `combine` on the
    same numbers)."""
    return method.combine(orig, views, 1).argmax(-1)


__all__ = [
    "ContrastiveLogitsProcessor", "Decoded", "Method", "PNDLogitsProcessor", "VCDLogitsProcessor", "ViewBranch",
    "agla_logits", "contrastive_generate", "decode_first_token", "diffusion_noise", "first_token_logits",
    "icd_logits", "m3id_logits", "plausibility_cutoff", "pnd_logits", "vcd_logits", "with_pixels", "without_image",
]
