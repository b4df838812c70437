"""Stage `distill`: a student learns from a larger teacher on its own samples (GKD, OPD,
AOPD, SCOPE).

Reads `data/tasks/tasks.parquet`, the student (`distill.start`: `models/warmup`, strong, or
`models/student_weak`, weak), the teacher (`models/teacher`), the oracle's trajectories (GKD's
dataset part) and `params.yaml:distill`; writes `models/distilled/`, `reports/details/distill.json`
(`train.distill_report`) and its headline `metrics/distill.json`, `reports/claims/distill.json` and DVCLive curves under
`dvclive/distill/`. Iterations are checkpointed under `checkpoints/distill/` and resume like
the rl stage's. Compare methods and starts with `dvc exp run -S distill.method=aopd -S
distill.start=weak` (or the grid: `make objectives-grid`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import exit_on_config_error, load_section
from distillery.evaluate.headline import DISTILL, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.train.card import card_prompt, iteration_log, resumable_run_dir
from distillery.train.distill import DistillConfig, run_distill
from distillery.train.distill_report import distill_claims, distill_metrics
from distillery.types import tasks_from_frame
from stages.usage import take_no_options

TASKS = "data/tasks/tasks.parquet"
DATASET = [Path("data/trajectories/oracle/episodes.parquet"), Path("data/trajectories/oracle/steps.parquet")]


def main(argv: list[str] | None = None) -> int:
    take_no_options("distill", __doc__, argv)
    cfg = load_section(DistillConfig, "distill")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    dataset = tuple(read_parquet(f, "collect@oracle") for f in DATASET)
    run_dir = resumable_run_dir("checkpoints/distill", cfg, [
        Path(__file__), Path(cfg.student_dir) / "model.safetensors", Path(cfg.teacher_dir) / "model.safetensors",
        TASKS, *DATASET])
    with iteration_log("dvclive/distill") as log:
        model, tok, refs, results = run_distill(cfg, tasks, dataset, run_dir, log=log)
    metrics = distill_metrics(cfg, refs, results, round(time.perf_counter() - t0, 1))
    save_model_dir("models/distilled", model, tok, {
        "metrics": metrics["final"], "config": asdict(cfg), "started_from": cfg.student_dir,
        "teacher": cfg.teacher_dir, "prompt": card_prompt(cfg.student_dir)})
    write_json(metrics, "reports/details/distill.json")
    write_json(pick(metrics, DISTILL), "metrics/distill.json")
    write_json([c.to_dict() for c in distill_claims(metrics)], "reports/claims/distill.json")
    closed = metrics["final"]["gap_closed"]
    print(f"distill: {cfg.method} from the {cfg.start} start: test success "
          f"{' -> '.join(f'{c:.3f}' for c in metrics['curve'])} (teacher {refs['teacher']:.3f}, gap closed "
          f"{'n/a' if closed is None else f'{closed:.2f}'}; {metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.distill", main, sys.argv[1:]))
