"""A grid of DVC experiments as one command: cells x seeds, queued, run, collected, published.

    python -m flows.grid [--grid internalize|objectives|sql] [--only PREFIX] [--seeds 0 1 2]
                         [--set internalize.train.max_steps=60 ...] [--jobs 1] [--tag NAME] [--collect-only]
                         [--replace]

Three grids are defined (`GRIDS`): `internalize` (8 cells of granularity x injection
x regime, the `internalize` stage; the default), `objectives` (GRPO / GiGPO /
SIRI with the `rl` stage, OPD / AOPD / SCOPE from the strong and the weak start with the
`distill` stage; `evaluate.objectives_grid`) and `sql` (TRUST-SQL's comparisons through the
`sql_evaluate` stage: Dual-Track / GRPO, no Propose phase, schema in the prompt, no warm-up;
`evaluate.sql_grid`, record `experiments/sql_grid.json`, stage `sql_grid`). Below, the internalize grid's names; the
objectives grid's are `og-<tag>-...`, `experiments/objectives_grid.json`, the
`objectives_grid` stage and `reports/objectives_grid.{md,png}`.

What it does, as a Prefect flow (`experiment-grid`):
1. queues one `dvc exp run --queue internalize -S internalize.granularity=... -S
   internalize.injection=... -S internalize.regime=... -S internalize.seed=...` per cell and
   seed (plus every `--set`), named `ig-<tag>-<cell>-s<seed>`;
2. runs the queue (`dvc exp run --run-all -j N`); a failed experiment is reported, not fatal;
3. reads each finished experiment's `reports/details/internalize.json` (a DVC-cached output) at its Git ref;
4. records them in `experiments/internalize_grid.json` (kept in Git: the measurements, an
   input like params.yaml) and runs `dvc repro claims`: the `internalize_grid` stage renders
   `reports/internalize_grid.{md,png}` (every run, and success per iteration, mean ± std
   over seeds) and `reports/claims/internalize_grid.json`, and `claims` puts them on
   `reports/claims.md`; publishes the table and the findings as Prefect artifacts.

The record is never emptied: when no run of the tag was collected, nothing is written and
the command exits 2; and a record made under another --tag is replaced only with --replace
(without it the command exits 2 before queueing anything). Argument mistakes (--jobs 0, a
negative or repeated seed, a tag DVC would refuse, an --only that matches no cell, a --set
without '=', no such --repo) also exit 2 before anything is queued.

Needs the pipeline's upstream outputs in the DVC cache (run `make repro` first) and a Git
commit to base the experiments on. Uncommitted changes to tracked files are queued with
them (DVC stashes the workspace per queued experiment).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dvc.api
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from distillery.evaluate import grid as internalize_spec
from distillery.evaluate import objectives_grid as objectives_spec
from distillery.evaluate import sql_grid as sql_spec
from distillery.evaluate.claims import claims_table, read_claims
from distillery.io import write_json
from flows.pipeline import STARTUP_HINT, repo_problem, run_dvc, startup_timed_out, startup_timeout

# A tag goes into DVC experiment names (`ig-<tag>-...`), which must be valid Git ref names;
# the names' own parts are letters, digits and '-'.
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Grid:
    """One grid: its pure module (cells, exp_name, parse_exp_name, runs_from_record, table),
    where its record goes, and which stage's rows end up on the claims page."""

    name: str
    spec: ModuleType
    record: str
    claims: str
    title: str

    def target(self, cell: Any) -> str:
        return getattr(cell, "target", "internalize")

    def metrics_file(self, cell: Any) -> str:
        return getattr(cell, "metrics_file", "reports/details/internalize.json")


GRIDS = {
    "internalize": Grid("internalize", internalize_spec, "experiments/internalize_grid.json",
                        "reports/claims/internalize_grid.json", "Internalization grid"),
    "objectives": Grid("objectives", objectives_spec, "experiments/objectives_grid.json",
                       "reports/claims/objectives_grid.json", "RL and distillation grid"),
    "sql": Grid("sql", sql_spec, "experiments/sql_grid.json", "reports/claims/sql_grid.json", "SQL grid"),
}
RECORD = GRIDS["internalize"].record


class RecordRefused(RuntimeError):
    """Publishing would lose the grid's recorded runs: nothing was written."""


def record_refusal(record: dict[str, Any], collected: list[dict[str, Any]], tag: str, record_file: str,
                   replace: bool) -> str | None:
    """Why the runs `collected` now must not replace `record` (None when they may).

    With no run collected, the new record would hold only what `keep_recorded` keeps (nothing,
    under another tag): refused. A record that holds runs of another tag is replaced only with
    `replace` (`--replace`)."""
    if not collected:
        return (f"no finished run of tag {tag!r} was collected (no experiment named for it here, or none "
                f"of them has its results): {record_file} left as it is")
    return tag_refusal(record, tag, record_file, replace)


def tag_refusal(record: dict[str, Any], tag: str, record_file: str, replace: bool) -> str | None:
    """Why a grid of `tag` must not replace `record` (None when it may): it holds runs of another tag."""
    old = record.get("tag")
    if replace or old == tag or not record.get("runs"):
        return None
    return (f"{record_file} records {len(record['runs'])} runs of tag {old!r}, not {tag!r}: pass --tag {old} to "
            f"add to them, or --replace to replace that record with this grid's runs")


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _dvc(repo: Path, *args: str, check: bool = True, env_extra: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    p = run_dvc(repo, *args, env_extra=env_extra)
    if check and p.returncode:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed ({p.returncode}) in {repo}:\n{(p.stderr or p.stdout)[-3000:]}")
    return p


def select_cells(cells: list[Any], only: str) -> list[Any]:
    """The cells whose label starts with `only` or one of its comma-separated prefixes."""
    prefixes = only.split(",")
    return [c for c in cells if any(c.label.startswith(p) for p in prefixes)]


@task(cache_policy=NO_CACHE)
def queue_runs(repo: str, seeds: list[int], sets: list[str], tag: str, grid: str = "internalize",
               only: str = "") -> list[str]:
    """Queue every cell (whose label starts with `only`, or one of its comma-separated
    prefixes) x seed; returns the experiment names."""
    g = GRIDS[grid]
    names = []
    chosen = select_cells(g.spec.cells(), only)
    if not chosen:
        raise ValueError(f"no cell of the {grid} grid has a label starting with {only!r}: "
                         f"{[c.label for c in g.spec.cells()]}")
    for cell in chosen:
        for seed in seeds:
            name = g.spec.exp_name(cell, seed, tag)
            args = ["exp", "run", "--queue", "-n", name]
            for s in cell.overrides(seed) + list(sets):
                args += ["-S", s]
            _dvc(Path(repo), *args, g.target(cell))
            names.append(name)
    print(f"queued {len(names)} experiments ({len(chosen)} cells x {len(seeds)} seeds), tag {tag}")
    return names


@task(cache_policy=NO_CACHE)
def run_queue(repo: str, jobs: int) -> dict[str, Any]:
    """Run everything queued; a failed experiment shows up as missing when collecting."""
    t0 = time.perf_counter()
    # Parallel experiments share the cores: each gets its share of torch threads (small
    # models scale poorly over threads, and oversubscribed torch threads stall each other).
    threads = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    print(f"running the queue, {jobs} at a time; follow it with `dvc queue status` and `dvc queue logs <name>`")
    p = _dvc(Path(repo), "exp", "run", "--run-all", "-j", str(jobs), check=False,
             env_extra={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} if jobs > 1 else None)
    took = time.perf_counter() - t0
    if p.returncode:
        print(f"dvc exp run --run-all exited {p.returncode} (failed experiments are listed by `dvc queue status`):\n"
              f"{(p.stderr or p.stdout)[-2000:]}")
    return {"returncode": p.returncode, "seconds": round(took, 1)}


def exp_refs(repo: Path) -> dict[str, str]:
    """Experiment name -> commit, from Git's `refs/exps` (the name is the ref's last part)."""
    out = subprocess.run(["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout
    refs = {}
    for line in out.splitlines():
        ref, sha = line.rsplit(" ", 1)
        if ref.startswith("refs/exps/") and ref.count("/") >= 4:   # refs/exps/ab/cdef.../<name>
            refs[ref.rsplit("/", 1)[1]] = sha
    return refs


@task(cache_policy=NO_CACHE)
def collect(repo: str, tag: str, grid: str = "internalize") -> list[dict[str, Any]]:
    """Every finished run of grid `tag`: its cell, seed and record (e.g. `reports/details/internalize.json`)."""
    g = GRIDS[grid]
    runs = []
    for name, sha in sorted(exp_refs(Path(repo)).items()):
        parsed = g.spec.parse_exp_name(name, tag)
        if parsed is None:
            continue
        cell, seed = parsed
        path = g.metrics_file(cell)
        try:   # the metrics are a DVC-cached output: read through the experiment's dvc.lock
            text = dvc.api.read(path, repo=repo, rev=sha)
        except Exception as e:  # noqa: BLE001 - any failure to read one run skips that run, named
            print(f"{name}: no {path} at {sha[:8]} ({type(e).__name__}: {e}); skipped")
            continue
        runs.append({**asdict(cell), "seed": seed, "experiment": name, "metrics": json.loads(text)})
    print(f"collected {len(runs)} finished runs for tag {tag}")
    return runs


def keep_recorded(record: dict[str, Any], runs: list[dict[str, Any]], tag: str, spec: ModuleType,
                  rerun_labels: set[str]) -> list[dict[str, Any]]:
    """The runs of an earlier record of grid `tag` that this collection leaves in place.

    A run is kept when it was recorded under the same tag, was not collected again (same
    experiment name), and its cell was not re-run now (`rerun_labels`). Experiments live as
    Git refs on the machine that ran them; without this, re-running some cells (`--only`) on
    another machine, or collecting there, would drop every other recorded run.
    """
    if record.get("tag") != tag:
        return []
    collected = {r["experiment"] for r in runs}
    kept = []
    for r in record.get("runs", []):
        parsed = spec.parse_exp_name(str(r.get("experiment", "")), tag)
        if parsed is None or r["experiment"] in collected or parsed[0].label in rerun_labels:
            continue
        kept.append(r)
    return kept


@task(cache_policy=NO_CACHE)
def publish(repo: str, runs: list[dict[str, Any]], tag: str, sets: list[str], grid: str = "internalize",
            ) -> list[dict[str, Any]]:
    """Record the runs (kept in Git), let the grid's stage and `claims` render them, and
    publish the run table and the findings."""
    g = GRIDS[grid]
    root = Path(repo)
    if not runs:   # an empty record would delete every recorded run from Git's working tree
        raise RecordRefused(f"no run of tag {tag!r} to record: {g.record} left as it is")
    write_json({"tag": tag, "sets": sets, "runs": runs}, root / g.record)
    _dvc(root, "repro", "claims")
    rows = read_claims(root / g.claims)   # the stage's rows
    key = f"{g.name}-grid"
    create_table_artifact(key=key, table=g.spec.table(g.spec.runs_from_record({"runs": runs})),
                          description=f"{g.title} {tag}")
    md = "\n".join(claims_table(rows))
    create_markdown_artifact(key=f"{key}-claims", markdown=md, description="Paper findings vs the grid")
    return [r.to_dict() for r in rows]


@flow(name="experiment-grid", log_prints=True)
def experiment_grid(repo: str = ".", seeds: list[int] | None = None, sets: list[str] | None = None,
                    jobs: int = 1, tag: str | None = None, collect_only: bool = False,
                    grid: str = "internalize", only: str = "", replace: bool = True) -> dict[str, Any]:
    """Queue and run a grid's cells x seeds as DVC experiments; publish the comparison.

    Raises RecordRefused, writing nothing, when no run was collected, or (with `replace`
    False, as `--replace` left out) when the record holds runs of another tag."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}: one of {sorted(GRIDS)}")
    repo = str(Path(repo).resolve())
    seeds = list(seeds if seeds is not None else [0, 1, 2])
    sets = list(sets or [])
    if tag is None:
        if collect_only:
            raise ValueError("--collect-only needs the --tag of the grid to collect")
        tag = time.strftime("%m%d%H%M")
    ran, queued = None, []
    if not collect_only:
        queued = queue_runs(repo, seeds, sets, tag, grid, only)
        ran = run_queue(repo, jobs)
    runs = collect(repo, tag, grid)
    g = GRIDS[grid]
    rerun = set() if collect_only else {c.label for c in select_cells(g.spec.cells(), only)}
    record_path = Path(repo) / g.record
    record = read_record(record_path)
    refusal = record_refusal(record, runs, tag, g.record, replace)
    if refusal:
        raise RecordRefused(refusal)
    kept = keep_recorded(record, runs, tag, g.spec, rerun)
    if kept:
        print(f"kept {len(kept)} runs recorded earlier under tag {tag} (cells not re-run, not found as "
              f"experiments here): {', '.join(r['experiment'] for r in kept[:4])}{' ...' if len(kept) > 4 else ''}")
        runs = sorted(runs + kept, key=lambda r: r["experiment"])
        if record.get("sets", []) != sets:
            print(f"note: the kept runs were made with --set {record.get('sets', [])}, these with {sets}")
    rows = publish(repo, runs, tag, sets, grid)
    return {"tag": tag, "runs": len(runs), "expected": 0 if collect_only else len(queued) + len(kept),
            "kept": len(kept), "queue": ran, "claims": rows}


def internalize_grid(**kwargs: Any) -> dict[str, Any]:
    """The internalization grid: `experiment_grid(grid="internalize", ...)`."""
    return experiment_grid(grid="internalize", **kwargs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="internalize",
                    help="internalize (the default: experience internalization), objectives (RL and distillation) "
                         "or sql (TRUST-SQL's comparisons)")
    ap.add_argument("--only", default="", metavar="PREFIX",
                    help="queue only the cells whose label starts with PREFIX (e.g. rl/ or distill/opd; several "
                         "comma-separated: distill/opd/strong,distill/gkd/strong); the other "
                         "cells' runs already recorded under the same --tag (as experiments here or in the "
                         "record file) are kept beside them")
    ap.add_argument("--repo", default=".", help="the DVC repository to run the experiments in (default: here)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                    help="seeds to run each cell with, distinct and non-negative (default: 0 1 2)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra `dvc exp run -S` override for every run (repeatable)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="experiments run at once, at least 1 (with more than one, each gets cores/jobs torch "
                         "threads)")
    ap.add_argument("--tag", default=None,
                    help="names this grid's experiments: letters, digits, '_' and '-', starting with a letter or "
                         "digit (default: month-day-hour-minute; --collect-only needs it)")
    ap.add_argument("--collect-only", action="store_true", help="only read back and publish a finished grid")
    ap.add_argument("--replace", action="store_true",
                    help="let this grid's runs replace a record made under another --tag (without it, that "
                         "ends with exit 2 before anything is queued)")
    a = ap.parse_args(argv)
    g = GRIDS[a.grid]
    if a.jobs < 1:
        ap.error(f"--jobs {a.jobs}: run at least 1 experiment at a time")
    negative = [s for s in a.seeds if s < 0]
    if negative:
        ap.error(f"--seeds: a seed is a non-negative integer, not {negative[0]}")
    repeated = sorted({s for s in a.seeds if a.seeds.count(s) > 1})
    if repeated:
        ap.error(f"--seeds: {', '.join(map(str, repeated))} given more than once (each seed runs once per cell)")
    if a.tag is None and a.collect_only:
        ap.error("--collect-only needs the --tag of the grid to collect")
    if a.tag is not None and not TAG_RE.fullmatch(a.tag):
        ap.error(f"--tag {a.tag!r}: use letters, digits, '_' and '-', starting with a letter or digit "
                 f"(it goes into DVC experiment names)")
    for kv in a.sets:
        key, eq, _ = kv.partition("=")
        if not eq or not key.strip():
            ap.error(f"--set {kv!r}: expected KEY=VALUE (a params.yaml key, e.g. internalize.iterations=1)")
    if not select_cells(g.spec.cells(), a.only):
        ap.error(f"--only {a.only!r} matches no cell of the {a.grid} grid; its cells: "
                 f"{', '.join(c.label for c in g.spec.cells())}")
    problem = repo_problem(a.repo)
    if problem:
        ap.error(problem)
    repo = Path(a.repo).resolve()
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode:
        ap.error(f"--repo {a.repo}: not a Git repository with a commit (DVC experiments are based on one)")
    tag = a.tag or time.strftime("%m%d%H%M")
    # Refuse now what publishing would refuse after the whole grid ran.
    refusal = tag_refusal(read_record(repo / g.record), tag, g.record, a.replace)
    if refusal is None and a.collect_only and not any(g.spec.parse_exp_name(n, tag) for n in exp_refs(repo)):
        refusal = (f"no experiment of tag {tag!r} here (`dvc exp list` names them; its names start with "
                   f"{g.spec.exp_name(g.spec.cells()[0], 0, tag).split(tag, 1)[0]}{tag}-): {g.record} left as it is")
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    with startup_timeout():
        try:
            out = experiment_grid(repo=a.repo, seeds=a.seeds, sets=a.sets, jobs=a.jobs, tag=tag,
                                  collect_only=a.collect_only, grid=a.grid, only=a.only, replace=a.replace)
        except RecordRefused as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:
            if not startup_timed_out(e):
                raise
            print(f"error: {STARTUP_HINT}", file=sys.stderr)
            return 1
    print(f"grid {out['tag']}: {out['runs']} finished runs"
          + (f" of {out['expected']}" if out["expected"] else "")
          + (f" ({out['kept']} of them kept from the record)" if out["kept"] else "")
          + f"; see reports/{a.grid}_grid.md and reports/claims.md")
    return 0 if out["runs"] >= out["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
