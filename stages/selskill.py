"""Stage `selskill`: DPO on invoke/skip pairs so the student learns when to call a skill
(SelSkill).

Reads `data/tasks/tasks.parquet`, the starting model (`selskill.model_dir`, the warm-up
student), the skill library `data/experience/skills.jsonl` (mined and validated by `mine`),
the oracle's demonstrations (the skill-enabled initialisation) and `params.yaml:selskill`;
writes `models/selskill/`, `reports/details/selskill.json` (`train.selskill_report`),
its headline `metrics/selskill.json`, `reports/claims/selskill.json` and DVCLive curves under `dvclive/selskill/`. Rounds are
checkpointed under `checkpoints/selskill/` (persisted: a killed run resumes after its last
finished round). Seeds: `dvc exp run -S selskill.seed=1` (or `make objectives-grid`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import exit_on_config_error, load_section
from distillery.evaluate.headline import SELSKILL, pick
from distillery.io import read_parquet, require, write_json
from distillery.lm.model import save_model_dir
from distillery.mining.store import read_pool
from distillery.train.card import card_prompt, iteration_log, resumable_run_dir
from distillery.train.selskill import SelSkillConfig, run_selskill
from distillery.train.selskill_report import precision_text, selskill_claims, selskill_metrics
from distillery.types import tasks_from_frame
from stages.usage import take_no_options

TASKS = "data/tasks/tasks.parquet"
SKILLS = "data/experience/skills.jsonl"
DEMOS = [Path("data/trajectories/oracle/episodes.parquet"), Path("data/trajectories/oracle/steps.parquet")]


def main(argv: list[str] | None = None) -> int:
    take_no_options("selskill", __doc__, argv)
    cfg = load_section(SelSkillConfig, "selskill")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    skills = read_pool(require(SKILLS, "mine"))
    demos = tuple(read_parquet(f, "collect@oracle") for f in DEMOS)
    run_dir = resumable_run_dir("checkpoints/selskill", cfg, [Path(__file__), Path(cfg.model_dir) / "model.safetensors",
                                                              TASKS, SKILLS, *DEMOS])
    with iteration_log("dvclive/selskill") as log:
        model, tok, before, rounds = run_selskill(cfg, tasks, skills, run_dir, demos, log=log)
    metrics = selskill_metrics(cfg, skills, before, rounds, round(time.perf_counter() - t0, 1))
    final = metrics["final"]["selskill"]
    save_model_dir("models/selskill", model, tok, {"metrics": final, "config": asdict(cfg),
                                                   "started_from": cfg.model_dir, "prompt": card_prompt(cfg.model_dir)})
    write_json(metrics, "reports/details/selskill.json")
    write_json(pick(metrics, SELSKILL), "metrics/selskill.json")
    write_json([c.to_dict() for c in selskill_claims(metrics)], "reports/claims/selskill.json")
    print(f"selskill: never {before['never']['success']:.3f}, always {before['always']['success']:.3f}, selskill "
          f"{' -> '.join(f'{c:.3f}' for c in metrics['curve'])} (precision {precision_text(final['precision'])}; "
          f"{metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.selskill", main, sys.argv[1:]))
