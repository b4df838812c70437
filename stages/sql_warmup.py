"""Stage `sql_warmup`: the SQL student (tokenizer + small Llama from scratch) trained on the
teacher's SQL episodes: TRUST-SQL's supervised warm-up before RL.

Reads `data/sql/tasks.parquet`, `data/sql/trajectories/<teacher>/` and `params.yaml:sql_warmup`
(a `WarmupConfig`, the agent track's recipe: the same library function, `train.warmup.warmup`);
writes `models/sql_warmup/` (weights, tokenizer, card.json), `reports/details/sql_warmup.json`, its
headline `metrics/sql_warmup.json` and the
DVCLive curves under `dvclive/sql_warmup/`; checkpoints go to `checkpoints/sql_warmup/`
(persisted: a killed run resumes). The validation databases never reach it: `sql_collect`
ran the teacher on learning databases only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, load_section, to_dict
from distillery.evaluate.headline import TRAINING, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.train.card import build_card
from distillery.train.warmup import WarmupConfig, warmup, warmup_metrics
from distillery.types import tasks_from_frame
from stages.usage import take_no_options

TASKS = "data/sql/tasks.parquet"
SECTION = "sql_warmup"


def main(argv: list[str] | None = None) -> int:
    take_no_options("sql_warmup", __doc__, argv)
    cfg = load_section(WarmupConfig, SECTION)
    if not cfg.train.log_dir:
        cfg.train.log_dir = f"dvclive/{SECTION}"
    traj = Path("data/sql/trajectories") / cfg.teacher
    episodes = read_parquet(traj / "episodes.parquet", f"sql_collect@{cfg.teacher}")
    steps = read_parquet(traj / "steps.parquet", f"sql_collect@{cfg.teacher}")
    seen = set(episodes["task_id"].to_list())
    tasks = [t for t in tasks_from_frame(read_parquet(TASKS, "sql_tasks")) if t.task_id in seen]
    t0 = time.perf_counter()
    tok, model, result, stats = warmup(cfg, tasks, episodes, steps, f"checkpoints/{SECTION}")
    metrics = warmup_metrics(result, stats, round(time.perf_counter() - t0, 1))
    card = build_card(prompt=cfg.prompt, seed=cfg.train.seed,
                      data_files=[TASKS, traj / "episodes.parquet", traj / "steps.parquet"],
                      metrics=metrics, params=to_dict(cfg), model_cfg=cfg.model, train_cfg=cfg.train,
                      model=model, extra={"teacher": cfg.teacher, "data_stats": stats.as_dict()})
    save_model_dir(f"models/{SECTION}", model, tok, card)
    write_json(metrics, f"reports/details/{SECTION}.json")
    write_json(pick(metrics, TRAINING), f"metrics/{SECTION}.json")
    print(f"{SECTION}: {stats.n_params / 1e6:.2f}M params, {result.steps} steps on {stats.train.examples} "
          f"sequences, eval loss {result.metrics.get('eval_loss', float('nan')):.4f}, "
          f"{result.tokens_per_s:.0f} tokens/s, {metrics['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_warmup", main, sys.argv[1:]))
