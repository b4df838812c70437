"""The SQL track's task set: generated databases, validated questions, `Task` records.

`generate_sql_tasks(cfg, out_dir)` writes `out_dir/databases/` (each database and its
sibling overlays) and returns the tasks (pure data: `initial_state` names the database by
path, relative when `out_dir` is) with every rejection and its reasons. Splits are by
database *and* by domain/naming style: a test database's domain or style never occurs in
training (`SqlTasksConfig` enforces it).

A question is kept when it passes `validate.validate_candidate` (execution, decoy swap,
siblings, sqlglot), is not a duplicate in its database, and its reference solution —
search each gold table, describe it, propose exactly the gold schema, execute, submit —
scores 1.0 in the environment with every check passed. `probe(tasks)` (the stage passes
a random-policy rollout) returns the tasks a weak policy solved; they are rejected too.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery.envs.actions import format_call
from distillery.envs.sql.config import SqlTasksConfig
from distillery.envs.sql.domains import domain
from distillery.envs.sql.engine import ReadOnlyDb
from distillery.envs.sql.env import PAGE_DESCRIBE, PAGE_SEARCH, SqlEnv
from distillery.envs.sql.generator import BuiltDb, DbSpec, build_database
from distillery.envs.sql.naming import split_words
from distillery.envs.sql.questions import TEMPLATES, Candidate, Ctx, candidates
from distillery.envs.sql.schema import DbMeta, load_meta, search_tables
from distillery.envs.sql.validate import validate_candidate
from distillery.types import Task, ToolCall

ENV_NAME = "sql"


@dataclass(frozen=True)
class SqlRejection:
    candidate_id: str
    db_id: str
    split: str
    template: str
    question: str
    reasons: list[str]


@dataclass
class SqlTaskSet:
    tasks: list[Task]
    rejected: list[SqlRejection]
    report: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Reference solutions and tasks (shared with the real databases and the families)
# ---------------------------------------------------------------------------------------


def oracle_search_query(meta: DbMeta, table: str, hints: Sequence[str] = ()) -> str:
    """The first of: the English words for the table, its name's word pieces, its full name,
    whose search puts the table on the first page of results."""
    target = table.lower()
    for q in [*hints, *split_words(table), table]:
        q = q.strip().lower()
        if len(q) < 2:
            continue
        hits = search_tables(meta, q)[:PAGE_SEARCH]
        if any(t.name.lower() == target for t in hits):
            return q
    return table


def reference_solution(meta: DbMeta, gold_sql: str, tables: Sequence[str], columns: Sequence[str],
                       hints: dict[str, list[str]] | None = None) -> list[ToolCall]:
    """search -> describe (every page holding a gold column) per table -> propose the gold
    schema -> execute -> submit."""
    calls: list[ToolCall] = []
    by_table: dict[str, list[str]] = {}
    for col in columns:
        t, _, c = col.rpartition(".")
        by_table.setdefault(t.lower(), []).append(c.lower())
    for t in tables:
        info = meta.table(t)
        if info is None:
            raise ValueError(f"gold table {t} is not in the database")
        calls.append(ToolCall("search_tables", {"query": oracle_search_query(meta, info.name, (hints or {}).get(t, []))}))
        pages = sorted({1} | {i // PAGE_DESCRIBE + 1 for i, c in enumerate(info.columns)
                              if c.name.lower() in by_table.get(t.lower(), [])})
        for p in pages:
            calls.append(ToolCall("describe_table", {"table": info.name} | ({"page": p} if p > 1 else {})))
    calls.append(ToolCall("propose_schema", {"tables": ", ".join(tables), "columns": ", ".join(columns)}))
    calls.append(ToolCall("execute_sql", {"sql": gold_sql}))
    calls.append(ToolCall("submit", {"sql": gold_sql}))
    return calls


def make_task(task_id: str, family: str, split: str, profile: str, hint: str, question: str,
              state: dict[str, Any], gold_sql: str, tables: Sequence[str], columns: Sequence[str],
              solution: list[ToolCall], seed: int, max_steps: int) -> Task:
    return Task(
        task_id=task_id, family=family, split=split, profile=profile, hint=hint, instruction=question,
        initial_state={"question": question, **state}, reference_solution=solution,
        checks=[{"type": "execution", "gold_sql": gold_sql, "rule": "set"},
                {"type": "schema", "tables": list(tables), "columns": list(columns)}],
        seed=seed, max_steps=max(max_steps, len(solution) + 4), env=ENV_NAME,
    )


def replay_oracle(env: SqlEnv, task: Task) -> list[str]:
    """Why the reference solution does not score 1.0 with every check passed (none: it does)."""
    env.reset(task)
    for i, call in enumerate(task.reference_solution):
        res = env.step(format_call(call))
        if not res.valid:
            return [f"oracle step {i} ({call.tool}) is invalid: {res.error}"]
    ver = env.verify()
    return [f"oracle fails {c.name}: {c.detail}" for c in ver.checks if not c.passed]


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=6).digest(), "little")


# ---------------------------------------------------------------------------------------
# One database
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DbJob:
    db_id: str
    split: str
    spec: DbSpec
    path: str                       # where the database is written (and what tasks name)
    questions: int
    max_per_template: int
    max_result_rows: int
    max_steps: int
    seed: int


@dataclass
class DbResult:
    job: DbJob
    tasks: list[Task]
    rejected: list[SqlRejection]
    size_bytes: int
    n_tables: int


def select_questions(built: BuiltDb, rng: random.Random, want: int, max_per_template: int,
                     max_rows: int, templates: Sequence[str] | None = None) -> tuple[list[Candidate], list[tuple[Candidate, list[str]]]]:
    """Validated candidates, round-robin over the templates in a seeded order, at most
    `max_per_template` each, until `want`; and the rejected ones with their reasons."""
    meta = load_meta(built.path)
    main = ReadOnlyDb(built.path)
    sibs = [ReadOnlyDb(p, base=built.path) for p in built.siblings]
    try:
        ctx = Ctx(domain(built.spec.domain), built.layout, built.data, rng)
        names = list(templates or TEMPLATES)
        rng.shuffle(names)
        queues = {n: candidates(n, ctx) for n in names}
        decoys = {built.layout.tables[k]: v for k, v in built.layout.decoys.items()}
        kept: list[Candidate] = []
        rejected: list[tuple[Candidate, list[str]]] = []
        per: Counter[str] = Counter()
        seen: set[str] = set()
        while len(kept) < want and any(queues.values()):
            for n in names:
                if len(kept) >= want:
                    break
                while queues[n] and per[n] < max_per_template:
                    cand = queues[n].pop(0)
                    if cand.question in seen:
                        rejected.append((cand, ["duplicate question in this database"]))
                        continue
                    checked = validate_candidate(cand, main, sibs, meta, decoys, max_rows)
                    if checked.ok:
                        seen.add(cand.question)
                        kept.append(cand)
                        per[n] += 1
                        break
                    rejected.append((cand, checked.reasons))
                if per[n] >= max_per_template:
                    queues[n] = []
        return kept, rejected
    finally:
        main.close()
        for s in sibs:
            s.close()


def generate_database(job: DbJob) -> DbResult:
    """Build one database and its validated tasks; a pure function of `job`."""
    built = build_database(job.spec, job.path)
    rng = random.Random(_seed(job.seed, "questions", job.db_id))
    kept, bad = select_questions(built, rng, job.questions, job.max_per_template, job.max_result_rows)
    meta = load_meta(built.path)
    dom = domain(job.spec.domain)
    hints = {built.layout.tables[t.key]: [t.english.split()[-1], *t.words] for t in dom.tables}
    state = {"db": job.path, "siblings": [str(Path(job.path).with_name(p.name)) for p in built.siblings],
             "db_id": job.db_id, "domain": job.spec.domain, "style": job.spec.style}
    tasks: list[Task] = []
    rejected = [SqlRejection(f"{job.db_id}-{c.template}-r{i}", job.db_id, job.split, c.template, c.question, r)
                for i, (c, r) in enumerate(bad)]
    env = SqlEnv()
    try:
        for i, cand in enumerate(kept):
            tid = f"sql-{job.split}-{job.db_id}-{i:02d}-{cand.template}"
            solution = reference_solution(meta, cand.sql, cand.tables, cand.columns, hints)
            task = make_task(tid, f"sql_{cand.template}", job.split, job.spec.style, TEMPLATES[cand.template][1],
                             cand.question, state, cand.sql, cand.tables, cand.columns, solution,
                             _seed(job.seed, tid), job.max_steps)
            reasons = replay_oracle(env, task)
            if reasons:
                rejected.append(SqlRejection(tid, job.db_id, job.split, cand.template, cand.question, reasons))
                continue
            tasks.append(task)
    finally:
        env.close()
    return DbResult(job, tasks, rejected, built.size_bytes, built.layout.n_tables)


# ---------------------------------------------------------------------------------------
# The whole set
# ---------------------------------------------------------------------------------------


def plan_databases(cfg: SqlTasksConfig, out_dir: str | Path) -> list[DbJob]:
    """Every database to generate: train ones cycle over train domains x styles, test ones
    over test domains x styles."""
    jobs: list[DbJob] = []
    for split, n, domains, styles in (("train", cfg.n_train_dbs, cfg.train_domains, cfg.train_styles),
                                      ("test", cfg.n_test_dbs, cfg.test_domains, cfg.test_styles)):
        for i in range(n):
            db_id = f"{split}{i:03d}"
            rng = random.Random(_seed(cfg.seed, "db", db_id))
            spec = DbSpec(seed=_seed(cfg.seed, "spec", db_id), domain=domains[i % len(domains)],
                          style=styles[(i // len(domains) + i) % len(styles)],
                          n_fillers=rng.randint(cfg.min_fillers, cfg.max_fillers), n_siblings=cfg.n_siblings)
            jobs.append(DbJob(db_id, split, spec, str(Path(out_dir) / "databases" / f"{db_id}.sqlite"),
                              cfg.questions_per_db, cfg.max_per_template, cfg.max_result_rows, cfg.max_steps,
                              cfg.seed))
    return jobs


def generate_sql_tasks(cfg: SqlTasksConfig, out_dir: str | Path,
                       probe: Callable[[list[Task]], set[str]] | None = None,
                       progress: Callable[[int], Any] | None = None) -> SqlTaskSet:
    """Generate every database of `cfg` under `out_dir/databases/` and its validated tasks.

    `probe(tasks)` returns the ids of tasks a random policy solved (rejected);
    `progress(n)` is called after each database with its number of kept tasks.
    """
    t0 = time.perf_counter()
    jobs = plan_databases(cfg, out_dir)
    results: list[DbResult] = []
    if cfg.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        # spawn, not fork: a forked child of a process holding torch/OpenMP threads can hang.
        with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as ex:
            for res in ex.map(generate_database, jobs, chunksize=1):
                results.append(res)
                if progress:
                    progress(len(res.tasks))
    else:
        for job in jobs:
            results.append(generate_database(job))
            if progress:
                progress(len(results[-1].tasks))
    tasks = [t for r in results for t in r.tasks]
    rejected = [x for r in results for x in r.rejected]
    if probe is not None and cfg.random_probes > 0 and tasks:
        solved = probe(tasks)
        for t in tasks:
            if t.task_id in solved:
                rejected.append(SqlRejection(t.task_id, t.initial_state["db_id"], t.split, t.family, t.instruction,
                                             ["a random policy solved it (trivially solvable)"]))
        tasks = [t for t in tasks if t.task_id not in solved]
    seconds = time.perf_counter() - t0
    report = summarise(cfg, results, tasks, rejected, seconds)
    for split, n_db in (("train", cfg.n_train_dbs), ("test", cfg.n_test_dbs)):
        want = n_db * cfg.questions_per_db
        got = report["kept"].get(split, 0)
        if want and got < cfg.min_kept_fraction * want:
            raise RuntimeError(f"sql_tasks: the {split} split kept {got} of {want} wanted questions "
                               f"(< {cfg.min_kept_fraction:.0%}); see the rejections, or raise questions_per_db "
                               "or max_per_template")
    return SqlTaskSet(tasks, rejected, report)


def summarise(cfg: SqlTasksConfig, results: list[DbResult], tasks: list[Task], rejected: list[SqlRejection],
              seconds: float) -> dict[str, Any]:
    reasons = Counter(r.reasons[0].split(":")[0] for r in rejected)
    dbs = {r.job.db_id: r for r in results}
    return {
        "kept": dict(Counter(t.split for t in tasks)),
        "n_rejected": len(rejected),
        "databases": {s: sum(r.job.split == s for r in results) for s in ("train", "test")},
        "databases_with_tasks": {s: len({t.initial_state["db_id"] for t in tasks if t.split == s})
                                 for s in ("train", "test")},
        "templates": dict(sorted(Counter(t.family for t in tasks).items())),
        "domains": {s: dict(Counter(t.initial_state["domain"] for t in tasks if t.split == s)) for s in ("train", "test")},
        "styles": {s: dict(Counter(t.initial_state["style"] for t in tasks if t.split == s)) for s in ("train", "test")},
        "tables_per_database": {"min": min((r.n_tables for r in results), default=0),
                                "max": max((r.n_tables for r in results), default=0)},
        "database_bytes": sum(r.size_bytes for r in results),
        "rejection_reasons": dict(reasons.most_common()),
        "seconds": round(seconds, 2),
        "config": asdict(cfg),
        "unseen_in_test": {"domains": sorted(set(cfg.test_domains) - set(cfg.train_domains)),
                           "styles": sorted(set(cfg.test_styles) - set(cfg.train_styles))},
        "validation": ["gold SQL runs, non-empty and non-trivial", "the filter narrows the result",
                       "result changes when any gold table is swapped for any of its decoys",
                       "runs on every sibling, no tie at a top-k cut-off", "gold schema agrees with sqlglot",
                       "no duplicate question in a database", "the oracle scores 1.0 with every check passed",
                       f"{cfg.random_probes} random episodes fail"],
        "db_ids": sorted(dbs),
    }
