"""GKD's control: is GKD's gain from the strong start the teacher's?

Half of GKD's samples are the oracle's demonstrations (TRL's lambda = 0.5). This trains the
strong-start student (`models/warmup`) with plain likelihood on exactly the demonstrations
GKD's dataset half drew in the same seed's recorded grid run (`train.distill.dataset_samples`,
the same n and seed per iteration, the same training settings), without the teacher and without the student's own samples, and
measures greedy test success after each iteration like the `distill` stage.

    python experiments/gkd_sft_control.py --seeds 0 1 2   # from the repository root, after `dvc repro distill`

Writes experiments/gkd_sft_control.json. Not a DVC stage: a one-off control, recorded here
with the command that made it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

from distillery.config import load_section
from distillery.io import read_parquet, write_json
from distillery.lm.model import load_model_dir
from distillery.train.distill import DistillConfig, _greedy, dataset_samples
from distillery.train.internalize import model_prompt
from distillery.train.loop import train
from distillery.types import tasks_from_frame

GRID_RECORD = Path("experiments/objectives_grid.json")


def gkd_data_counts(seed: int, record: Path = GRID_RECORD) -> list[int]:
    """Demonstrations per iteration in GKD's dataset half for `seed` (strong start): half of each
    iteration's batch in the recorded grid run, since lambda = 0.5 keeps half the student's
    samples and adds as many demonstrations (`train.distill`)."""
    runs = [r for r in json.loads(record.read_text())["runs"]
            if r["method"] == "gkd" and r["start"] == "strong" and r["seed"] == seed]
    if not runs:
        raise SystemExit(f"{record}: no gkd strong-start run for seed {seed}; run the objectives grid first")
    return [it["n_samples"] // 2 for it in runs[0]["metrics"]["iterations"]]


def control_run(seed: int) -> dict:
    counts = gkd_data_counts(seed)
    cfg = replace(load_section(DistillConfig, "distill"), method="gkd", start="strong", seed=seed)
    tasks = tasks_from_frame(read_parquet("data/tasks/tasks.parquet", "tasks"))
    learn = {t.task_id: t for t in tasks if t.split == cfg.gkd_dataset_split}   # where GKD's dataset half comes from
    test = [t for t in tasks if t.split == cfg.test_split]
    eps = read_parquet("data/trajectories/oracle/episodes.parquet", "collect@oracle")
    steps = read_parquet("data/trajectories/oracle/steps.parquet", "collect@oracle")
    student = load_model_dir(cfg.student_dir)
    model, tok = student.model, student.tokenizer
    prompt = model_prompt(cfg.student_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model.eval()
    curve = [_greedy(model, tok, test, cfg, prompt)]
    with TemporaryDirectory() as tmp:
        for it, n in enumerate(counts[: cfg.iterations]):
            examples = dataset_samples(learn, eps, steps, tok, prompt, n, cfg.seed * 1000 + it)
            tcfg = replace(cfg.train, seed=cfg.seed * 1000 + it, epochs=float(cfg.epochs), max_steps=0,
                           dvclive=False, log_dir="", progress=False)
            model.train()
            train(model, examples, [], tcfg, Path(tmp) / f"i{it}", pad_id=pad)   # plain NLL
            model.eval()
            curve.append(_greedy(model, tok, test, cfg, prompt))
            print(json.dumps({"seed": seed, "iteration": it, "examples": len(examples), "curve": curve}), flush=True)
    return {"seed": seed, "demonstrations": counts, "curve": curve, "final": curve[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    runs = [control_run(s) for s in a.seeds]
    write_json({"what": "strong-start student, NLL on GKD's demonstration half only", "runs": runs},
               "experiments/gkd_sft_control.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
