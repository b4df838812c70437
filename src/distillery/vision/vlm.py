"""The small vision-language model: LLaVA built from `transformers` configs.

    tok = build_tokenizer()
    model = build_vlm(VLMConfig(), tok, image_size=64, seed=0)   # CLIP tower + projector + Llama
    pixels = to_pixels(images, names)                           # [B, 3, H, W] in [0, 1], checked
    out = model(**vlm_inputs(tok, pixels, prompts))              # the usual transformers call

- **Architecture.** `LlavaForConditionalGeneration(LlavaConfig(CLIPVisionConfig, LlamaConfig))`:
  a small CLIP vision tower whose 16-pixel patches line up with the scene's cells, LLaVA's
  two-layer GELU projector, and the project's small Llama (the same `LlamaConfig` fields
  `lm.model.build_model` sets). The prompt is the image's patch tokens (``<image>`` repeated,
  one per patch, as transformers' LLaVA expects), then the instruction; the answer follows.
- **Tokenizer.** Word level over the closed vocabulary of the scenes (shapes, colours,
  the question and caption words) plus ``<pad>``, ``<eos>``, ``<unk>`` and ``<image>``: every
  word is one token, which a model this small needs (`lm.tokenizer`'s byte-level BPE makes
  each space a token too, doubling the sequence).
- **Training through the project's loop.** `train.loop.train` batches token sequences; the
  image rides along as a per-sequence extra (``image``: its row in a pixel bank), and the
  objectives (`vision.train.vlm_objective`, `vision.table_rl.table_objective`, both over
  `answer_loss`) look the pixels up. The loop itself is unchanged. The
  bank's content hash is a second extra (``image_crc``), so the loop's data fingerprint, and
  with it checkpoint resume, covers the pixels too.
- **Inputs are checked.** `to_pixels` refuses an image of the wrong size or mode, `load_png`
  a corrupt file, `vlm_inputs` an empty prompt, each naming the item.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from distillery.io import MissingInput, require, stage_writing
from distillery.lm.encoding import encode
from distillery.train.data import Example, example_from_mask
from distillery.train.losses import IGNORE_INDEX, sft_loss
from distillery.vision.config import VLMConfig
from distillery.vision.scenes import COLOURS, SHAPES

PAD, EOS, UNK, IMAGE, ENC = "<pad>", "<eos>", "<unk>", "<image>", "<enc>"
SPECIALS = (PAD, EOS, UNK, IMAGE, ENC)
EMPTY = "empty"                  # an empty cell, in the text-only grids and the alignment targets
QUESTION = "is there a {shape} in the image ?"
CAPTION_PROMPT = "describe the image ."
WORDS = ("a", ",", "and", ".", "is", "there", "in", "the", "image", "?", "yes", "no", "describe", EMPTY,
         "you", "are", "confused", "object", "detector")
PROMPT_FORMAT = {"style": "vision", "image_token": IMAGE, "question": QUESTION, "caption": CAPTION_PROMPT,
                 "order": "image tokens, then the instruction, then the answer and <eos>"}


class VisionInputError(ValueError):
    """An image or prompt the model cannot take; the message names the item."""


# ---------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------


def vocabulary(extra: Sequence[str] = ()) -> list[str]:
    words = [*SPECIALS, *WORDS, *SHAPES, *COLOURS]
    for w in extra:
        if w not in words:
            words.append(w)
    return words


def build_tokenizer(extra_words: Sequence[str] = ()) -> Any:
    """A word-level `PreTrainedTokenizerFast` over the scenes' closed vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary(extra_words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                  extra_special_tokens=[IMAGE, ENC], clean_up_tokenization_spaces=False)
    tok.padding_side = "left"          # generation pads on the left
    return tok


def encode_words(tok: Any, text: str) -> list[int]:
    """The ids of `text`'s words (memoised on the tokenizer: `lm.encoding`)."""
    return encode(tok, text)


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------


def load_png(data: bytes | str | Path, name: str = "") -> Any:
    """A PIL image from PNG bytes or a path; a corrupt or missing file raises
    `VisionInputError` naming it."""
    from PIL import Image, UnidentifiedImageError

    label = name or (str(data) if not isinstance(data, bytes) else "<bytes>")
    try:
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise VisionInputError(f"{label}: not a readable PNG image ({e})") from e
    return img


def to_pixels(images: Sequence[Any], names: Sequence[str] | None = None, *, size: int = 64) -> torch.Tensor:
    """[B, 3, size, size] float32 in [0, 1] from PIL RGB images or [H, W, 3] uint8 arrays.
    An image of another size, mode or dtype raises `VisionInputError` naming the item."""
    if not images:
        raise VisionInputError("to_pixels: no images")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, (img, name) in enumerate(zip(images, names, strict=True)):
        if hasattr(img, "mode"):
            if img.mode != "RGB":
                raise VisionInputError(f"{name}: image mode {img.mode!r}, the model takes 'RGB' "
                                       "(convert it with image.convert('RGB'))")
            arr = np.asarray(img)
        else:
            arr = np.asarray(img)
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise VisionInputError(f"{name}: expected an [H, W, 3] uint8 array, got {arr.dtype} {arr.shape}")
        if arr.shape[:2] != (size, size):
            raise VisionInputError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, the model takes {size}x{size}")
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels to the vision tower's input (mean 0.5, std 0.5 per channel)."""
    return (pixels - 0.5) / 0.5


def pixel_crc(pixels: torch.Tensor) -> int:
    """A 24-bit content hash of one image's pixels (exact in float32, for the loop's data fingerprint)."""
    return zlib.crc32(pixels.mul(255).round().to(torch.uint8).numpy().tobytes()) & 0xFFFFFF


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def n_image_tokens(model_or_config: Any) -> int:
    cfg = getattr(model_or_config, "config", model_or_config)
    v = cfg.vision_config
    return (v.image_size // v.patch_size) ** 2 + (cfg.vision_feature_select_strategy == "full")


def build_vlm(cfg: VLMConfig, tok: Any, *, image_size: int = 64, seed: int = 0,
              attn_implementation: str = "eager") -> Any:
    """A LLaVA model with random weights, initialised from its own seeded stream (the
    caller's RNG is left alone). Eager attention: the PND ablation reads attention maps."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    if image_size % cfg.patch_size:
        raise ValueError(f"vlm.patch_size ({cfg.patch_size}) must divide the image size ({image_size})")
    vision = CLIPVisionConfig(image_size=image_size, patch_size=cfg.patch_size, hidden_size=cfg.vision_hidden,
                              intermediate_size=cfg.vision_intermediate, num_hidden_layers=cfg.vision_layers,
                              num_attention_heads=cfg.vision_heads, projection_dim=cfg.vision_hidden)
    n_img = (image_size // cfg.patch_size) ** 2 + (cfg.select == "full")
    text = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
                       tie_word_embeddings=True, initializer_range=cfg.init_std, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, bos_token_id=None)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE),
                         image_seq_length=n_img, vision_feature_layer=-1, vision_feature_select_strategy=cfg.select,
                         projector_hidden_act="gelu", tie_word_embeddings=True)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed + 1000 * seed)
        model = LlavaForConditionalGeneration(config)
        proj = model.model.multi_modal_projector
        for layer in (proj.linear_1, proj.linear_2):
            torch.nn.init.normal_(layer.weight, std=cfg.projector_std)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def prompt_ids(tok: Any, n_image: int, instruction: str, prefix: str = "") -> list[int]:
    """Image tokens, then `prefix` (a disturbance, for ICD) and the instruction."""
    if not instruction or not instruction.strip():
        raise VisionInputError("prompt: the instruction is empty; ask a question or give a caption prompt")
    words = f"{prefix} {instruction}".strip()
    ids = encode_words(tok, words)
    unk = [w for w, i in zip(words.split(), ids, strict=False) if i == tok.unk_token_id]
    if unk:
        raise VisionInputError(f"prompt {instruction!r}: words outside the model's vocabulary {unk}")
    return [tok.convert_tokens_to_ids(IMAGE)] * n_image + ids


def vlm_inputs(tok: Any, pixels: torch.Tensor | None, prompts: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids` and `attention_mask` for `prompts` (from `prompt_ids`) with
    their images' normalised `pixel_values` ([B, 3, H, W] in [0, 1] in; None: no image)."""
    for i, p in enumerate(prompts):
        if not p:
            raise VisionInputError(f"prompt {i}: empty")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if pixels is not None:
        if pixels.shape[0] != len(prompts):
            raise VisionInputError(f"{pixels.shape[0]} images for {len(prompts)} prompts")
        out["pixel_values"] = normalize(pixels)
    return out


# ---------------------------------------------------------------------------------------
# Training examples and the objective
# ---------------------------------------------------------------------------------------


def answer_example(tok: Any, n_image: int, instruction: str, answer: str, image: int, crc: int) -> Example:
    """One training sequence: prompt (no targets), then the answer and <eos> (targets)."""
    prompt = prompt_ids(tok, n_image, instruction)
    target = [*encode_words(tok, answer), tok.eos_token_id]
    return example_from_mask([*prompt, *target], [False] * len(prompt) + [True] * len(target),
                             {"image": float(image), "image_crc": float(crc)})


def target_logits(base: Any, batch: Any, pixels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """(logits, targets, rows, cols) at `batch`'s labelled positions for a VLM (`base`,
    unwrapped) given `pixels` for the batch's images (None: text only): logits [n, vocab] of
    the n positions whose next token is a target, that token, and where it sits in the batch.
    Like `train.loop.action_logits`, the LM head runs on those positions only."""
    hidden = base.model(input_ids=batch.input_ids, pixel_values=pixels, attention_mask=batch.attention_mask,
                        use_cache=False).last_hidden_state
    targets = batch.labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    return base.lm_head(hidden[:, :-1][rows, cols]), targets[rows, cols], rows, cols


def answer_loss(base: Any, batch: Any, pixels: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """Next-token loss on `batch`'s labelled tokens (`target_logits`), and their token accuracy."""
    logits, tgt, _, _ = target_logits(base, batch, pixels)
    loss = sft_loss(logits[None], tgt[None])
    with torch.no_grad():
        acc = float((logits.argmax(-1) == tgt).float().mean()) if len(tgt) else 0.0
    return loss, acc


# ---------------------------------------------------------------------------------------
# Model directories
# ---------------------------------------------------------------------------------------


class LoadedVLM(NamedTuple):
    model: Any
    tokenizer: Any
    card: dict[str, Any]


def load_vlm_dir(path: str | Path, attn_implementation: str = "eager") -> LoadedVLM:
    """A directory written by `lm.model.save_model_dir` for a VLM (or any local transformers
    image-text-to-text checkpoint): the model in eval mode, its tokenizer, its card."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = Path(path)
    require(path, stage_writing(path))
    if not (path / "config.json").is_file():
        raise MissingInput(f"{path}: not a model directory (no config.json); the vision_train or table_train "
                           "stage writes them")
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn_implementation).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    card_file = path / "card.json"
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    return LoadedVLM(model, tok, card)


def load_images(paths: Sequence[str | Path], names: Sequence[str] | None = None, *, size: int = 64) -> torch.Tensor:
    """[N, 3, size, size] in [0, 1] from PNG files; a corrupt file, or one of the wrong size
    or mode, raises `VisionInputError` naming it."""
    names = list(names) if names is not None else [str(p) for p in paths]
    images = [load_png(p, n) for p, n in zip(paths, names, strict=True)]
    return to_pixels(images, names, size=size)
