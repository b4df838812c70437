"""Stage `teacher`: the distillation teacher (`train/teacher.py`: the warm-up student
deepened and trained on the same data).

Reads `data/tasks/tasks.parquet`, `data/trajectories/<teacher.trajectories>/`, the student
(`teacher.student_dir`) and `params.yaml:teacher`; writes `models/teacher/`,
`reports/details/teacher.json` with its headline `metrics/teacher.json` and DVCLive curves under `dvclive/teacher/`. Checkpoints go to
`checkpoints/teacher/` (persisted: a killed run resumes from the last one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.evaluate.headline import TRAINING, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.train.card import card_prompt
from distillery.train.teacher import TeacherConfig, grow_teacher
from distillery.types import tasks_from_frame
from stages.usage import take_no_options

TASKS = "data/tasks/tasks.parquet"
OUT = "models/teacher"
CKPT = "checkpoints/teacher"
LIVE = "dvclive/teacher"


def main(argv: list[str] | None = None) -> int:
    take_no_options("teacher", __doc__, argv)
    cfg = load_section(TeacherConfig, "teacher")
    if not cfg.train.log_dir:
        cfg.train.log_dir = LIVE
    traj = Path("data/trajectories") / cfg.trajectories
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    episodes = read_parquet(traj / "episodes.parquet", f"collect@{cfg.trajectories}")
    steps = read_parquet(traj / "steps.parquet", f"collect@{cfg.trajectories}")
    t0 = time.perf_counter()
    tok, model, result, sizes = grow_teacher(cfg, tasks, episodes, steps, CKPT)
    metrics = {**result.metrics, **sizes, "wall_s": round(time.perf_counter() - t0, 1)}
    save_model_dir(OUT, model, tok, {"prompt": card_prompt(cfg.student_dir), "metrics": metrics,
                                     "params": to_dict(cfg), "grown_from": cfg.student_dir})
    write_json(metrics, "reports/details/teacher.json")
    write_json(pick(metrics, TRAINING), "metrics/teacher.json")
    print(f"teacher: {sizes['student_params'] / 1e6:.2f}M -> {sizes['teacher_params'] / 1e6:.2f}M params "
          f"({cfg.n_layers} layers), {result.steps} steps, eval loss {result.metrics.get('eval_loss', float('nan')):.4f}"
          f" -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.teacher", main, sys.argv[1:]))
