"""Stage `sql_rl`: Dual-Track GRPO (or standard GRPO) of the SQL student.

Reads `data/sql/tasks.parquet`, the warm-up student (`sql_rl.model_dir`) and
`params.yaml:sql_rl` and `sql_track`; learns on train-split tasks outside the validation
databases and logs greedy validation accuracy after every iteration (the test split is
never read here); writes `models/sql_rl/`, `reports/details/sql_rl.json`, its headline
`metrics/sql_rl.json` and DVCLive curves under
`dvclive/sql_rl/`. Iterations are checkpointed under `checkpoints/sql_rl/` (persisted).

Compare the methods with `dvc exp run -S sql_rl.method=grpo` (or the grid: `make sql-grid`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from distillery.config import exit_on_config_error, load_section, read_params
from distillery.evaluate.headline import SQL_RL, pick
from distillery.io import read_parquet, write_json
from distillery.lm.model import save_model_dir
from distillery.train.card import card_prompt, iteration_log, resumable_run_dir
from distillery.train.sql_report import sql_rl_metrics
from distillery.train.sql_rl import (
    SqlRLConfig,
    SqlRLRun,
    SqlTrackConfig,
    run_sql_rl,
    split_train,
    spread_slice,
)
from distillery.types import tasks_from_frame
from stages.usage import take_no_options

TASKS = "data/sql/tasks.parquet"


def main(argv: list[str] | None = None) -> int:
    take_no_options("sql_rl", __doc__, argv)
    params = read_params()
    cfg = load_section(SqlRLConfig, "sql_rl", params)
    track = load_section(SqlTrackConfig, "sql_track", params)
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "sql_tasks"))
    split = split_train(tasks, track)
    learn = split.learn
    validation = spread_slice(split.validation, cfg.validation_tasks) if cfg.validation_tasks else []
    run_dir = resumable_run_dir("checkpoints/sql_rl", SqlRLRun(cfg, track),
                                [Path(__file__), Path(cfg.model_dir) / "model.safetensors", TASKS])
    with iteration_log("dvclive/sql_rl") as log:
        model, tok, before, results = run_sql_rl(cfg, track, learn, validation, run_dir, log=log)
    metrics = sql_rl_metrics(cfg, track, before, results, round(time.perf_counter() - t0, 1))
    save_model_dir("models/sql_rl", model, tok, {"metrics": metrics["final"], "config": asdict(cfg),
                                                 "track": asdict(track), "started_from": cfg.model_dir,
                                                 "prompt": card_prompt(cfg.model_dir)})
    write_json(metrics, "reports/details/sql_rl.json")
    write_json(pick(metrics, SQL_RL), "metrics/sql_rl.json")
    print(f"sql_rl: {cfg.method}, {cfg.iterations} iterations, validation accuracy "
          f"{' -> '.join(f'{c:.3f}' for c in metrics['curve'])} ({metrics['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_rl", main, sys.argv[1:]))
