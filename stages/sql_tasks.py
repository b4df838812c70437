"""Stage `sql_tasks`: generate the SQL track's databases and validated questions, gate them.

Reads `params.yaml:sql_tasks`; writes `data/sql/databases/` (every database and its sibling
overlays), `data/sql/tasks.parquet` (train and test tasks) and `data/sql/validation.json`
(counts, seconds, bytes, and every rejection with its reasons).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distillery.config import exit_on_config_error, load_section
from distillery.envs.sql.config import SqlTasksConfig
from distillery.envs.sql.taskset import generate_sql_tasks
from distillery.io import write_json, write_parquet
from distillery.quality import GateError, gate
from distillery.quality.sql_suites import SQL_TASKS
from distillery.types import Task, tasks_to_frame
from stages.usage import take_no_options

OUT_DIR = "data/sql"
DATABASES = "data/sql/databases"
OUT = "data/sql/tasks.parquet"
VALIDATION = "data/sql/validation.json"
REPORTS = "reports/quality/sql_tasks"
QUARANTINE = "data/quarantine/sql_tasks"


def random_probe(cfg: SqlTasksConfig) -> Callable[[list[Task]], set[str]]:
    """The tasks `cfg.random_probes` random-policy episodes solve (run like any rollout, on the
    stage's `workers` processes: the episodes are the same however they are sharded)."""
    def probe(tasks: list[Task]) -> set[str]:
        from distillery.agents.base import PolicySpec
        from distillery.config import ExecutorConfig
        from distillery.rollout import RolloutConfig, run_episodes

        rcfg = RolloutConfig(k=cfg.random_probes, seed=cfg.seed, batch_size=64)
        executor = ExecutorConfig(kind="process" if cfg.workers > 1 else "inline", workers=cfg.workers)
        traj = run_episodes(tasks, PolicySpec("random", {"seed": cfg.seed}, "random"), rcfg, executor, progress=False)
        return set(traj.episodes.filter("success")["task_id"].to_list())
    return probe


def main(argv: list[str] | None = None) -> int:
    take_no_options("sql_tasks", __doc__, argv)
    cfg = load_section(SqlTasksConfig, "sql_tasks")
    t0 = time.perf_counter()
    shutil.rmtree(DATABASES, ignore_errors=True)       # no database of an earlier configuration survives
    result = generate_sql_tasks(cfg, OUT_DIR, probe=random_probe(cfg) if cfg.random_probes else None)
    frame = tasks_to_frame(result.tasks)
    Path(QUARANTINE).mkdir(parents=True, exist_ok=True)  # a declared out, even when empty
    try:
        gate(frame, SQL_TASKS, source=OUT, report_dir=REPORTS, quarantine_dir=QUARANTINE)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, OUT)
    report = dict(result.report)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["tasks_bytes"] = Path(OUT).stat().st_size
    report["rejected"] = [{"candidate_id": r.candidate_id, "db_id": r.db_id, "split": r.split,
                           "template": r.template, "question": r.question, "reasons": r.reasons}
                          for r in result.rejected]
    write_json(report, VALIDATION)
    mb = (report["database_bytes"] + report["tasks_bytes"]) / 1e6
    print(f"sql_tasks: kept {report['kept']} over {report['databases']} databases, rejected "
          f"{report['n_rejected']}, in {report['seconds']} s, {mb:.1f} MB -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_tasks", main, sys.argv[1:]))
