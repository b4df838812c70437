"""Where the image answers the question: PND's positive and negative views.

PND (and AGLA before it) takes its saliency from a separate image-text matching model:
BLIP's ITM head, whose Grad-CAM over the text encoder's cross-attention says which image
patches the match depends on. Here that model is a tiny `BlipForImageTextRetrieval` built
from a `transformers` config and trained on the scenes (`vision.train.train_itm`).

- `itm_gradcam(model, tok, pixels, texts)`: per cross-attention block, LAVIS's
  ``compute_gradcam``: attention x clamp(gradient of the ITM "match" logit, 0), the image's
  class token dropped, mean over heads, mean over the text tokens after ``<enc>``; plus the
  ITC similarity of each pair.
- `attention_map(cam)`: LAVIS's ``getAttMap`` on our 64x64 images: the patch map resized
  to pixels (bicubic), a Gaussian blur of sigma 0.02 x side, normalised to [0, 1].
- `positive_view`: PND's ``augmentation``: the map averaged over ``positive_blocks`` keeps
  its top ``1 − ITC/2`` fraction of pixels (the code's ratio), the rest set to 0.
- `negative_view`: PND's ``targeted_destruction_augmentation``: each of ``negative_blocks``'
  maps normalised, fused by element-wise minimum, normalised again; pixels >= 0.6 are
  replaced by diffusion noise at t = 999 on the [0, 1] image, then clamped.
- `attention_saliency`: the ablation's source: the VLM's own attention from the last
  prompt token to the image tokens, per layer (positive: the layers' mean; negative: their
  minimum, as PND fuses blocks).

Block indices: BLIP's text encoder has 12 blocks and PND reads 4, 6, 8 (positive) and
3, 5, 7, 9 (negative); ours has 4, and the defaults take the same relative depths that
exist in it (all of 1-3 for the positive, 0-3 for the negative; our reading).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from distillery.vision.config import ITMConfig
from distillery.vision.decoding import diffusion_noise
from distillery.vision.vlm import ENC, VisionInputError, encode_words, normalize

POSITIVE_BLOCKS = (1, 2, 3)
NEGATIVE_BLOCKS = (0, 1, 2, 3)


def build_itm(cfg: ITMConfig, tok: Any, *, image_size: int = 64, patch_size: int = 16, seed: int = 0) -> Any:
    """A BLIP image-text retrieval model (ITM and ITC heads) with random weights."""
    from transformers import BlipConfig, BlipForImageTextRetrieval

    vision = dict(hidden_size=cfg.vision_hidden, intermediate_size=cfg.intermediate,
                  num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.heads, image_size=image_size,
                  patch_size=patch_size)
    text = dict(vocab_size=len(tok), hidden_size=cfg.text_hidden, encoder_hidden_size=cfg.vision_hidden,
                intermediate_size=cfg.intermediate, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.heads, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.convert_tokens_to_ids(ENC), sep_token_id=tok.eos_token_id, initializer_range=cfg.init_std)
    vision["initializer_range"] = cfg.init_std
    config = BlipConfig(vision_config=vision, text_config=text, projection_dim=cfg.embed_dim, initializer_range=cfg.init_std,
                        image_text_hidden_size=cfg.text_hidden)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForImageTextRetrieval(config)
    return model


def itm_text_ids(tok: Any, text: str) -> list[int]:
    """``<enc>`` then the words (BLIP's ITM reads the match off the first token)."""
    if not text or not text.strip():
        raise VisionInputError("saliency: the query text is empty")
    return [tok.convert_tokens_to_ids(ENC), *encode_words(tok, text)]


@dataclass
class Saliency:
    """Grad-CAM of a batch of (image, text) pairs."""

    cams: torch.Tensor      # [B, n_blocks, P] one map per cross-attention block, over the P patches
    itc: torch.Tensor       # [B] the ITC cosine similarity of each pair


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def itm_gradcam(model: Any, tok: Any, pixels: torch.Tensor, texts: Sequence[str], *, batch_size: int = 256) -> Saliency:
    """Grad-CAM of every (pixels[i], texts[i]) pair, for every cross-attention block (see
    the module docstring). Pixels are [B, 3, H, W] in [0, 1]."""
    if len(texts) != len(pixels):
        raise ValueError(f"itm_gradcam: {len(pixels)} images but {len(texts)} texts")
    layers = model.text_encoder.encoder.layer
    model.eval()
    cams, itcs = [], []
    for start in range(0, len(texts), batch_size):
        px = normalize(pixels[start:start + batch_size])
        ids, mask = _pad([itm_text_ids(tok, t) for t in texts[start:start + batch_size]], tok.pad_token_id)
        probs: list[torch.Tensor] = []

        def keep(_module: Any, _inp: Any, out: Any, probs: list[torch.Tensor] = probs) -> None:
            out[1].retain_grad()
            probs.append(out[1])

        hooks = [layer.crossattention.self.register_forward_hook(keep) for layer in layers]
        try:
            with torch.enable_grad():
                score = model(input_ids=ids, attention_mask=mask, pixel_values=px, use_itm_head=True).itm_score
                model.zero_grad(set_to_none=True)
                score[:, 1].sum().backward()
        finally:
            for h in hooks:
                h.remove()
        model.zero_grad(set_to_none=True)
        text_mask = mask.clone()
        text_mask[:, 0] = 0                    # the <enc> token's row is not averaged (LAVIS)
        n_tok = text_mask.sum(1).clamp(min=1).float()
        per_block = []
        for p in probs:                        # [B, heads, T, 1 + P]
            g = p.grad[..., 1:].clamp(min=0)
            c = (p.detach()[..., 1:] * g).mean(1)           # [B, T, P]
            per_block.append((c * text_mask[..., None]).sum(1) / n_tok[:, None])
        cams.append(torch.stack(per_block, 1))
        with torch.no_grad():
            sim = model(input_ids=ids, attention_mask=mask, pixel_values=px, use_itm_head=False).itm_score
        itcs.append(torch.diagonal(sim))
    return Saliency(torch.cat(cams), torch.cat(itcs))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    y = F.pad(x[:, None], (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1))[:, 0]


def attention_map(cam: torch.Tensor, image_size: int, blur: bool = True) -> torch.Tensor:
    """[B, P] patch scores (P a square) -> [B, H, W] in [0, 1] (LAVIS's getAttMap)."""
    side = int(round(math.sqrt(cam.shape[-1])))
    if side * side != cam.shape[-1]:
        raise ValueError(f"attention_map: {cam.shape[-1]} patches do not form a square")
    m = F.interpolate(cam.float().view(-1, 1, side, side), size=(image_size, image_size), mode="bicubic",
                      align_corners=False)[:, 0]
    if blur:
        m = _gaussian_blur(m, 0.02 * image_size)
    lo = m.flatten(1).min(1).values.view(-1, 1, 1)
    m = m - lo
    hi = m.flatten(1).max(1).values.view(-1, 1, 1)
    return m / hi.clamp(min=1e-12)


def positive_view(pixels: torch.Tensor, cam: torch.Tensor, keep_fraction: torch.Tensor) -> torch.Tensor:
    """Keep each image's most salient `keep_fraction` of pixels (by `cam` [B, H, W]), zero
    the rest. Pixels [B, 3, H, W] in [0, 1]."""
    b, _, h, w = pixels.shape
    flat = cam.reshape(b, -1)
    srt = flat.sort(dim=1, descending=True).values
    k = (keep_fraction.clamp(max=1 - 1e-5) * h * w).long().clamp(0, h * w - 1)
    thr = srt.gather(1, k.view(-1, 1))
    mask = (flat >= thr).view(b, 1, h, w).to(pixels.dtype)
    return pixels * mask


def negative_view(pixels: torch.Tensor, fused: torch.Tensor, *, threshold: float = 0.6, step: int = 999,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace the pixels where `fused` [B, H, W] >= threshold by diffusion noise at `step`."""
    noised = diffusion_noise(pixels, step, generator)
    mask = (fused >= threshold).unsqueeze(1).to(pixels.dtype)
    return (pixels * (1 - mask) + noised * mask).clamp(0, 1)


def pnd_maps(sal: Saliency, image_size: int, positive_blocks: Sequence[int] = POSITIVE_BLOCKS,
             negative_blocks: Sequence[int] = NEGATIVE_BLOCKS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positive map, negative fused map, keep fraction) from Grad-CAMs, as PND's code makes them."""
    n = sal.cams.shape[1]
    for blk in (*positive_blocks, *negative_blocks):
        if not 0 <= blk < n:
            raise ValueError(f"saliency block {blk} does not exist: the ITM text encoder has {n} blocks")
    pos = attention_map(sal.cams[:, list(positive_blocks)].mean(1), image_size)
    fused = fuse_min([attention_map(sal.cams[:, blk], image_size) for blk in negative_blocks])
    keep = 1 - sal.itc / 2
    return pos, fused, keep


def fuse_min(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Element-wise minimum of [B, H, W] maps in [0, 1], normalised to [0, 1] again (PND's
    negative map: a pixel is core only where every block agrees)."""
    fused = torch.stack(list(maps)).min(0).values
    fused = fused - fused.flatten(1).min(1).values.view(-1, 1, 1)
    return fused / fused.flatten(1).max(1).values.view(-1, 1, 1).clamp(min=1e-8)


def attention_saliency(attentions: Sequence[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, P] the model's attention from its last position to each of its P image tokens,
    per layer (L), mean over heads. `image_mask` [B, T] marks the image tokens (P per row)."""
    n = int(image_mask[0].sum())
    if bool((image_mask.sum(1) != n).any()):
        raise ValueError("attention_saliency: rows have different numbers of image tokens")
    per_layer = [a[:, :, -1, :].float().mean(1) for a in attentions]                 # L x [B, T]
    return torch.stack([att[image_mask.bool()].view(att.shape[0], n) for att in per_layer], 1)
