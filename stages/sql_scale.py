"""Stage `sql_scale`: held-out databases of about 20, 50 and 200 tables, for comparing schema
discovery with tools against the schema in the prompt as the schema grows. New databases
(their own seeds) of the training domains and naming styles by default: the student trained
here does not transfer to unseen domains (docs/sql.md), so a comparison there would compare
zeros.

Reads `params.yaml:sql_scale`; writes `data/sql/scale/databases/`, `data/sql/scale/tasks.parquet`
(gated by the `sql_tasks` suite) and `data/sql/scale/validation.json` (each database's real
table count and kept questions).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distillery.config import _f, exit_on_config_error, load_section
from distillery.envs.sql.scale import ScaleConfig, scale_tasks
from distillery.io import write_json, write_parquet
from distillery.quality import GateError, gate
from distillery.quality.sql_suites import SQL_TASKS
from distillery.types import tasks_to_frame
from stages.usage import take_no_options

OUT_DIR = "data/sql/scale"
OUT = "data/sql/scale/tasks.parquet"


@dataclass
class SqlScaleConfig:
    """`sql_scale` stage: held-out databases of chosen sizes."""

    sizes: list[int] = field(default_factory=lambda: [20, 50, 200], metadata={"help": "wanted table counts"})
    dbs_per_size: int = _f(4, "databases per size (test domains x naming styles)")
    questions_per_db: int = _f(8, "validated questions per database (one per template at most)")
    domains: list[str] = field(default_factory=lambda: ["retail", "hr", "logistics", "finance"],
                               metadata={"help": "domains of the databases (default: the training ones, new databases)"})
    styles: list[str] = field(default_factory=lambda: ["snake", "snake_abbr", "camel", "upper"],
                              metadata={"help": "naming styles of the databases (default: the training ones)"})
    seed: int = _f(0, "seed of the databases and questions")

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1 or self.dbs_per_size < 1 or self.questions_per_db < 1:
            raise ValueError("sql_scale: sizes must be positive, dbs_per_size and questions_per_db >= 1")


def main(argv: list[str] | None = None) -> int:
    take_no_options("sql_scale", __doc__, argv)
    cfg = load_section(SqlScaleConfig, "sql_scale")
    t0 = time.perf_counter()
    shutil.rmtree(Path(OUT_DIR) / "databases", ignore_errors=True)
    tasks, report = scale_tasks(ScaleConfig(sizes=list(cfg.sizes), dbs_per_size=cfg.dbs_per_size,
                                            questions_per_db=cfg.questions_per_db, domains=tuple(cfg.domains),
                                            styles=tuple(cfg.styles), seed=cfg.seed), OUT_DIR)
    frame = tasks_to_frame(tasks)
    Path("data/quarantine/sql_scale").mkdir(parents=True, exist_ok=True)
    try:
        gate(frame, SQL_TASKS, source=OUT, report_dir="reports/quality/sql_scale",
             quarantine_dir="data/quarantine/sql_scale")
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, OUT)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(report, f"{OUT_DIR}/validation.json")
    print(f"sql_scale: {len(tasks)} tasks {report['kept']} in {report['seconds']} s -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_scale", main, sys.argv[1:]))
