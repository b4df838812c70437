"""The `vision_eval` stage's work: every decoding method on POPE and CHAIR, for every
checkpoint, tuned on the validation split, with seeds and paired verdicts.

1. `EvalData.load`: the validation and test scenes, their POPE questions (each distinct
   (image, shape) asked once: the three POPE splits share their present objects), and the
   captioned test images.
2. `itm_saliency`: the ITM model's Grad-CAM of every (image, instruction) row, computed once
   (the views depend on the image and the text, not on the VLM).
3. `run_pope_job` per checkpoint (a worker process each): every view's first-step logits of
   every row (`evaluate.pope_logits`) and the seconds each view took.
4. `tune`: per checkpoint kind (trained, weak) and method, the grid point with the best mean
   validation POPE accuracy (three splits, all training and noise seeds); ties go to the
   earlier point (the grids list the papers' defaults first). Test numbers use those.
5. `run_caption_job` per checkpoint: captions of the test images by every method (the noisy
   ones once per noise seed), through `generate` with the logits processors.
6. `summarise`: mean ± std over training seeds x noise seeds, paired differences against
   greedy and against VCD (`evaluate.grid.verdict`: mean > 0 and > std of the differences),
   and the claim rows.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from distillery.evaluate.grid import verdict
from distillery.types import Claim
from distillery.vision.config import METHODS, VisionEvalConfig
from distillery.vision.evaluate import (
    STOCHASTIC,
    ItmMaps,
    ViewConfig,
    caption_run,
    chair,
    first_answers,
    mean_std,
    parse_yes_no,
    pope_logits,
    pope_metrics,
)
from distillery.vision.scenes import POPE_SPLITS, Scene, pope_from_frame, scenes_from_frame
from distillery.vision.vlm import CAPTION_PROMPT, QUESTION, load_images

PAPER = "PND: positive-and-negative decoding (arXiv 2605.06679)"
COMMAND = "make repro TRACK=vision"
KINDS = ("trained", "weak")


def default_grids() -> dict[str, dict[str, list[float]]]:
    """Each method's tuning grid; the first value of each list is the paper's default."""
    return {
        "vcd": {"alpha": [1.0, 0.5, 2.0], "beta": [0.2, 0.1, 0.5]},
        "agla": {"alpha": [1.0, 0.5, 2.0], "beta": [0.1, 0.5]},
        "icd": {"alpha": [1.0, 0.5, 2.0], "beta": [0.1, 0.5]},
        "m3id": {"lam": [0.02, 0.2, 1.0], "beta": [0.1, 0.0]},
        "pnd": {"alpha": [2.2], "gamma": [0.4, 0.2, 0.8, 1.6], "beta": [0.4, 0.1, 0.7]},
        "pnd_attn": {"alpha": [2.2], "gamma": [0.4, 0.2, 0.8, 1.6], "beta": [0.4, 0.1, 0.7]},
    }


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    keys = list(grid)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(grid[k] for k in keys))]


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """The rows every checkpoint answers: `rows` are (split, image_id, instruction), POPE
    questions first (deduplicated), then the caption rows; `pixels` [N_images, 3, H, W];
    `image_index[image_id]` its row in `pixels`."""

    scenes: dict[str, Scene]
    questions: list[Any]                       # PopeQuestion
    rows: list[tuple[str, str, str]]
    row_of: dict[tuple[str, str], int]         # (image_id, shape) -> POPE row
    caption_ids: list[str]
    pixels: torch.Tensor
    image_index: dict[str, int]

    @staticmethod
    def load(scenes_file: str, pope_file: str, caption_images: int, image_size: int = 64) -> EvalData:
        import polars as pl

        frame = pl.read_parquet(scenes_file).filter(pl.col("split") != "train")
        scenes = {s.image_id: s for s in scenes_from_frame(frame)}
        questions = pope_from_frame(pl.read_parquet(pope_file))
        rows: list[tuple[str, str, str]] = []
        row_of: dict[tuple[str, str], int] = {}
        for q in questions:
            if (q.image_id, q.shape) not in row_of:
                row_of[(q.image_id, q.shape)] = len(rows)
                rows.append((q.split, q.image_id, QUESTION.format(shape=q.shape)))
        caption_ids = sorted(i for i, s in scenes.items() if s.split == "test")[:caption_images]
        rows += [("test", i, CAPTION_PROMPT) for i in caption_ids]
        ids = frame["image_id"].to_list()
        pixels = load_images(frame["path"].to_list(), ids, size=image_size)
        return EvalData(scenes, questions, rows, row_of, caption_ids, pixels, {i: k for k, i in enumerate(ids)})

    @property
    def n_pope_rows(self) -> int:
        return len(self.row_of)

    def row_pixels(self, rows: Sequence[int]) -> torch.Tensor:
        return self.pixels[[self.image_index[self.rows[r][1]] for r in rows]]


def itm_saliency(itm_dir: str, data: EvalData, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Grad-CAM cams [N, blocks, P] and ITC [N] of every row (`saliency.itm_gradcam`)."""
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    from distillery.vision.saliency import itm_gradcam

    model = BlipForImageTextRetrieval.from_pretrained(itm_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(itm_dir)
    sal = itm_gradcam(model, tok, data.row_pixels(range(len(data.rows))), [r[2] for r in data.rows],
                      batch_size=batch_size)
    return {"cams": sal.cams, "itc": sal.itc}


def itm_maps(sal: Mapping[str, torch.Tensor], rows: Sequence[int], image_size: int) -> ItmMaps:
    from distillery.vision.saliency import Saliency, pnd_maps

    pos, neg, keep = pnd_maps(Saliency(sal["cams"][list(rows)], sal["itc"][list(rows)]), image_size)
    return ItmMaps(pos, neg, keep)


def itm_localisation(sal: Mapping[str, torch.Tensor], data: EvalData) -> dict[str, float]:
    """How often each block's Grad-CAM peaks on the queried shape's cell, over the POPE rows
    whose shape is present (a check of the saliency model, reported beside the results)."""
    hits: dict[str, list[float]] = {}
    cams = sal["cams"]
    for r, (_, image_id, text) in enumerate(data.rows[: data.n_pope_rows]):
        shape = text.split()[3]
        cells = {o.row * 4 + o.col for o in data.scenes[image_id].objects if o.shape == shape}
        if not cells:
            continue
        for b in range(cams.shape[1]):
            hits.setdefault(f"block_{b}", []).append(float(int(cams[r, b].argmax()) in cells))
        hits.setdefault("positive_blocks_mean", []).append(float(int(cams[r, 1:].mean(0).argmax()) in cells))
    return {k: statistics.fmean(v) for k, v in hits.items()}


# ---------------------------------------------------------------------------------------
# Jobs (worker processes)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalJob:
    name: str                     # vlm-s0, vlm-weak-s0, ...
    kind: str                     # trained | weak
    seed: int
    model_dir: str
    scenes_file: str
    pope_file: str
    cfg: VisionEvalConfig
    image_size: int
    saliency: dict[str, Any]      # cams, itc (numpy)
    params: dict[str, dict[str, float]] = field(default_factory=dict)    # tuned, for captions


def _view_config(cfg: VisionEvalConfig) -> ViewConfig:
    return ViewConfig(cfg.vcd_noise_step, cfg.pnd_noise_step, cfg.pnd_threshold, cfg.icd_prefix, cfg.attn_keep)


def _setup(job: EvalJob) -> tuple[Any, Any, EvalData, dict[str, torch.Tensor]]:
    from distillery.vision.vlm import load_vlm_dir

    torch.set_num_threads(1)
    model, tok, _ = load_vlm_dir(job.model_dir)
    data = EvalData.load(job.scenes_file, job.pope_file, job.cfg.caption_images, job.image_size)
    sal = {k: torch.as_tensor(v) for k, v in job.saliency.items()}
    return model, tok, data, sal


def run_pope_job(job: EvalJob) -> dict[str, Any]:
    """Every view's first-step logits on every POPE row, and seconds per view kind."""
    model, tok, data, sal = _setup(job)
    rows = list(range(data.n_pope_rows))
    maps = itm_maps(sal, rows, job.image_size)
    t0 = time.perf_counter()
    logits = pope_logits(model, tok, data.row_pixels(rows), [data.rows[r][2] for r in rows], maps,
                         job.cfg.noise_seeds, _view_config(job.cfg), batch_size=job.cfg.batch_size)
    seconds = time.perf_counter() - t0
    # the cost of each view alone: one forward of every row, timed on the original input
    t1 = time.perf_counter()
    from distillery.vision.decoding import first_token_logits
    from distillery.vision.vlm import prompt_ids, vlm_inputs

    n_img = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    for start in range(0, len(rows), job.cfg.batch_size):
        chunk = rows[start:start + job.cfg.batch_size]
        first_token_logits(model, vlm_inputs(tok, data.row_pixels(chunk),
                                             [prompt_ids(tok, n_img, data.rows[r][2]) for r in chunk]))
    one_view = time.perf_counter() - t1
    return {"name": job.name, "logits": {k: v.numpy().astype(np.float32) for k, v in logits.items()},
            "seconds": seconds, "one_view_s": one_view, "n_rows": len(rows)}


def run_caption_job(job: EvalJob) -> dict[str, Any]:
    """Captions of the test images by every method with its tuned hyper-parameters."""
    model, tok, data, sal = _setup(job)
    rows = list(range(data.n_pope_rows, len(data.rows)))
    maps = itm_maps(sal, rows, job.image_size)
    pixels = data.row_pixels(rows)
    out: dict[str, Any] = {}
    for name in ["greedy", *[m for m in job.cfg.methods if m != "greedy"]]:
        seeds = job.cfg.noise_seeds if name in STOCHASTIC else job.cfg.noise_seeds[:1]
        for seed in seeds:
            run = caption_run(model, tok, pixels, CAPTION_PROMPT, maps, name, job.params.get(name, {}), seed,
                              _view_config(job.cfg), max_new_tokens=job.cfg.max_caption_tokens,
                              batch_size=job.cfg.batch_size)
            out[f"{name}@{seed}"] = asdict(run)
    return {"name": job.name, "captions": out, "image_ids": data.caption_ids}


def run_jobs(fn: Any, jobs: Sequence[EvalJob], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process holding torch/OpenMP threads can hang.
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(fn, jobs))


# ---------------------------------------------------------------------------------------
# Tuning and scoring
# ---------------------------------------------------------------------------------------


def answer_words(tok: Any) -> list[str]:
    """yes/no for every token id, by POPE's rule on the decoded token."""
    return [parse_yes_no(tok.decode([i])) for i in range(len(tok))]


def pope_scores(logits: Mapping[str, np.ndarray], data: EvalData, words: Sequence[str], name: str,
                params: Mapping[str, float], seed: int, split: str) -> dict[str, dict[str, float]]:
    """POPE metrics of one method on one split (val/test), per POPE split."""
    lt = {k: torch.as_tensor(v) for k, v in logits.items()}
    tokens = first_answers(name, params, lt, seed).tolist()
    out = {}
    for ps in POPE_SPLITS:
        qs = [q for q in data.questions if q.split == split and q.pope_split == ps]
        answers = [words[tokens[data.row_of[(q.image_id, q.shape)]]] for q in qs]
        out[ps] = pope_metrics([q.label for q in qs], answers)
    return out


def tune(results: Mapping[str, Mapping[str, np.ndarray]], jobs: Sequence[EvalJob], data: EvalData,
         words: Sequence[str], cfg: VisionEvalConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """{kind: {method: {"params": best, "val_accuracy": its mean, "grid": [(params, acc)...]}}}."""
    grids = {**default_grids(), **cfg.grids}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in KINDS:
        names = [j.name for j in jobs if j.kind == kind]
        out[kind] = {}
        for method in cfg.methods:
            points = grid_points(grids.get(method, {})) or [{}]
            seeds = cfg.noise_seeds if method in STOCHASTIC else cfg.noise_seeds[:1]
            scored = []
            for p in points:
                accs = [m["accuracy"] for n in names for s in seeds
                        for m in pope_scores(results[n], data, words, method, p, s, "val").values()]
                scored.append((p, statistics.fmean(accs)))
            best = max(scored, key=lambda x: x[1])          # max keeps the first of equals
            out[kind][method] = {"params": best[0], "val_accuracy": best[1],
                                 "grid": [{"params": p, "val_accuracy": a} for p, a in scored]}
    return out


def summarise(pope: Mapping[str, Mapping[str, np.ndarray]], captions: Mapping[str, Mapping[str, Any]],
              jobs: Sequence[EvalJob], data: EvalData, words: Sequence[str], tuned: Mapping[str, Any],
              cfg: VisionEvalConfig) -> dict[str, Any]:
    """Every number of `reports/details/vision_eval.json` (see `run_eval`)."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {k: {m: [] for m in cfg.methods} for k in KINDS}
    for job in jobs:
        for method in cfg.methods:
            params = tuned[job.kind][method]["params"]
            for seed in cfg.noise_seeds:
                scores = pope_scores(pope[job.name], data, words, method, params, seed, "test")
                cap_key = f"{method}@{seed if method in STOCHASTIC else cfg.noise_seeds[0]}"
                cap = captions[job.name]["captions"][cap_key]
                truths = [set(data.scenes[i].shapes) for i in captions[job.name]["image_ids"]]
                runs[job.kind][method].append({"train_seed": job.seed, "noise_seed": seed, "pope": scores,
                                               "chair": chair(cap["captions"], truths),
                                               "caption_tokens": cap["n_tokens"], "caption_wall_s": cap["wall_s"],
                                               "forwards_per_step": cap["forwards_per_step"]})
    table: dict[str, Any] = {}
    for kind, methods in runs.items():
        table[kind] = {}
        for method, rs in methods.items():
            entry: dict[str, Any] = {"params": tuned[kind][method]["params"],
                                     "val_accuracy": tuned[kind][method]["val_accuracy"]}
            for ps in POPE_SPLITS:
                entry[ps] = {k: mean_std([r["pope"][ps][k] for r in rs])
                             for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
            entry["chair"] = {k: mean_std([r["chair"][k] for r in rs]) for k in ("chair_i", "chair_s", "recall")}
            entry["forwards_per_token"] = statistics.fmean(r["forwards_per_step"] for r in rs)
            entry["caption_tokens_per_s"] = statistics.fmean(r["caption_tokens"] / max(r["caption_wall_s"], 1e-9)
                                                             for r in rs)
            table[kind][method] = entry
    return {"runs": runs, "table": table}


def paired(runs: Mapping[str, Sequence[Mapping[str, Any]]], a: str, b: str, metric: str) -> list[float]:
    """a − b per (training seed, noise seed): adversarial POPE accuracy, or greedy-minus-a for
    CHAIR_i (lower is better), so a positive difference always means `a` did better."""
    key = {(r["train_seed"], r["noise_seed"]): r for r in runs[b]}
    out = []
    for r in runs[a]:
        o = key[(r["train_seed"], r["noise_seed"])]
        if metric == "adversarial":
            out.append(r["pope"]["adversarial"]["accuracy"] - o["pope"]["adversarial"]["accuracy"])
        elif metric == "chair_i":
            out.append(o["chair"]["chair_i"] - r["chair"]["chair_i"])
        else:
            raise ValueError(f"paired: unknown metric {metric!r}")
    return out


def verdicts(runs: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], cfg: VisionEvalConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, methods in runs.items():
        for a, b in (("pnd", "greedy"), ("pnd", "vcd"), ("pnd_attn", "greedy"), ("pnd", "pnd_attn"), ("vcd", "greedy")):
            if a not in methods or b not in methods:
                continue
            for metric in ("adversarial", "chair_i"):
                d = paired(methods, a, b, metric)
                holds, how = verdict(d)
                out[f"{kind}/{a}-vs-{b}/{metric}"] = {"diffs": d, "mean": statistics.fmean(d),
                                                      "std": statistics.stdev(d) if len(d) > 1 else 0.0,
                                                      "holds": holds, "how": how}
    return out


def prior_check(runs: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]) -> dict[str, Any]:
    """Random-split minus adversarial-split accuracy of greedy decoding, per training seed:
    visible when its mean exceeds two standard deviations over the training seeds (of the
    adversarial or the random split's accuracy, the larger), the rule the track sets: the
    benchmark must be able to show hallucination."""
    out = {}
    for kind, methods in runs.items():
        by_seed: dict[int, dict[str, float]] = {}
        for r in methods["greedy"]:
            by_seed[r["train_seed"]] = {ps: r["pope"][ps]["accuracy"] for ps in POPE_SPLITS}
        adv = [v["adversarial"] for v in by_seed.values()]
        rnd = [v["random"] for v in by_seed.values()]
        gap = statistics.fmean(rnd) - statistics.fmean(adv)
        std = max(statistics.stdev(adv) if len(adv) > 1 else 0.0, statistics.stdev(rnd) if len(rnd) > 1 else 0.0)
        out[kind] = {"random": rnd, "popular": [v["popular"] for v in by_seed.values()], "adversarial": adv,
                     "gap": gap, "seed_std": std, "visible": bool(gap > 2 * std)}
    return out


# Where our setting departs from the paper's, or our reading fills a gap it leaves.
READING = ("Our reading: a LLaVA of well under a million parameters trained here on synthetic scenes (the "
           "paper: pretrained 7B-class VLMs); PND's saliency from a tiny BLIP-style ITM model trained here (the "
           "paper: BLIP ITM), its Grad-CAM blocks mapped to the same relative depths; argmax decoding after the "
           "contrast (the paper samples at temperature 1); CHAIR over the closed shape vocabulary.")


def _pm(x: Mapping[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    return f"{x['mean'] * scale:.{digits}f} ± {x['std'] * scale:.{digits}f}"


def claim_rows(table: Mapping[str, Any], checks: Mapping[str, Any], prior: Mapping[str, Any],
               cfg: VisionEvalConfig, train_seeds: Sequence[int]) -> list[Claim]:
    seeds = (f"training seeds {','.join(map(str, train_seeds))} x noise seeds "
             f"{','.join(map(str, cfg.noise_seeds))}")
    rows = []
    p = prior["trained"]
    rows.append(Claim(
        paper="POPE (Li et al., 2023)", finding="adversarial negatives (co-occurring objects) are the hardest",
        paper_value="accuracy falls from random to popular to adversarial for every LVLM tested",
        measured=f"greedy, trained model: random {statistics.fmean(p['random']) * 100:.1f}, popular "
                 f"{statistics.fmean(p['popular']) * 100:.1f}, adversarial {statistics.fmean(p['adversarial']) * 100:.1f}",
        holds=p["visible"], detail=f"rule: random − adversarial ({p['gap'] * 100:.1f} points) > 2 x the training seeds' "
                                   f"std ({p['seed_std'] * 100:.1f} points); weak checkpoint gap "
                                   f"{prior['weak']['gap'] * 100:.1f} points",
        spread=f"seed std {p['seed_std'] * 100:.1f} points",
        seeds=f"training seeds {','.join(map(str, train_seeds))} (greedy is noise-free)",
        command=COMMAND))
    for kind in KINDS:
        t = table[kind]
        for other in ("greedy", "vcd"):
            for metric, label in (("adversarial", "adversarial POPE accuracy"), ("chair_i", "CHAIR_i")):
                key = f"{kind}/pnd-vs-{other}/{metric}"
                if key not in checks:
                    continue
                c = checks[key]
                if metric == "adversarial":
                    measured = (f"{label}: PND {_pm(t['pnd']['adversarial']['accuracy'])} vs {other} "
                                f"{_pm(t[other]['adversarial']['accuracy'])}; paired {c['mean'] * 100:+.1f} points; "
                                f"F1 PND {_pm(t['pnd']['adversarial']['f1'])} vs {other} "
                                f"{_pm(t[other]['adversarial']['f1'])}")
                    paper_value = "up to +6.5 POPE accuracy points (LLaVA, InstructBLIP, InternVL, Qwen-VL)"
                else:
                    measured = (f"{label}: PND {_pm(t['pnd']['chair']['chair_i'])} vs {other} "
                                f"{_pm(t[other]['chair']['chair_i'])} (lower is better); paired "
                                f"{c['mean'] * 100:+.1f} points in PND's favour")
                    paper_value = "fewer hallucinated objects in captions than the baselines"
                rows.append(Claim(
                    paper=PAPER, finding=f"PND beats {other} on {label} ({kind} checkpoint)", paper_value=paper_value,
                    measured=measured, holds=c["holds"],
                    detail=f"paired rule: mean difference > 0 and > its std ({c['how']}); hyper-parameters tuned on "
                           f"the validation split: PND {t['pnd']['params']}, {other} {t[other]['params']}. {READING}",
                    spread=f"std of paired differences {c['std'] * 100:.1f} points", seeds=seeds, command=COMMAND))
    if "trained/pnd-vs-pnd_attn/adversarial" in checks:
        c = checks["trained/pnd-vs-pnd_attn/adversarial"]
        rows.append(Claim(
            paper=PAPER, finding="an external ITM saliency model beats the VLM's own attention as PND's saliency "
                                 "(ablation, trained checkpoint)",
            paper_value="the released code uses BLIP ITM Grad-CAM; the abstract speaks of internal attention",
            measured=f"adversarial POPE accuracy: PND(ITM) {_pm(table['trained']['pnd']['adversarial']['accuracy'])} vs "
                     f"PND(own attention) {_pm(table['trained']['pnd_attn']['adversarial']['accuracy'])}",
            holds=c["holds"], detail=f"paired rule ({c['how']})", spread=f"{c['std'] * 100:.1f} points", seeds=seeds,
            command=COMMAND))
    return rows


# The headline (`metrics/vision_eval.json`, at most `evaluate.headline.MAX_VALUES` numbers):
# test means over training x noise seeds; `pope_adv_*` adversarial POPE accuracy, `chair_i_*`
# CHAIR_i of captions, trained checkpoint unless `weak_`. Everything else is in the details.
HEADLINE = {
    "pope_adv_greedy": "table.trained.greedy.adversarial.accuracy.mean",
    "pope_adv_vcd": "table.trained.vcd.adversarial.accuracy.mean",
    "pope_adv_pnd": "table.trained.pnd.adversarial.accuracy.mean",
    "chair_i_greedy": "table.trained.greedy.chair.chair_i.mean",
    "chair_i_pnd": "table.trained.pnd.chair.chair_i.mean",
    "weak_pope_adv_greedy": "table.weak.greedy.adversarial.accuracy.mean",
    "weak_pope_adv_pnd": "table.weak.pnd.adversarial.accuracy.mean",
    "seconds": "seconds.total",
}


def eval_headline(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """`metrics/vision_eval.json` from the stage's full record (`HEADLINE`'s paths); a
    method left out of `vision_eval.methods` gives None (not measured) for its numbers."""
    from distillery.evaluate.headline import pick

    paths = {k: v for k, v in HEADLINE.items()
             if not v.startswith("table.") or v.split(".")[2] in metrics["table"][v.split(".")[1]]}
    out = pick(metrics, paths)
    return {k: out.get(k) for k in HEADLINE}


def method_names(cfg: VisionEvalConfig) -> list[str]:
    return ["greedy", *[m for m in METHODS if m in cfg.methods and m != "greedy"]]


def run_eval(cfg: VisionEvalConfig, *, scenes_file: str, pope_file: str, model_root: str, seeds: Sequence[int],
             image_size: int = 64) -> dict[str, Any]:
    """Everything the stage measures. Returns {"metrics", "claims", "data", "examples"}."""
    import dataclasses

    from transformers import AutoTokenizer

    cfg = dataclasses.replace(cfg, methods=method_names(cfg))
    t0 = time.perf_counter()
    data = EvalData.load(scenes_file, pope_file, cfg.caption_images, image_size)
    sal = itm_saliency(f"{model_root}/itm", data, batch_size=cfg.batch_size)
    t_itm = time.perf_counter() - t0
    sal_np = {k: v.numpy() for k, v in sal.items()}
    jobs = [EvalJob(f"vlm{'' if kind == 'trained' else '-weak'}-s{s}", kind, s,
                    f"{model_root}/vlm{'' if kind == 'trained' else '-weak'}-s{s}", scenes_file, pope_file, cfg,
                    image_size, sal_np) for kind in KINDS for s in seeds]
    tok = AutoTokenizer.from_pretrained(jobs[0].model_dir)
    words = answer_words(tok)
    t1 = time.perf_counter()
    pope_results = {r["name"]: r for r in run_jobs(run_pope_job, jobs, cfg.workers)}
    t_pope = time.perf_counter() - t1
    logits = {n: r["logits"] for n, r in pope_results.items()}
    tuned = tune(logits, jobs, data, words, cfg)
    t2 = time.perf_counter()
    cap_jobs = [dataclasses.replace(j, params={m: v["params"] for m, v in tuned[j.kind].items()}) for j in jobs]
    captions = {r["name"]: r for r in run_jobs(run_caption_job, cap_jobs, cfg.workers)}
    t_cap = time.perf_counter() - t2
    summary = summarise(logits, captions, jobs, data, words, tuned, cfg)
    checks = verdicts(summary["runs"], cfg)
    prior = prior_check(summary["runs"])
    # POPE cost of a method alone: its views' forwards, each as long as one view's forward
    per_view = statistics.fmean(r["one_view_s"] for r in pope_results.values())
    n_views = {"greedy": 1, "vcd": 2, "agla": 2, "icd": 2, "m3id": 2, "pnd": 3, "pnd_attn": 3}
    for kind in KINDS:
        for m, entry in summary["table"][kind].items():
            entry["pope_forwards_per_answer"] = n_views[m]
            entry["pope_wall_s_est"] = n_views[m] * per_view
    metrics = {
        "table": summary["table"], "paired": checks, "prior": prior, "tuned": tuned,
        "itm_localisation": itm_localisation(sal, data),
        "n": {"pope_questions_test": sum(q.split == "test" for q in data.questions),
              "pope_questions_val": sum(q.split == "val" for q in data.questions),
              "pope_rows": data.n_pope_rows, "caption_images": len(data.caption_ids)},
        "seconds": {"itm_saliency": round(t_itm, 1), "pope": round(t_pope, 1), "captions": round(t_cap, 1),
                    "total": round(time.perf_counter() - t0, 1), "one_view_pope_s": round(per_view, 2)},
        "config": dataclasses.asdict(cfg),
    }
    return {"metrics": metrics, "claims": claim_rows(summary["table"], checks, prior, cfg, seeds), "data": data,
            "runs": summary["runs"], "captions": captions, "logits": logits, "saliency": sal, "words": words,
            "tuned": tuned}
