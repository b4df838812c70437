"""Training through the project's loop: the VLM (its weak checkpoint on the way) and the ITM
model; the loop itself is unchanged (images ride along as a per-sequence extra)."""

from __future__ import annotations

import dataclasses

import torch

from distillery.train.config import TrainConfig
from distillery.vision.config import ITMConfig, VisionTrainConfig, VLMConfig
from distillery.vision.train import (
    NO_IMAGE,
    cell_words,
    itm_examples,
    train_itm,
    train_vlm,
    vlm_examples,
)
from distillery.vision.vlm import EMPTY, n_image_tokens

SMALL = VLMConfig(vision_hidden=32, vision_intermediate=64, hidden_size=32, intermediate_size=64, n_heads=4,
                  n_kv_heads=4)
LOOP = TrainConfig(lr=3e-3, warmup_steps=2, max_steps=12, batch_size=16, weight_decay=0.0, bucket_by_length=False,
                   progress=False, dvclive=False, num_threads=1, log_every=4)


def test_examples_mix_images_text_grids_and_captions(scenes, pixels, tok, vlm):
    cfg = VisionTrainConfig(questions_per_image=2, captions_per_image=1)
    ex = vlm_examples(scenes[:6], pixels, tok, n_image_tokens(vlm), cfg, seed=0)
    assert len(ex) == 6 * (2 * 2 + 1)
    text_only = [e for e in ex if e.extras["image"] == NO_IMAGE]
    assert len(text_only) == 12 and tok.convert_tokens_to_ids("<image>") not in text_only[0].input_ids
    words = cell_words(scenes[0])
    assert len(words) == 16 and words.count(EMPTY) == 16 - len(scenes[0].objects)
    assert ex == vlm_examples(scenes[:6], pixels, tok, n_image_tokens(vlm), cfg, seed=0)     # deterministic


def test_vlm_trains_and_keeps_its_weak_checkpoint(tmp_path, scenes, tok):
    import numpy as np

    from distillery.vision.scenes import render
    from distillery.vision.vlm import to_pixels

    train = [s for s in scenes if s.split == "train"][:24]
    bank = to_pixels([np.asarray(render(s)) for s in train])
    cfg = VisionTrainConfig(seeds=[0], weak_step=4, questions_per_image=2, vlm=SMALL, train=LOOP)
    run = train_vlm(train, bank, tok, cfg, 0, tmp_path / "run")
    hist = [r["train/loss"] for r in run.result.history if "train/loss" in r]
    assert hist[-1] < hist[0]
    assert "train/align_acc" in run.result.history[0]
    changed = [not torch.equal(a, b) for a, b in zip(run.model.parameters(), run.weak.parameters(), strict=True)]
    assert any(changed)                                      # the weak checkpoint is an earlier model
    assert (tmp_path / "run" / "checkpoints" / "step-4").is_dir()
    # a rerun with the same config and data resumes from the end: nothing left to train
    again = train_vlm(train, bank, tok, cfg, 0, tmp_path / "run")
    assert again.result.resumed_from == 12
    assert all(torch.equal(a, b) for a, b in zip(run.model.parameters(), again.model.parameters(), strict=True))


def test_itm_trains(tmp_path, scenes, tok):
    import numpy as np

    from distillery.vision.scenes import render
    from distillery.vision.vlm import to_pixels

    train = [s for s in scenes if s.split == "train"][:24]
    bank = to_pixels([np.asarray(render(s)) for s in train])
    cfg = ITMConfig(vision_hidden=32, text_hidden=32, intermediate=64, text_layers=2, init_std=0.02)
    ex = itm_examples(train, bank, tok, 0, questions=2, captions=True)
    assert {e.extras["match"] for e in ex} == {0.0, 1.0}
    model, result = train_itm(train, bank, tok, cfg, dataclasses.replace(LOOP, lr=1e-3), tmp_path / "itm")
    hist = [r["train/loss"] for r in result.history if "train/loss" in r]
    assert hist[-1] < hist[0]
