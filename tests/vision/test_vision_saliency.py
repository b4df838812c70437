"""PND's views: Grad-CAM of the ITM model, the positive (kept) and negative (destroyed) views."""

from __future__ import annotations

import torch

from distillery.vision.config import ITMConfig
from distillery.vision.saliency import (
    Saliency,
    attention_map,
    attention_saliency,
    build_itm,
    fuse_min,
    itm_gradcam,
    negative_view,
    pnd_maps,
    positive_view,
)
from distillery.vision.vlm import CAPTION_PROMPT, QUESTION, n_image_tokens, prompt_ids, vlm_inputs


def test_itm_gradcam_shapes_and_determinism(tok, pixels):
    model = build_itm(ITMConfig(vision_hidden=32, text_hidden=32, intermediate=64), tok)
    texts = [QUESTION.format(shape="circle"), CAPTION_PROMPT, QUESTION.format(shape="star")]
    a = itm_gradcam(model, tok, pixels[:3], texts)
    b = itm_gradcam(model, tok, pixels[:3], texts, batch_size=2)          # batching changes nothing
    assert a.cams.shape == (3, 4, 16) and a.itc.shape == (3,)
    assert torch.allclose(a.cams, b.cams, atol=1e-6) and (a.cams >= 0).all()
    assert all(p.grad is None for p in model.parameters())               # no gradient left behind


def test_attention_map_is_normalised_and_follows_the_peak():
    cam = torch.zeros(1, 16)
    cam[0, 5] = 1.0                              # row 1, column 1
    m = attention_map(cam, 64)
    assert m.shape == (1, 64, 64) and m.min() == 0 and m.max() == 1
    assert m[0, 16:32, 16:32].mean() > 0.5 > m[0, 48:, 48:].mean()


def test_positive_view_keeps_the_asked_fraction():
    px = torch.rand(2, 3, 8, 8)
    cam = torch.arange(64, dtype=torch.float32).view(1, 8, 8).expand(2, 8, 8)
    out = positive_view(px, cam, torch.tensor([0.25, 0.5]))
    kept = (out != 0).any(1).flatten(1).sum(1)
    assert kept.tolist() == [17, 33]             # the top k (LAVIS thresholds at the k-th value, inclusive)
    assert torch.equal(out[0, :, 7, 7], px[0, :, 7, 7]) and (out[0, :, 0, 0] == 0).all()


def test_negative_view_noises_only_the_core():
    px = torch.full((1, 3, 8, 8), 0.5)
    fused = torch.zeros(1, 8, 8)
    fused[0, :2, :2] = 1.0
    out = negative_view(px, fused, threshold=0.6, step=999, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0, :, 2:, :], px[0, :, 2:, :])
    assert not torch.allclose(out[0, :, :2, :2], px[0, :, :2, :2])
    assert out.min() >= 0 and out.max() <= 1


def test_pnd_maps_and_fusion():
    cams = torch.rand(2, 4, 16)
    pos, neg, keep = pnd_maps(Saliency(cams, torch.tensor([0.8, -0.2])), 64)
    assert pos.shape == neg.shape == (2, 64, 64)
    assert keep.tolist() == [0.6000000238418579, 1.100000023841858]      # 1 − ITC/2 (clamped when used)
    f = fuse_min([torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[0.5, 0.2]]])])
    assert f.tolist() == [[[0.0, 1.0]]]


def test_own_attention_saliency(vlm, tok, pixels):
    n = n_image_tokens(vlm)
    inp = vlm_inputs(tok, pixels[:2], [prompt_ids(tok, n, CAPTION_PROMPT), prompt_ids(tok, n, "is there a star in the image ?")])
    with torch.no_grad():
        out = vlm(**inp, output_attentions=True)
    sal = attention_saliency(out.attentions, inp["input_ids"] == vlm.config.image_token_id)
    assert sal.shape == (2, vlm.config.text_config.num_hidden_layers, n) and (sal >= 0).all()
