"""Decoding throughput of every contrastive method against greedy, in one run.

The same model, the same batch of captioning prompts (test scenes), the same number of
generated tokens: every method generates exactly `--tokens` tokens per row (no early stop),
through `vision.decoding.contrastive_generate`, so tokens/s compare like with like. Each
method's views are built before the clock starts (the ITM Grad-CAM of PND is per prompt, not
per token; its cost is reported on its own line). Rounds alternate the methods (A B C ... A B
C ...) and each method reports its best round: other work on a shared machine slows whatever
it overlaps, and the best round is the least disturbed.

Forwards per step are counted, not timed: greedy 1, VCD/AGLA/ICD/M3ID 2, PND 3 (its views'
prefixes are cached like the main input's: each step is one token per view).

    python bench/vision_decoding.py [--model models/vision/vlm-s0] [--batch 64] [--tokens 16] [--rounds 3]

Without --model, when the default model has not been trained, it uses an untrained model
built from the default `VLMConfig` and says so: the costs are the same, the captions are not
(likewise an untrained ITM model without --itm). A --model or --itm given that is not a model
directory is an error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from distillery.vision.config import ITMConfig, SceneConfig, VLMConfig
from distillery.vision.decoding import contrastive_generate
from distillery.vision.evaluate import ItmMaps, ViewConfig, ViewSet, method_of, method_views
from distillery.vision.saliency import build_itm, itm_gradcam, pnd_maps
from distillery.vision.scenes import generate_scenes, render
from distillery.vision.vlm import (
    CAPTION_PROMPT,
    build_tokenizer,
    build_vlm,
    load_vlm_dir,
    to_pixels,
)
from machine import (  # bench/, the script's own folder
    check_default_model_dir,
    model_dir,
    positive_int,
)

METHODS = ("greedy", "vcd", "agla", "icd", "m3id", "pnd", "pnd_attn")


DEFAULT_MODEL, DEFAULT_ITM = "models/vision/vlm-s0", "models/vision/itm"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=model_dir, default=None,
                    help=f"the VLM's model directory (default {DEFAULT_MODEL}; if that has not been trained, "
                         "an untrained VLMConfig() model, and the output says so)")
    ap.add_argument("--itm", type=model_dir, default=None,
                    help=f"the ITM model directory for PND's Grad-CAM (default {DEFAULT_ITM}; if that has not "
                         "been trained, an untrained ITMConfig() model)")
    ap.add_argument("--batch", type=positive_int, default=64, help="captioning prompts (test scenes) per batch")
    ap.add_argument("--tokens", type=positive_int, default=16, help="tokens every row generates, every method")
    ap.add_argument("--rounds", type=positive_int, default=3,
                    help="rounds over all the methods, alternating; each method's best round counts")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments; a model directory given that is not one, or a default one half-built, is
    refused before any work."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.model is None:
        check_default_model_dir(ap, "--model", DEFAULT_MODEL)
    if args.itm is None:
        check_default_model_dir(ap, "--itm", DEFAULT_ITM)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    model_dir, itm_dir = args.model or DEFAULT_MODEL, args.itm or DEFAULT_ITM
    if Path(model_dir).is_dir():
        model, tok, _ = load_vlm_dir(model_dir)
        what = model_dir
    else:
        tok = build_tokenizer()
        model = build_vlm(VLMConfig(), tok).eval()
        what = "an untrained VLMConfig() model (no trained model found)"
    if Path(itm_dir).is_dir():
        from transformers import BlipForImageTextRetrieval

        itm = BlipForImageTextRetrieval.from_pretrained(itm_dir, attn_implementation="eager").eval()
    else:
        itm = build_itm(ITMConfig(), tok).eval()
    scenes = [s for s in generate_scenes(SceneConfig(n_train=1, n_val=1, n_test=args.batch)) if s.split == "test"]
    pixels = to_pixels([np.asarray(render(s)) for s in scenes])

    t0 = time.perf_counter()
    sal = itm_gradcam(itm, tok, pixels, [CAPTION_PROMPT] * len(pixels))
    itm_s = time.perf_counter() - t0
    from distillery.vision.saliency import Saliency

    pos, neg, keep = pnd_maps(Saliency(sal.cams, sal.itc), pixels.shape[-1])
    vs, _ = ViewSet.build(model, tok, pixels, [CAPTION_PROMPT] * len(pixels), ItmMaps(pos, neg, keep), [0],
                          ViewConfig())
    views = vs.views(0)
    # no eos: every row generates exactly --tokens tokens under every method
    best: dict[str, float] = {}
    fwd: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in METHODS:
            d = contrastive_generate(model, vs.base, method_of(name, {}), method_views(name, views),
                                     max_new_tokens=args.tokens, eos_token_id=None, pad_token_id=tok.pad_token_id)
            rate = d.sequences.numel() / d.wall_s
            best[name] = max(best.get(name, 0.0), rate)
            fwd[name] = d.forwards_per_step
    print(f"model: {what}; batch {args.batch} x {args.tokens} tokens, {args.rounds} rounds, best of each, "
          f"{args.threads} thread(s)")
    print(f"{'method':<10} {'tokens/s':>10} {'vs greedy':>10} {'forwards/step':>14}")
    for name in METHODS:
        print(f"{name:<10} {best[name]:>10.0f} {best[name] / best['greedy']:>10.2f} {fwd[name]:>14.1f}")
    print(f"PND's ITM Grad-CAM (once per prompt, before decoding): {itm_s:.2f} s for {args.batch} prompts "
          f"({args.batch / itm_s:.0f} prompts/s)")


if __name__ == "__main__":
    main()
