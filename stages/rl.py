"""Stage `rl`: on-policy RL of the student on the held-out user (issue 5: GRPO, GiGPO, SIRI).

Reads `data/tasks/tasks.parquet`, the starting model (`rl.model_dir`, the warm-up student),
SIRI's starting skill bank `data/experience/skills.jsonl` (mined and validated by `mine`)
and `params.yaml:rl`; writes `models/rl/`, the final skill bank `data/experience/rl_skills.jsonl`,
`metrics/rl.json` (greedy test success before and after every iteration),
`metrics/rl_claims.json` and DVCLive curves under `dvclive/rl/`. Iterations are checkpointed
under `checkpoints/rl/` (persisted: a killed run resumes after its last finished one, and
inside an unfinished one from the training checkpoint).

Compare the methods with `dvc exp run -S rl.method=grpo` (or the grid: `make rl-grid`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import load_section
from distillery.io import read_parquet, write_json
from distillery.mining.store import read_pool, write_pool
from distillery.train.card import iteration_logger, resumable_run_dir
from distillery.train.rl import RLConfig, run_rl
from distillery.types import tasks_from_frame

TASKS = "data/tasks/tasks.parquet"
SKILLS = "data/experience/skills.jsonl"
OUT = "models/rl"
SKILLS_OUT = "data/experience/rl_skills.jsonl"
METRICS = "metrics/rl.json"
CLAIMS = "metrics/rl_claims.json"
CKPT = Path("checkpoints/rl")
LIVE = "dvclive/rl"
PAPERS = {"grpo": "GRPO (DeepSeekMath, arXiv 2402.03300)", "gigpo": "GiGPO (arXiv 2505.10978)",
          "siri": "SIRI (arXiv 2606.02355)"}


def main() -> int:
    from dvclive import Live

    from distillery.lm.model import save_model_dir

    cfg = load_section(RLConfig, "rl")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    skills = read_pool(SKILLS) if Path(SKILLS).is_file() else []
    run_dir = resumable_run_dir(CKPT, cfg, [Path(__file__), Path(cfg.model_dir) / "model.safetensors", TASKS, SKILLS])
    with Live(LIVE, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        model, tok, skills, before, results = run_rl(cfg, tasks, skills, run_dir, log=iteration_logger(live))
    curve = [before] + [r.test_success for r in results]
    metrics = {
        "method": cfg.method, "seed": cfg.seed,
        "before": {"test_success": before},
        "iterations": [asdict(r) for r in results],
        "final": {"test_success": curve[-1], "best_test_success": max(curve[1:]),
                  "gain": curve[-1] - before},
        "curve": curve,
        "config": {k: v for k, v in asdict(cfg).items() if k != "train"},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    save_model_dir(OUT, model, tok, {"metrics": metrics["final"], "config": asdict(cfg),
                                     "started_from": cfg.model_dir,
                                     "prompt": json.loads((Path(cfg.model_dir) / "card.json").read_text()).get("prompt", {})
                                     if (Path(cfg.model_dir) / "card.json").is_file() else {}})
    write_pool(SKILLS_OUT, skills)
    write_json(metrics, METRICS)
    write_json(claims(metrics), CLAIMS)
    print(f"rl: {cfg.method}, {cfg.iterations} iterations: {cfg.test_split} greedy success "
          f"{' -> '.join(f'{c:.3f}' for c in curve)} ({metrics['seconds']} s) -> {OUT}", file=sys.stderr)
    return 0


def claims(m: dict) -> list[dict]:
    """This run beside the issue's bar (one method, one seed); the comparisons between
    methods are the grid's (`flows/rl_grid.py`)."""
    curve = m["curve"]
    return [{
        "paper": PAPERS[m["method"]],
        "finding": f"{m['method']} raises the held-out user's test success above the warm-up model's",
        "paper_value": {"gigpo": "ALFWorld: above GRPO by more than 12 points", "siri": "ALFWorld 0.908 -> 0.930 (over GiGPO)"
                        }.get(m["method"], "-"),
        "measured": " -> ".join(f"{c:.3f}" for c in curve),
        "holds": bool(curve[-1] > curve[0]),
        "detail": f"greedy success before and after each of {len(curve) - 1} iterations, seed {m['seed']}; "
                  "one seed: spread is the grid's",
    }]



if __name__ == "__main__":
    sys.exit(main())
