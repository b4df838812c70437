"""`card.json`: what a model directory records about where it came from (DESIGN.md §3).

    card = build_card(params=params["warmup"], seed=cfg.seed, data_files=[episodes, steps],
                      metrics=result.metrics, prompt=prompt_cfg, model_cfg=mcfg, train_cfg=tcfg)
    save_model_dir("models/warmup", model, tok, card)

Keys: ``format``, ``prompt`` (the `PromptConfig` the model was trained with: `HFPolicy` and
`distillery serve` render prompts with it), ``params`` (the resolved stage params),
``model`` and ``train`` (resolved configs), ``seed``, ``data`` (sha256 of every input file;
a directory hashes its files by relative path), ``metrics``, ``n_params``, ``versions``
(python and the ML libraries), and whatever ``extra`` adds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

CARD_FORMAT = "distillery.model-card/1"
LIBRARIES = ("distillery", "torch", "transformers", "tokenizers", "accelerate", "peft", "safetensors")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """A file's sha256; a directory's is the sha256 of its files' relative paths and hashes."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such file or directory (listed as a data input of the card)")
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def hash_inputs(paths: Iterable[str | Path]) -> dict[str, str]:
    """{path as given: sha256}, in the order given."""
    return {str(p): sha256_path(p) for p in paths}


def source_fingerprint(root: str | Path | None = None) -> str:
    """sha256 of the distillery package's source (or of `root`'s): every ``.py`` file under
    it, by relative path and content. Checkpoints record it, so that a run resumes only work
    written by the same code: DVC reruns a stage when its code changes, and resuming
    iterations the old code finished would record their results as the new code's."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def resumable_run_dir(root: str | Path, cfg: Any, inputs: Iterable[str | Path]) -> Path:
    """`root/<fingerprint>`, where the fingerprint hashes the config (a dataclass), the
    package's source (`source_fingerprint`) and the bytes of each input file (a missing one
    counts as "-"; stages list their own module among them), so a rerun resumes only the same
    configuration of the same code on the same inputs. Other runs under `root` are deleted: a
    changed config, code or input must never resume stale iterations."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    h.update(source_fingerprint().encode())
    for p in inputs:
        h.update(Path(p).read_bytes() if Path(p).is_file() else b"-")
    root = Path(root)
    run_dir = root / h.hexdigest()[:12]
    if root.is_dir():
        for old in root.iterdir():
            if old != run_dir:
                shutil.rmtree(old, ignore_errors=True)
    return run_dir


def iteration_logger(live: Any) -> Callable[[dict[str, float], int], None]:
    """`log(row, it)` for a DVCLive `Live`: row's metrics at step it + 1, so step 0 is the
    starting model (it = -1) and step k the model after iteration k - 1. The internalize,
    rl, distill and selskill stages pass it to their loops (through `iteration_log`)."""

    def log(row: dict[str, float], it: int) -> None:
        live.step = it + 1
        for k, v in row.items():
            live.log_metric(k, v)
        live.next_step()

    return log


@contextlib.contextmanager
def iteration_log(live_dir: str | Path) -> Iterator[Callable[[dict[str, float], int], None]]:
    """An `iteration_logger` on a DVCLive run in `live_dir` that leaves dvc.yaml and the
    experiment refs alone (DVC owns those)."""
    from dvclive import Live

    with Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        yield iteration_logger(live)


def card_prompt(model_dir: str | Path) -> dict[str, Any]:
    """The prompt format a model directory's card records, as written ({} without a card):
    a model trained from it is run with the same format."""
    from distillery.lm.model import CARD_FILE, ModelLoadError, read_card

    card = Path(model_dir) / CARD_FILE
    prompt = read_card(card).get("prompt", {})
    if not isinstance(prompt, dict):
        raise ModelLoadError(f"{card}: prompt must be an object of prompt settings")
    return prompt


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def build_card(
    *,
    prompt: Any,
    seed: int,
    data_files: Iterable[str | Path] = (),
    metrics: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    model_cfg: Any = None,
    train_cfg: Any = None,
    model: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of a trained model. `prompt` is a `PromptConfig` (or its dict): required,
    because a model is only usable with the prompt format it learned."""
    prompt = _plain(prompt)
    if not isinstance(prompt, Mapping) or "style" not in prompt:
        raise ValueError("build_card: `prompt` must be the PromptConfig the model was trained with")
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "prompt": dict(prompt),
        "seed": int(seed),
        "data": hash_inputs(data_files),
        "metrics": dict(metrics or {}),
        "versions": versions(),
    }
    if params is not None:
        card["params"] = dict(params)
    if model_cfg is not None:
        card["model"] = _plain(model_cfg)
    if train_cfg is not None:
        card["train"] = _plain(train_cfg)
    if model is not None:
        card["n_params"] = sum(p.numel() for p in model.parameters())
        card["n_trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for k, v in (extra or {}).items():
        if k in card:
            raise ValueError(f"build_card: extra key {k!r} would overwrite the card's own {k!r}")
        card[k] = v
    return card
