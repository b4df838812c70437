"""Stages `warmup` and `student_weak`: a tokenizer and a model trained on the oracle's
trajectories.

`python -m stages.warmup [--section NAME] [--track NAME]` (default `warmup`) reads `data/tasks/tasks.parquet`,
`data/trajectories/<teacher>/` and `params.yaml:<NAME>`; writes `models/<NAME>/` (weights,
tokenizer, config, card.json), `reports/details/<NAME>.json` with its headline `metrics/<NAME>.json` and the DVCLive curves under
`dvclive/<NAME>/`. Checkpoints go to `checkpoints/<NAME>/` (declared `persist`, so a killed
run resumes from the last one on the next `dvc repro`). `student_weak` (`base: warmup` in
params.yaml) is the same recipe stopped early, the distill stage's weak start; it trains the
same tokenizer from the same corpus, so it shares the student's vocabulary. With `--track
twx` the section is `twx_<NAME>` and every path is under the track's folders (stages/track.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, read_params, to_dict
from distillery.evaluate.headline import TRAINING, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.train.card import build_card
from distillery.train.warmup import WarmupConfig, warmup, warmup_metrics
from distillery.types import tasks_from_frame
from stages.track import Track, track_parser

TASKS = "data/tasks/tasks.parquet"


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("warmup", __doc__)
    ap.add_argument("--section", default="warmup", help="params.yaml section and output name (default: warmup)")
    args = ap.parse_args(argv)
    section, track = args.section, Track(args.track)
    out = track.path(f"models/{section}")
    ckpt, live = str(track.path(f"checkpoints/{section}")), str(track.path(f"dvclive/{section}"))
    tasks_file = track.path(TASKS)
    params = read_params()
    # A mistyped --section must not train a default model under its name (`warmup` alone may
    # rely on every default, as any missing section may).
    if section != "warmup" and track.section(section) not in params:
        recipes = {k for k, v in params.items() if isinstance(v, dict) and (k == "warmup" or v.get("base") == "warmup")}
        known = sorted(n for n in {r.removeprefix(f"{track.name}_") for r in recipes} if track.section(n) in params)
        ap.error(f"params.yaml has no section {track.section(section)!r}; --section takes {', '.join(known)}")
    cfg = track.load(WarmupConfig, section, params)
    if not cfg.train.log_dir:
        cfg.train.log_dir = live
    traj = track.path(Path("data/trajectories") / cfg.teacher)
    tasks = tasks_from_frame(read_parquet(tasks_file, track.section("tasks")))
    episodes = read_parquet(traj / "episodes.parquet", track.section(f"collect@{cfg.teacher}"))
    steps = read_parquet(traj / "steps.parquet", track.section(f"collect@{cfg.teacher}"))
    t0 = time.perf_counter()
    tok, model, result, stats = warmup(cfg, tasks, episodes, steps, ckpt)
    metrics = warmup_metrics(result, stats, round(time.perf_counter() - t0, 1))
    card = build_card(prompt=cfg.prompt, seed=cfg.train.seed,
                      data_files=[str(tasks_file), traj / "episodes.parquet", traj / "steps.parquet"],
                      metrics=metrics, params=to_dict(cfg), model_cfg=cfg.model, train_cfg=cfg.train,
                      model=model, extra={"teacher": cfg.teacher, "data_stats": stats.as_dict()})
    save_model_dir(out, model, tok, card)
    write_json(metrics, track.path(f"reports/details/{section}.json"))
    write_json(pick(metrics, TRAINING), track.path(f"metrics/{section}.json"))
    print(f"{section}: {stats.n_params / 1e6:.2f}M params, {result.steps} steps, "
          f"eval loss {result.metrics.get('eval_loss', float('nan')):.4f}, "
          f"{result.tokens_per_s:.0f} tokens/s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.warmup", main, sys.argv[1:]))
