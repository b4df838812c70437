"""Held-out databases of a chosen size (about 20, 50 or 200 tables), for comparing schema
discovery with tools against the schema in the prompt as the schema grows.

Each database is new (its own seed; split `test`: never trained on), of the given domains
and naming styles, and its filler count is set so that core tables + decoys + fillers come to the wanted size
(a domain's core tables and decoys alone can exceed a small size: the database then has
no fillers and its real size is recorded). Questions are drawn and validated exactly as
`taskset.generate_database` does for the main task set (execution, decoy swap, siblings,
sqlglot, the reference replayed to 1.0); the random-policy probe is not run (it never
solves these tasks: docs/sql.md).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distillery.envs.sql.generator import DbSpec, build_database
from distillery.envs.sql.taskset import DbJob, generate_database
from distillery.types import Task


@dataclass
class ScaleConfig:
    """What `scale_tasks` generates (the `sql_scale` stage's params)."""

    sizes: list[int]
    dbs_per_size: int = 4
    questions_per_db: int = 8
    domains: tuple[str, ...] = ("healthcare", "education")
    styles: tuple[str, ...] = ("pascal_abbr", "prefixed", "legacy")
    n_siblings: int = 2
    max_per_template: int = 1
    max_result_rows: int = 50
    max_steps: int = 15
    seed: int = 0


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=6).digest(), "little")


def base_tables(spec: DbSpec) -> int:
    """Core tables + decoys of `spec` (what a database has with no fillers)."""
    with tempfile.TemporaryDirectory() as d:
        return build_database(replace(spec, n_fillers=0, n_siblings=0), Path(d) / "base.sqlite").layout.n_tables


def plan_scale(cfg: ScaleConfig, out_dir: str | Path) -> list[DbJob]:
    jobs = []
    for size in cfg.sizes:
        for i in range(cfg.dbs_per_size):
            db_id = f"scale{size:03d}-{i}"
            spec = DbSpec(seed=_seed(cfg.seed, "scale", db_id), domain=cfg.domains[i % len(cfg.domains)],
                          style=cfg.styles[i % len(cfg.styles)], n_fillers=0, n_siblings=cfg.n_siblings)
            spec = replace(spec, n_fillers=max(0, size - base_tables(spec)))
            jobs.append(DbJob(db_id, "test", spec, str(Path(out_dir) / "databases" / f"{db_id}.sqlite"),
                              cfg.questions_per_db, cfg.max_per_template, cfg.max_result_rows, cfg.max_steps,
                              cfg.seed))
    return jobs


def scale_tasks(cfg: ScaleConfig, out_dir: str | Path) -> tuple[list[Task], dict[str, Any]]:
    """Every database of `cfg` under `out_dir/databases/`, and its validated tasks; each
    task's `initial_state` records `size` (the wanted table count) and `n_tables`."""
    tasks: list[Task] = []
    report: dict[str, Any] = {"databases": [], "rejected": 0}
    for job, size in zip(plan_scale(cfg, out_dir), [s for s in cfg.sizes for _ in range(cfg.dbs_per_size)],
                         strict=True):
        res = generate_database(job)
        report["databases"].append({"db_id": job.db_id, "size": size, "n_tables": res.n_tables,
                                    "domain": job.spec.domain, "style": job.spec.style, "kept": len(res.tasks)})
        report["rejected"] += len(res.rejected)
        for t in res.tasks:
            state = {**t.initial_state, "size": size, "n_tables": res.n_tables}
            tasks.append(replace(t, task_id=t.task_id.replace("sql-test-", "sql-scale-"), initial_state=state))
    report["kept"] = {str(s): sum(t.initial_state["size"] == s for t in tasks) for s in cfg.sizes}
    return tasks, report
