"""Stage `internalize`: distil the mined experience into the student's weights.

Reads the tasks, the starting pool (principles or instances), the oracle's trajectories
(replayed with their principles) and `params.yaml:internalize`; writes `models/internalized/`,
`data/experience/internalized_pool.jsonl`, `reports/details/internalize.json` (see
`train.internalize_report`), its headline `metrics/internalize.json`, `reports/claims/internalize.json` and `dvclive/internalize/`; resumes from `checkpoints/internalize/`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import load_section
from distillery.evaluate.headline import INTERNALIZE, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.mining.store import read_pool, write_pool
from distillery.train import internalize_report as report
from distillery.train.card import iteration_log, resumable_run_dir
from distillery.train.internalize import InternalizeConfig, model_prompt, run_internalize
from distillery.types import tasks_from_frame

TASKS = "data/tasks/tasks.parquet"
POOLS = {"principle": "data/experience/principles.jsonl", "instance": "data/experience/instances.jsonl"}
REPLAY = Path("data/trajectories/oracle")


def main() -> int:
    cfg = load_section(InternalizeConfig, "internalize")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    pool = read_pool(POOLS[cfg.granularity])
    if not pool:
        print(f"internalize: {POOLS[cfg.granularity]} is empty; distillation will only replay", file=sys.stderr)
    replay_files = [REPLAY / "episodes.parquet", REPLAY / "steps.parquet"]
    replay = tuple(read_parquet(f, "collect@oracle") for f in replay_files)
    run_dir = resumable_run_dir("checkpoints/internalize", cfg, [Path(__file__), POOLS[cfg.granularity],
                                Path(cfg.model_dir) / "model.safetensors", TASKS, *replay_files])
    before = report.reference_points(cfg, tasks, pool)
    with iteration_log("dvclive/internalize") as log:
        log({"success_plain": before["heldout_plain"],
             "success_with_experience": before["heldout_with_experience"]}, -1)
        model, tok, final_pool, results = run_internalize(cfg, tasks, pool, replay, run_dir, log=log)
    after = report.others_with_principles(model, tok, tasks, cfg)
    metrics = report.internalize_metrics(cfg, tasks, before, results, after, round(time.perf_counter() - t0, 1))
    save_model_dir("models/internalized", model, tok, {"prompt": asdict(model_prompt(cfg.model_dir)),
                                                        "metrics": metrics["final"], "config": asdict(cfg),
                                                        "started_from": cfg.model_dir})
    write_pool("data/experience/internalized_pool.jsonl", final_pool)
    write_json(metrics, "reports/details/internalize.json")
    write_json(pick(metrics, INTERNALIZE), "metrics/internalize.json")
    write_json([c.to_dict() for c in report.internalize_claims(metrics)], "reports/claims/internalize.json")
    print(f"internalize: {cfg.test_split} plain {before['heldout_plain']:.3f} -> {results[-1].success_plain:.3f} "
          f"({metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
