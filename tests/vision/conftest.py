"""Tiny shared pieces for the vision tests: a few scenes, their pixels, an untrained VLM."""

from __future__ import annotations

import numpy as np
import pytest

from distillery.vision.config import SceneConfig, VLMConfig
from distillery.vision.scenes import generate_scenes, render
from distillery.vision.vlm import build_tokenizer, build_vlm, to_pixels

TINY = SceneConfig(n_train=40, n_val=6, n_test=8)


@pytest.fixture(scope="session")
def scenes():
    return generate_scenes(TINY)


@pytest.fixture(scope="session")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="session")
def pixels(scenes):
    return to_pixels([np.asarray(render(s)) for s in scenes[:6]])


@pytest.fixture(scope="session")
def vlm(tok):
    small = VLMConfig(vision_hidden=32, vision_intermediate=64, hidden_size=32, intermediate_size=64, n_heads=4,
                      n_kv_heads=2)
    return build_vlm(small, tok, seed=0).eval()
