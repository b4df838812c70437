"""The vision track's params sections as dataclasses (`params.yaml:vision_data`,
`vision_train`, `vision_eval`). Every field has a default and a one-line help; a value that
cannot work fails in `__post_init__` with what to change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distillery.config import ConfigError, _f, check_choices
from distillery.train.config import TrainConfig


@dataclass
class SceneConfig:
    """The scene generator: a grid of cells, one object per occupied cell, a co-occurrence
    prior (anchors bring their partner), popularity skew, and counterfactual eval splits."""

    seed: int = _f(0, "seeds every draw; the same config gives byte-identical scenes")
    n_train: int = _f(3000, "training scenes")
    n_val: int = _f(120, "validation scenes (counterfactual; decoding hyper-parameters are tuned here)")
    n_test: int = _f(200, "test scenes (counterfactual; every reported number)")
    image_size: int = _f(64, "square image side in pixels")
    grid: int = _f(4, "cells per side; image_size / grid pixels per cell (align the VLM's patches to it)")
    min_objects: int = _f(3, "fewest objects in a scene")
    max_objects: int = _f(5, "most objects in a scene")
    pairs: list[list[str]] = _f([["circle", "square"], ["triangle", "diamond"], ["cross", "ring"],
                                 ["star", "moon"]],
                                "[anchor, partner] shapes: where the anchor is, the partner usually is too (in training)")
    partner_rate_train: float = _f(0.9, "training: probability that an anchor's partner is in the scene")
    partner_rate_eval: float = _f(0.2, "validation/test: the same probability (counterfactual: the partner is often absent)")
    min_size: int = _f(6, "smallest object side in pixels (small objects are hard to make out: there the prior decides)")
    max_size: int = _f(13, "largest object side in pixels (at most the cell side minus 2)")
    popularity: float = _f(1.0, "Zipf exponent of how often each shape is drawn (0 = uniform)")
    pope_per_image: int = _f(3, "POPE: present objects asked about per image (each paired with one absent object)")

    def __post_init__(self) -> None:
        if self.grid < 1 or self.image_size < 1:
            raise ValueError(f"vision_data.grid and vision_data.image_size must be at least 1, got grid "
                             f"{self.grid} and image_size {self.image_size}")
        if self.image_size % self.grid:
            raise ValueError(f"vision_data.image_size ({self.image_size}) must be divisible by grid ({self.grid})")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid * self.grid:
            raise ValueError("vision_data: need 1 <= min_objects <= max_objects <= grid*grid")
        if not 3 <= self.min_size <= self.max_size <= self.image_size // self.grid - 2:
            raise ValueError("vision_data: need 3 <= min_size <= max_size <= cell side - 2")
        for name in ("partner_rate_train", "partner_rate_eval"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"vision_data.{name} must be in [0, 1]")
        if min(self.n_train, self.n_val, self.n_test) < 1:
            raise ValueError("vision_data: n_train, n_val and n_test must be at least 1")
        if self.pope_per_image < 1:
            raise ValueError("vision_data: pope_per_image must be >= 1")


@dataclass
class VLMConfig:
    """The small LLaVA-style model: a CLIP vision tower, a 2-layer projector, a small Llama."""

    patch_size: int = _f(16, "vision patch side in pixels (16 = one patch per 64/4 cell)")
    vision_hidden: int = _f(64, "vision tower width")
    vision_layers: int = _f(2, "vision tower blocks")
    vision_heads: int = _f(4, "vision tower attention heads")
    vision_intermediate: int = _f(128, "vision tower MLP width")
    hidden_size: int = _f(96, "language model width (the project's Llama)")
    n_layers: int = _f(2, "language model blocks")
    n_heads: int = _f(8, "language model attention heads")
    n_kv_heads: int = _f(8, "language model key/value heads")
    intermediate_size: int = _f(256, "language model MLP width")
    max_position_embeddings: int = _f(64, "longest sequence: image tokens + prompt + answer")
    select: Literal["default", "full"] = _f(
        "default", "LLaVA's vision_feature_select_strategy: default drops CLIP's class token (one token per cell)")
    init_std: float = _f(0.1, "std of the language model's normal weight init (0.02 did not learn the "
                              "look-up a question needs in 2,000 steps; 0.1 did in ~400)")
    projector_std: float = _f(0.1, "std of the projector's weight init (its output then has the word embeddings' scale)")
    init_seed: int = _f(0, "seed of the weight init (the run's seed is added)")

    def __post_init__(self) -> None:
        check_choices(self, "vlm")
        sizes = ("patch_size", "vision_hidden", "vision_layers", "vision_heads", "vision_intermediate", "hidden_size",
                 "n_layers", "n_heads", "n_kv_heads", "intermediate_size", "max_position_embeddings")
        small = [f"{n}={getattr(self, n)}" for n in sizes if getattr(self, n) < 1]
        if small:
            raise ValueError(f"vlm sizes must all be >= 1: {', '.join(small)}")
        if self.vision_hidden % self.vision_heads:
            raise ValueError(f"vlm.vision_hidden ({self.vision_hidden}) must be divisible by "
                             f"vlm.vision_heads ({self.vision_heads})")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"vlm.hidden_size ({self.hidden_size}) must be divisible by vlm.n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"vlm.n_heads ({self.n_heads}) must be divisible by vlm.n_kv_heads ({self.n_kv_heads})")
        if self.init_std < 0 or self.projector_std < 0:
            raise ValueError("vlm.init_std and vlm.projector_std must be >= 0")


def check_patches(vlm: VLMConfig, model_section: str, image_size: int, data_section: str) -> None:
    """The vision tower cuts the image into `patch_size` squares: refuse an image side it does
    not divide when the two sections are read together, before any training (`build_vlm`
    would refuse it only after the data is loaded)."""
    if image_size % vlm.patch_size:
        raise ConfigError(f"{model_section}.vlm.patch_size ({vlm.patch_size}) must divide {data_section}.image_size "
                          f"({image_size}): the vision tower cuts the image into patches of that side")


@dataclass
class ITMConfig:
    """The tiny image-text matching model whose Grad-CAM gives PND its views (BLIP's ITM, small)."""

    vision_hidden: int = _f(64, "vision encoder width")
    vision_layers: int = _f(2, "vision encoder blocks")
    text_hidden: int = _f(64, "text encoder width")
    text_layers: int = _f(4, "text encoder blocks (each with cross-attention to the image)")
    heads: int = _f(4, "attention heads")
    intermediate: int = _f(128, "MLP width")
    embed_dim: int = _f(32, "ITC projection width")
    init_std: float = _f(0.1, "std of the normal weight init")
    align_weight: float = _f(1.0, "weight of the patch-to-cell-word alignment loss (as the VLM's)")
    itc_weight: float = _f(1.0, "weight of BLIP's image-text contrastive loss beside the ITM loss")
    questions_per_image: int = _f(4, "training pairs per scene: POPE-style questions (half match)")
    captions: bool = _f(False, "also caption pairs (the scene's own and another scene's)")

    def __post_init__(self) -> None:
        sizes = ("vision_hidden", "vision_layers", "text_hidden", "text_layers", "heads", "intermediate", "embed_dim")
        small = [f"{n}={getattr(self, n)}" for n in sizes if getattr(self, n) < 1]
        if small:
            raise ValueError(f"itm sizes must all be >= 1: {', '.join(small)}")
        for name in ("vision_hidden", "text_hidden"):
            if getattr(self, name) % self.heads:
                raise ValueError(f"itm.{name} ({getattr(self, name)}) must be divisible by itm.heads ({self.heads})")
        if min(self.init_std, self.align_weight, self.itc_weight) < 0 or self.questions_per_image < 0:
            raise ValueError("itm.init_std, itm.align_weight, itm.itc_weight and itm.questions_per_image must be >= 0")


@dataclass
class VisionTrainConfig:
    """Stage `vision_train`: the VLM over seeds (its weak checkpoint on the way) and the ITM model."""

    seeds: list[int] = _f([0, 1, 2], "training seeds of the VLM (each a model directory)")
    weak_step: int = _f(900, "the weak checkpoint: the same run saved at this optimizer step")
    questions_per_image: int = _f(4, "yes/no questions per training scene (half about present, half about absent shapes)")
    captions_per_image: int = _f(1, "caption examples per training scene")
    text_questions: bool = _f(True, "also the same questions over the scene written as a grid of words (text only)")
    align_weight: float = _f(1.0, "weight of the patch-to-cell-word alignment loss (0 = off; see vision/train.py)")
    vlm: VLMConfig = _f(VLMConfig, "the model")
    train: TrainConfig = _f(TrainConfig, "the training loop's settings for the VLM")
    itm: ITMConfig = _f(ITMConfig, "the saliency model")
    itm_train: TrainConfig = _f(TrainConfig, "the training loop's settings for the ITM model")
    workers: int = _f(2, "processes training models side by side (one thread each)")

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("vision_train.seeds must be a non-empty list of distinct seeds")
        if self.questions_per_image < 0 or self.captions_per_image < 0 or self.align_weight < 0:
            raise ValueError("vision_train: questions_per_image, captions_per_image and align_weight must be >= 0")
        if self.weak_step < 1:
            raise ValueError("vision_train.weak_step must be at least 1")
        if self.train.max_steps and self.weak_step > self.train.max_steps:
            raise ValueError(f"vision_train.weak_step ({self.weak_step}) is after the last step: it must be at most "
                             f"vision_train.train.max_steps ({self.train.max_steps})")
        if self.workers < 1:
            raise ValueError("vision_train.workers must be at least 1")


Method = Literal["greedy", "vcd", "agla", "m3id", "icd", "pnd", "pnd_attn"]
METHODS: tuple[str, ...] = ("greedy", "vcd", "agla", "m3id", "icd", "pnd", "pnd_attn")
# The hyper-parameters a method's tuning grid (`vision_eval.grids`) may set: the keys of
# vision/decoding.py's DEFAULTS (pnd_attn is pnd on the model's own attention). Repeated here
# so that reading the config does not import the decoder (torch, transformers);
# tests/vision/test_vision_config.py checks that the two agree.
GRID_PARAMS: dict[str, tuple[str, ...]] = {
    "greedy": (), "vcd": ("alpha", "beta"), "agla": ("alpha", "beta"), "icd": ("alpha", "beta"),
    "m3id": ("lam", "beta"), "pnd": ("alpha", "gamma", "beta"), "pnd_attn": ("alpha", "gamma", "beta"),
}


@dataclass
class VisionEvalConfig:
    """Stage `vision_eval`: POPE and CHAIR for every decoding method, its hyper-parameters
    tuned on the validation split, never on test."""

    methods: list[str] = _f(list(METHODS), "decoding methods to run (greedy always runs: it is the baseline)")
    noise_seeds: list[int] = _f([0, 1, 2], "seeds of the noised views (VCD, PND's negative)")
    caption_images: int = _f(100, "test scenes captioned for CHAIR")
    max_caption_tokens: int = _f(24, "cap on a generated caption")
    batch_size: int = _f(256, "sequences per forward")
    workers: int = _f(2, "processes evaluating checkpoints side by side (one thread each)")
    vcd_noise_step: int = _f(500, "VCD: diffusion step of the noised image (its POPE script's 500)")
    pnd_noise_step: int = _f(999, "PND: diffusion step of the destroyed region")
    pnd_threshold: float = _f(0.6, "PND: fused Grad-CAM at or above this is destroyed")
    icd_prefix: str = _f("you are a confused object detector", "ICD: the disturbance put before the instruction")
    attn_keep: float = _f(0.5, "PND on the model's own attention: fraction of pixels the positive view keeps "
                               "(no ITC score exists there)")
    grids: dict[str, dict[str, list[float]]] = _f({}, "tuning grids by method, replacing the defaults in "
                                                      "vision/run.py (first value of each list = the paper's default)")
    n_examples: int = _f(4, "example images with every method's answers in the report")

    def __post_init__(self) -> None:
        check_choices(self, "vision_eval")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"vision_eval.methods: unknown {unknown}; choose from {list(METHODS)}")
        if not self.noise_seeds:
            raise ValueError("vision_eval.noise_seeds must name at least one seed")
        if not 0 <= self.pnd_noise_step < 1000 or not 0 <= self.vcd_noise_step < 1000:
            raise ValueError("vision_eval: noise steps must be in [0, 999]")
        if self.batch_size < 1:
            raise ValueError(f"vision_eval.batch_size must be at least 1, got {self.batch_size}")
        for method, grid in self.grids.items():
            if method not in GRID_PARAMS:
                raise ValueError(f"vision_eval.grids.{method}: unknown method; choose from {list(GRID_PARAMS)}")
            unknown = sorted(set(grid) - set(GRID_PARAMS[method]))
            if unknown:
                raise ValueError(f"vision_eval.grids.{method}: unknown hyper-parameter(s) {unknown}; "
                                 f"{method}'s are {list(GRID_PARAMS[method])}")
            empty = [name for name, values in grid.items() if not values]
            if empty:
                raise ValueError(f"vision_eval.grids.{method}.{empty[0]}: empty; list at least one value")
