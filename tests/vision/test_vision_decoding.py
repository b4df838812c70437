"""The decoding methods: their arithmetic worked by hand, the logits processors on our
LLaVA and on a differently shaped transformers VLM (Qwen2-VL, built from config), batched."""

from __future__ import annotations

import math

import pytest
import torch

from distillery.vision.decoding import (
    Method,
    ViewBranch,
    agla_logits,
    contrastive_generate,
    decode_first_token,
    diffusion_noise,
    first_token_logits,
    icd_logits,
    m3id_logits,
    plausibility_cutoff,
    pnd_logits,
    vcd_logits,
    with_pixels,
    without_image,
)
from distillery.vision.vlm import CAPTION_PROMPT, QUESTION, n_image_tokens, prompt_ids, vlm_inputs

L = torch.tensor([[2.0, 1.0, -1.0]])        # original logits; max 2
V = torch.tensor([[1.0, 3.0, 0.0]])         # a view's logits


def test_plausibility_cutoff_by_hand():
    # log(0.3) + 2 = 0.796: token 1 (1.0) stays, token 2 (-1.0) goes
    out = plausibility_cutoff(torch.tensor([[5.0, 6.0, 7.0]]), L, 0.3)
    assert out[0, :2].tolist() == [5.0, 6.0] and out[0, 2] == -math.inf
    assert torch.equal(plausibility_cutoff(V, L, 0.0), V)      # beta 0: off


def test_vcd_icd_agla_pnd_by_hand():
    # VCD: (1+1)*L - 1*V = [3, -1, -2]; cutoff log(0.2)+2 = 0.39 removes token 2
    out = vcd_logits(L, V, alpha=1.0, beta=0.2)
    assert out[0, :2].tolist() == [3.0, -1.0] and out[0, 2] == -math.inf
    assert torch.equal(icd_logits(L, V, 1.0, 0.2), out)
    # AGLA: L + 0.5*V = [2.5, 2.5, -1]; beta 0.1 -> cutoff 2 + log 0.1 = -0.30: token 2 goes
    a = agla_logits(L, V, 0.5, 0.1)
    assert a[0, :2].tolist() == [2.5, 2.5] and a[0, 2] == -math.inf
    # PND: 2.2*V - 0.4*L = [1.4, 6.2, 0.4]; cutoff on L: beta 0.3 -> 0.80 removes token 2,
    # beta 0.4 -> 1.08 removes token 1 too
    p = pnd_logits(L, V, L, alpha=2.2, gamma=0.4, beta=0.3)
    assert p[0, 0].item() == pytest.approx(1.4, abs=1e-6) and p[0, 1].item() == pytest.approx(6.2, abs=1e-6)
    assert p[0, 2] == -math.inf
    assert pnd_logits(L, V, L, alpha=2.2, gamma=0.4, beta=0.4)[0, 1] == -math.inf


def test_m3id_weight_grows_with_the_step():
    lc, lu = torch.log_softmax(L, -1), torch.log_softmax(V, -1)
    for t in (1, 5):
        w = (1 - math.exp(-0.5 * t)) / math.exp(-0.5 * t)
        assert torch.allclose(m3id_logits(L, V, t, 0.5, 0.0), lc + w * (lc - lu))
    assert torch.allclose(m3id_logits(L, V, 1, 0.0, 0.0), lc)   # lambda 0: plain log-probs


def test_diffusion_noise_schedule_and_seed():
    x = torch.ones(2, 3, 4, 4)
    a = diffusion_noise(x, 500, torch.Generator().manual_seed(1))
    b = diffusion_noise(x, 500, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)[999]
    assert diffusion_noise(torch.zeros(1), 999, torch.Generator().manual_seed(0)).abs().item() == pytest.approx(
        (1 - abar).sqrt().item() * torch.randn(1, generator=torch.Generator().manual_seed(0)).abs().item(), rel=1e-5)
    with pytest.raises(ValueError, match="diffusion step"):
        diffusion_noise(x, 1000)


def test_method_validates_names_and_parameters():
    with pytest.raises(ValueError, match="unknown decoding method"):
        Method("nope")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        Method("vcd", {"gamma": 1.0})
    assert Method("pnd").value("gamma") == 0.4 and Method("pnd").views == ("positive", "negative")


def _batch(vlm, tok, pixels):
    n = n_image_tokens(vlm)
    prompts = [prompt_ids(tok, n, CAPTION_PROMPT), prompt_ids(tok, n, QUESTION.format(shape="circle")),
               prompt_ids(tok, n, QUESTION.format(shape="star")), prompt_ids(tok, n, CAPTION_PROMPT)]
    inp = vlm_inputs(tok, pixels[:4], prompts)          # two lengths: left padding in the batch
    noised = with_pixels(inp, diffusion_noise(inp["pixel_values"], 500, torch.Generator().manual_seed(0)))
    return inp, noised, without_image(inp, vlm.config.image_token_id, tok.pad_token_id)


def test_a_view_decoded_step_by_step_equals_recomputing_it(vlm, tok, pixels):
    inp, noised, _ = _batch(vlm, tok, pixels)
    gen = contrastive_generate(vlm, inp, Method("greedy"), max_new_tokens=4, pad_token_id=tok.pad_token_id).sequences
    branch = ViewBranch(vlm, noised)
    for k in range(gen.shape[1]):
        step = branch.logits(gen[:, :k])
        ones = torch.ones_like(gen[:, :k])
        full = first_token_logits(vlm, {**noised, "input_ids": torch.cat([noised["input_ids"], gen[:, :k]], 1),
                                        "attention_mask": torch.cat([noised["attention_mask"], ones], 1)})
        assert torch.allclose(step, full, atol=1e-4)
    assert branch.forwards == gen.shape[1]          # one prefill, then one token per step


@pytest.mark.parametrize("method,views", [("greedy", ()), ("vcd", ("noised",)), ("m3id", ("no_image",)),
                                          ("pnd", ("noised", "inp"))])
def test_processors_on_a_batch_first_token_and_forward_counts(vlm, tok, pixels, method, views):
    inp, noised, noimg = _batch(vlm, tok, pixels)
    named = {"noised": noised, "no_image": noimg, "inp": inp}
    m = Method(method, {"lam": 0.5} if method == "m3id" else {})
    view_inputs = dict(zip(m.views, [named[v] for v in views], strict=True))
    d = contrastive_generate(vlm, inp, m, view_inputs, max_new_tokens=3, pad_token_id=tok.pad_token_id)
    assert d.sequences.shape == (4, 3)
    assert d.forwards_per_step == 1 + len(m.views)           # PND: 3 forwards per token
    first = decode_first_token(m, first_token_logits(vlm, inp), {k: first_token_logits(vlm, v)
                                                                 for k, v in view_inputs.items()})
    assert first.tolist() == d.sequences[:, 0].tolist()


def test_without_image_drops_image_tokens_and_inputs(vlm, tok, pixels):
    inp, _, noimg = _batch(vlm, tok, pixels)
    assert "pixel_values" not in noimg
    assert not (noimg["input_ids"] == vlm.config.image_token_id).any()
    assert noimg["attention_mask"].sum().item() == inp["attention_mask"].sum().item() - 4 * n_image_tokens(vlm)


# ---------------------------------------------------------------------------------------
# A second, differently shaped VLM: Qwen2-VL (flattened patches, merged tokens, M-RoPE)
# ---------------------------------------------------------------------------------------

IMG, VS, VE = 35, 36, 37


@pytest.fixture(scope="module")
def qwen():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                         pad_token_id=0, eos_token_id=1, bos_token_id=None),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3),
        image_token_id=IMG, video_token_id=38, vision_start_token_id=VS, vision_end_token_id=VE)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(cfg).eval()
    b, gh, gw = 3, 4, 4
    rows = [[VS] + [IMG] * (gh * gw // 4) + [VE] + list(range(5, 5 + k)) for k in (5, 3, 6)]
    width = max(map(len, rows))
    ids = torch.zeros(b, width, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    g = torch.Generator().manual_seed(0)
    inp = {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(b * gh * gw, 3 * 2 * 14 * 14, generator=g),
           "image_grid_thw": torch.tensor([[1, gh, gw]] * b), "mm_token_type_ids": (ids == IMG).long()}
    return model, inp


def test_processors_work_on_qwen2_vl(qwen):
    model, inp = qwen
    noised = with_pixels(inp, diffusion_noise(inp["pixel_values"], 500, torch.Generator().manual_seed(1)))
    noimg = without_image(inp, IMG, 0)
    greedy = contrastive_generate(model, inp, Method("greedy"), max_new_tokens=5, pad_token_id=0).sequences
    # A contrast that gives weight 0 to its view must leave greedy decoding exactly as it was:
    # running the views (other images, no image: other M-RoPE offsets) does not disturb the main input.
    for m, views in ((Method("vcd", {"alpha": 0.0, "beta": 0.0}), {"noised": noised}),
                     (Method("m3id", {"lam": 0.0, "beta": 0.0}), {"no_image": noimg})):
        assert torch.equal(contrastive_generate(model, inp, m, views, max_new_tokens=5, pad_token_id=0).sequences,
                           greedy)
    d = contrastive_generate(model, inp, Method("pnd"), {"positive": noised, "negative": inp}, max_new_tokens=5,
                             pad_token_id=0)
    assert d.sequences.shape == (3, 5) and d.forwards_per_step == 3


def test_a_qwen2_vl_view_decoded_step_by_step_equals_recomputing_it(qwen):
    model, inp = qwen
    noised = with_pixels(inp, diffusion_noise(inp["pixel_values"], 500, torch.Generator().manual_seed(1)))
    gen = contrastive_generate(model, inp, Method("greedy"), max_new_tokens=4, pad_token_id=0).sequences
    branch = ViewBranch(model, noised)
    with torch.no_grad():
        for k in range(4):
            step = branch.logits(gen[:, :k])
            z = torch.zeros_like(gen[:, :k])
            full = model(**{**noised, "input_ids": torch.cat([inp["input_ids"], gen[:, :k]], 1),
                            "attention_mask": torch.cat([inp["attention_mask"], torch.ones_like(z)], 1),
                            "mm_token_type_ids": torch.cat([inp["mm_token_type_ids"], z], 1)}).logits[:, -1]
            assert torch.allclose(step, full, atol=1e-4)
