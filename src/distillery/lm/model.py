"""Building, saving and loading the policy model.

- `ModelConfig`: the `model` part of a stage's params. ``name_or_path = ""`` builds a
  Llama-family decoder from scratch (a few million parameters by default) sized to the
  tokenizer; anything else loads that checkpoint (a local directory, or a hub id that must
  already be in the local cache: with ``HF_HUB_OFFLINE=1`` nothing reaches the network).
  ``lora_r > 0`` wraps the model in PEFT LoRA adapters so only they train.
- `build_model(cfg, tokenizer) -> model`
- `save_model_dir(path, model, tokenizer, card)`: the model directory of DESIGN.md: weights
  (safetensors), tokenizer, ``config.json`` and ``card.json``, written into a temporary
  sibling and renamed into place, so a killed stage never leaves a half directory. LoRA
  adapters are *merged* into a copy of the weights before saving (the training model stays
  a PEFT model): a saved directory is always a plain transformers checkpoint that
  `AutoModelForCausalLM`, `distillery serve`, vLLM or any other tool can load; the card
  records the LoRA settings it was trained with.
- `load_model_dir(path) -> LoadedModel(model, tokenizer, card)` (a NamedTuple, so
  ``model, tok, card = load_model_dir(p)`` works); ``card`` is ``{}`` for a plain HF
  checkpoint.
- `read_checkpoint(source, part, load)`: runs one of transformers' loaders; a damaged
  checkpoint is a `ModelLoadError` (a ValueError) naming the directory and the part.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch

from distillery.config import _f
from distillery.io import MissingInput, json_error, require, stage_writing

CARD_FILE = "card.json"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

T = TypeVar("T")
NOT_FOUND_HINT = ("Give a local checkpoint directory, or a hub id already in the local Hugging Face cache "
                  "(nothing is downloaded while HF_HUB_OFFLINE=1)")


class ModelLoadError(ValueError):
    """A checkpoint that transformers could not read: the message names the directory and
    the part (config, weights, tokenizer, card), so commands report it in one line."""


def read_checkpoint(source: str | Path, part: str, load: Callable[[], T], *, hint: str = "") -> T:
    """`load()` (one of transformers' loaders over `source`), or a `ModelLoadError` naming
    `part`. `hint` follows the reason when the checkpoint could not be found (an OSError)."""
    try:
        return load()
    except Exception as e:  # each library raises its own kinds on a damaged file
        # (safetensors' SafetensorError, huggingface_hub's validation errors, tokenizers'
        # Exception, json's ValueError, torch's RuntimeError on a shape mismatch)
        reason = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        if len(reason) > 400:
            reason = reason[:400] + " …"
        tail = f". {hint}" if hint and isinstance(e, OSError) else ""
        raise ModelLoadError(f"{source}: cannot load the {part} ({reason}){tail}") from e


@dataclass
class ModelConfig:
    """The policy model: from scratch (a Llama-family config) or a checkpoint, optionally LoRA."""

    name_or_path: str = _f("", "'' = a new model from scratch; else a local checkpoint directory or a cached hub id")
    vocab_size: int = _f(0, "from scratch: 0 = the tokenizer's size (the usual case)")
    hidden_size: int = _f(256, "from scratch: width of the residual stream")
    n_layers: int = _f(4, "from scratch: transformer blocks")
    n_heads: int = _f(4, "from scratch: attention heads (hidden_size must divide by it)")
    n_kv_heads: int = _f(2, "from scratch: key/value heads (grouped-query attention; divides n_heads)")
    intermediate_size: int = _f(704, "from scratch: MLP width (SwiGLU)")
    max_position_embeddings: int = _f(1024, "from scratch: longest sequence (prompt + action) in tokens")
    rope_theta: float = _f(10000.0, "from scratch: RoPE base")
    tie_embeddings: bool = _f(True, "from scratch: share input and output embeddings (saves vocab x hidden params)")
    init_std: float = _f(0.02, "from scratch: std of the normal weight init")
    init_seed: int = _f(0, "from scratch: seed of the weight init (the global RNG is left untouched)")
    dtype: str = _f("float32", "weights dtype: float32 | bfloat16 | float16 (training uses autocast on top)")
    lora_r: int = _f(0, "LoRA rank; 0 = off (train every weight)")
    lora_alpha: int = _f(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = _f(0.0, "dropout on the LoRA branch input")
    lora_target_modules: list[str] = _f(list(_LLAMA_LINEAR), "modules that get adapters; ['all-linear'] = every linear but the head")

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, not {self.dtype!r}")
        if self.lora_r < 0:
            raise ValueError("model.lora_r must be >= 0 (0 turns LoRA off)")
        if self.lora_r and not self.lora_target_modules:
            raise ValueError("model.lora_target_modules is empty: name the modules that get adapters")
        if not self.name_or_path:
            if min(self.hidden_size, self.n_layers, self.n_heads, self.n_kv_heads, self.intermediate_size) < 1:
                raise ValueError("model sizes (hidden_size, n_layers, n_heads, n_kv_heads, "
                                 "intermediate_size) must all be >= 1")
            if self.hidden_size % self.n_heads:
                raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                                 f"model.n_heads ({self.n_heads})")
            if self.n_heads % self.n_kv_heads:
                raise ValueError(f"model.n_heads ({self.n_heads}) must be divisible by "
                                 f"model.n_kv_heads ({self.n_kv_heads})")


class LoadedModel(NamedTuple):
    model: Any          # a transformers PreTrainedModel, in eval mode
    tokenizer: Any      # a PreTrainedTokenizerFast
    card: dict[str, Any]


def n_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(cfg: ModelConfig, tokenizer: Any = None) -> Any:
    """A causal LM per `cfg`: from scratch sized to `tokenizer`, or a loaded checkpoint.

    The tokenizer gives the vocabulary size and the pad/eos ids recorded in the model's
    config (generation stops on eos). A checkpoint whose embeddings are smaller than the
    tokenizer (markers were added with `lm.tokenizer.ensure_markers`) is resized.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    dtype = _DTYPES[cfg.dtype]
    pad_id = getattr(tokenizer, "pad_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if not cfg.name_or_path:
        vocab = cfg.vocab_size or (len(tokenizer) if tokenizer is not None else 0)
        if vocab < 1:
            raise ValueError("build_model: from scratch needs a tokenizer or model.vocab_size > 0")
        if tokenizer is not None and vocab < len(tokenizer):
            raise ValueError(f"model.vocab_size {vocab} is smaller than the tokenizer ({len(tokenizer)} "
                             "tokens); set it to 0 to follow the tokenizer")
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
            rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
            initializer_range=cfg.init_std, pad_token_id=pad_id, eos_token_id=eos_id,
            bos_token_id=None,
        )
        # The init draws from its own seeded stream: building a model must not shift the
        # caller's RNG (which seeds data order and sampling).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = LlamaForCausalLM(config)
        model = model.to(dtype)
    else:
        model = read_checkpoint(
            f"model.name_or_path={cfg.name_or_path!r}", "model",
            lambda: AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=dtype),
            hint=NOT_FOUND_HINT)
        if tokenizer is not None:
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
            if pad_id is not None and model.config.pad_token_id is None:
                model.config.pad_token_id = pad_id
    if cfg.lora_r:
        model = add_lora(model, cfg)
    return model


def add_lora(model: Any, cfg: ModelConfig) -> Any:
    """Wrap `model` in LoRA adapters (PEFT); only the adapters stay trainable."""
    from peft import LoraConfig, get_peft_model

    targets: Any = cfg.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise ValueError(f"model.lora_target_modules={cfg.lora_target_modules}: {e}") from e


def is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def plain_model(model: Any) -> Any:
    """The model as a plain transformers model: LoRA merged into a copy, else itself."""
    if is_peft(model):
        return copy.deepcopy(model).merge_and_unload()
    return model


def deepen(model: Any, n_layers: int) -> Any:
    """Grow a Llama-family model in place to `n_layers` decoder blocks, appending copies of
    its last block whose attention output and MLP down projections are zero: each new block
    adds nothing to the residual stream, so the grown model computes exactly what the
    original did, and training then uses the new depth. (Depth growth with identity blocks,
    as in progressive stacking; the copies give the new blocks' other weights a trained
    scale instead of a random one.) Returns the model."""
    layers = model.model.layers
    if n_layers < len(layers):
        raise ValueError(f"deepen: the model has {len(layers)} layers already; asked for {n_layers}")
    for i in range(len(layers), n_layers):
        block = copy.deepcopy(layers[-1])
        block.self_attn.layer_idx = i
        with torch.no_grad():
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        layers.append(block)
    model.config.num_hidden_layers = n_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = (list(model.config.layer_types) + [model.config.layer_types[-1]] * n_layers)[:n_layers]
    return model


def save_model_dir(path: str | Path, model: Any, tokenizer: Any, card: dict[str, Any] | None = None) -> Path:
    """Write the model directory atomically: a temporary sibling, then a rename.

    Contents: ``model.safetensors`` (weights; LoRA merged), ``config.json``,
    ``generation_config.json``, the tokenizer files and ``card.json``. An existing
    directory at `path` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        plain = plain_model(model)
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD_FILE).write_text(json.dumps(card or {}, indent=2, sort_keys=True, default=str) + "\n")
        os.chmod(tmp, 0o755)        # mkdtemp makes it private; a model dir is ordinary output
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace_dir(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, replacing a directory there. At every instant one complete
    version exists: the old one is renamed aside first and deleted last."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_model_dir(path: str | Path, *, dtype: str | None = None) -> LoadedModel:
    """Load a directory written by `save_model_dir`, or any local transformers checkpoint.

    Returns the model in eval mode, its tokenizer and its card (``{}`` without card.json).
    `dtype` overrides the saved weights' dtype (float32 | bfloat16 | float16).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    require(path, stage_writing(path))
    if not (path / "config.json").is_file():
        raise MissingInput(f"{path}: not a model directory (no config.json); expected one written "
                                "by lm.model.save_model_dir or a transformers checkpoint")
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    card = read_card(path / CARD_FILE)
    config = read_checkpoint(path, "config (config.json)", lambda: AutoConfig.from_pretrained(path))
    model = read_checkpoint(path, "weights", lambda: AutoModelForCausalLM.from_pretrained(
        path, config=config, dtype=_DTYPES[dtype] if dtype else "auto")).eval()
    tokenizer = read_checkpoint(path, "tokenizer", lambda: AutoTokenizer.from_pretrained(path))
    return LoadedModel(model, tokenizer, card)


def read_card(card_file: Path) -> dict[str, Any]:
    """A model directory's card.json, ``{}`` where there is none."""
    if not card_file.is_file():
        return {}
    try:
        card = json.loads(card_file.read_bytes())
    except ValueError as e:     # not JSON, not UTF-8, or a number too long to convert
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"not valid JSON ({json_error(e)})"
        raise ModelLoadError(f"{card_file}: {reason}") from e
    if not isinstance(card, dict):
        raise ModelLoadError(f"{card_file}: expected a JSON object (the model card), got {type(card).__name__}")
    return card
