"""Bad input gets a clear error naming the item; the tokenizer and model directories round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillery.lm.model import save_model_dir
from distillery.vision.vlm import (
    CAPTION_PROMPT,
    QUESTION,
    VisionInputError,
    encode_words,
    load_images,
    load_png,
    load_vlm_dir,
    n_image_tokens,
    prompt_ids,
    to_pixels,
    vlm_inputs,
)


def test_wrong_size_names_the_image():
    with pytest.raises(VisionInputError, match=r"scene-7: image is 32x32, the model takes 64x64"):
        to_pixels([np.zeros((32, 32, 3), dtype=np.uint8)], ["scene-7"])


def test_wrong_mode_names_the_image():
    from PIL import Image

    with pytest.raises(VisionInputError, match=r"gray\.png: image mode 'L'"):
        to_pixels([Image.new("L", (64, 64))], ["gray.png"])
    with pytest.raises(VisionInputError, match="uint8"):
        to_pixels([np.zeros((64, 64, 3), dtype=np.float32)], ["floats"])


def test_corrupt_png_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(VisionInputError, match="broken.png: not a readable PNG"):
        load_png(bad)
    with pytest.raises(VisionInputError, match="broken.png"):
        load_images([bad])


def test_empty_prompt_is_refused(tok):
    with pytest.raises(VisionInputError, match="instruction is empty"):
        prompt_ids(tok, 16, "   ")
    with pytest.raises(VisionInputError, match="prompt 1: empty"):
        vlm_inputs(tok, None, [[1, 2], []])
    with pytest.raises(VisionInputError, match="outside the model's vocabulary"):
        prompt_ids(tok, 16, "is there a dragon in the image ?")


def test_words_are_single_tokens(tok):
    ids = encode_words(tok, QUESTION.format(shape="circle"))
    assert len(ids) == 8 and tok.unk_token_id not in ids
    assert tok.decode(ids) == QUESTION.format(shape="circle")


def test_memoised_ids_are_the_tokenizers_and_a_callers_edit_does_not_reach_the_memo(tok):
    text = CAPTION_PROMPT
    first = encode_words(tok, text)
    assert first == list(tok(text, add_special_tokens=False)["input_ids"])
    first.append(tok.eos_token_id)          # a caller building a sequence from the ids
    assert encode_words(tok, text) == first[:-1]


def test_model_directory_round_trip(tmp_path, vlm, tok, pixels):
    save_model_dir(tmp_path / "m", vlm, tok, {"prompt": {"style": "vision"}})
    model, tok2, card = load_vlm_dir(tmp_path / "m")
    assert card["prompt"]["style"] == "vision"
    inp = vlm_inputs(tok, pixels[:2], [prompt_ids(tok, n_image_tokens(vlm), CAPTION_PROMPT)] * 2)
    with torch.no_grad():
        assert torch.allclose(model(**inp).logits, vlm(**inp).logits, atol=1e-5)
    assert tok2.padding_side == "left"


def test_serve_refuses_a_vision_model_by_name(tmp_path, vlm, tok):
    from distillery.serve import ServeError, load_engine

    save_model_dir(tmp_path / "vlm", vlm, tok, {"prompt": {"style": "vision"}})
    with pytest.raises(ServeError, match=r"vlm is a vision-language model.*text models only"):
        load_engine(tmp_path / "vlm")


def test_serve_refuses_an_image_text_model_whose_card_names_no_prompt_style(tmp_path, vlm, tok):
    # The table-image track's cards say nothing of prompts: the config's vision tower tells.
    from distillery.serve import ServeError, load_engine

    save_model_dir(tmp_path / "tables", vlm, tok, {"metrics": {}})
    with pytest.raises(ServeError, match=r"tables is a vision-language model.*text models only"):
        load_engine(tmp_path / "tables")
