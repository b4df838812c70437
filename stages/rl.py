"""Stage `rl`: on-policy RL of the student on the held-out user (GRPO, GiGPO, SIRI).

Reads `data/tasks/tasks.parquet`, the starting model (`rl.model_dir`, the warm-up student),
SIRI's starting skill bank `data/experience/skills.jsonl` (mined and validated by `mine`)
and `params.yaml:rl`; writes `models/rl/`, the final skill bank `data/experience/rl_skills.jsonl`,
`reports/details/rl.json` (greedy test success before and after every iteration) and its
headline `metrics/rl.json`, `reports/claims/rl.json` and DVCLive curves under `dvclive/rl/`. Iterations are checkpointed
under `checkpoints/rl/` (persisted: a killed run resumes after its last finished one, and
inside an unfinished one from the training checkpoint).

Compare the methods with `dvc exp run -S rl.method=grpo` (or the grid: `make objectives-grid`).
`--track twx` reads `params.yaml:twx_rl` and keeps every file under the track's folders
(stages/track.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import exit_on_config_error
from distillery.evaluate.headline import RL, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.mining.store import read_pool, write_pool
from distillery.train.card import card_prompt, iteration_log, resumable_run_dir
from distillery.train.rl import RLConfig, run_rl
from distillery.train.rl_report import rl_claims, rl_metrics
from distillery.types import tasks_from_frame
from stages.track import Track, track_parser

TASKS = "data/tasks/tasks.parquet"
SKILLS = "data/experience/skills.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("rl", __doc__)
    track = Track(ap.parse_args([] if argv is None else argv).track)   # main() alone: the agent track
    cfg = track.load(RLConfig, "rl")
    t0 = time.perf_counter()
    tasks_file, skills_file = track.path(TASKS), track.path(SKILLS)
    tasks = tasks_from_frame(read_parquet(tasks_file, track.section("tasks")))
    skills = read_pool(skills_file) if skills_file.is_file() else []
    run_dir = resumable_run_dir(track.path("checkpoints/rl"), cfg, [Path(__file__), Path(cfg.model_dir) / "model.safetensors",
                                                                    tasks_file, skills_file])
    with iteration_log(track.path("dvclive/rl")) as log:
        model, tok, skills, before, results = run_rl(cfg, tasks, skills, run_dir, log=log)
    metrics = rl_metrics(cfg, before, results, round(time.perf_counter() - t0, 1))
    save_model_dir(track.path("models/rl"), model, tok, {"metrics": metrics["final"], "config": asdict(cfg),
                                             "started_from": cfg.model_dir, "prompt": card_prompt(cfg.model_dir)})
    write_pool(track.path("data/experience/rl_skills.jsonl"), skills)
    write_json(metrics, track.path("reports/details/rl.json"))
    write_json(pick(metrics, RL), track.path("metrics/rl.json"))
    claims = rl_claims(metrics, command=f"dvc repro {track.stage('rl')}")
    write_json([c.to_dict() for c in claims], track.path("reports/claims/rl.json"))
    print(f"rl: {cfg.method}, {cfg.iterations} iterations: {cfg.test_split} greedy success "
          f"{' -> '.join(f'{c:.3f}' for c in metrics['curve'])} ({metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.rl", main, sys.argv[1:]))
