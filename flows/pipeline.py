"""Prefect flow: run the DVC pipeline stage by stage, publish gates and the benchmark.

DVC owns lineage and skipping (an unchanged stage is a no-op); Prefect owns running,
retrying, scheduling and showing. Stages run one after another in DAG order — never two
`dvc repro` at once in one workspace (DVC's locks would make the second fail). One
`dvc status` at the start says which stages are stale; a stage it does not name, none of whose
upstream stages ran in this flow run, is recorded unchanged without starting DVC again (a
nightly run with nothing new takes seconds, not one DVC start per stage). After each
stage the flow publishes the summaries of the quality gates it wrote; at the end, the
benchmark table. A failing stage (a failing gate included) fails the flow run.

    python flows/pipeline.py run                 # one run now (temporary local server)
    python flows/pipeline.py serve --cron "0 3 * * *"   # scheduled, against `prefect server start`

Mistakes in the arguments (no such --repo or not a DVC repo, an unknown stage, a cron string
that does not parse, no reachable server for `serve`) end with one line and exit 2 before any
Prefect server starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

DVC = [sys.executable, "-m", "dvc"]
# Prefect's temporary server gets 20 s to start by default: too little on a loaded 2-core
# machine. `main` raises it to this unless the user exported a value.
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 120
STARTUP_TIMED_OUT = "Timed out while attempting to connect to ephemeral Prefect API server"


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the tail of its output."""


def run_dvc(repo: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Stage commands say `python`: make it this interpreter's, even from an unactivated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path, **(env_extra or {})}
    return subprocess.run([*DVC, *args], cwd=repo, capture_output=True, text=True, env=env)


def stage_order(repo: Path, targets: list[str] | None = None) -> list[str]:
    """Stages in a topological order of the DAG (`dvc dag --dot`), ties kept in file order."""
    return stage_graph(repo, targets)[0]


def stage_graph(repo: Path, targets: list[str] | None = None) -> tuple[list[str], dict[str, set[str]]]:
    """`stage_order`, and each stage's direct upstream stages."""
    listed = run_dvc(repo, "stage", "list", "--name-only")
    if listed.returncode:
        raise StageFailed(f"`dvc stage list` failed in {repo}:\n{listed.stderr[-2000:]}")
    names = [n.strip() for n in listed.stdout.splitlines() if n.strip()]
    dot = run_dvc(repo, "dag", "--dot", *(targets or []))
    if dot.returncode:
        raise StageFailed(f"`dvc dag` failed in {repo}:\n{dot.stderr[-2000:]}")
    nodes = set(re.findall(r'^\s*"([^"]+)";', dot.stdout, re.M))
    edges = re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot.stdout)
    graph: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:  # `dvc dag` draws upstream -> downstream
        graph.setdefault(b, set()).add(a)
        graph.setdefault(a, set())
    ts = TopologicalSorter(graph)
    ts.prepare()
    rank = {n: i for i, n in enumerate(names)}
    order: list[str] = []
    while ts.is_active():
        ready = sorted(ts.get_ready(), key=lambda n: rank.get(n, len(rank)))
        order.extend(ready)
        ts.done(*ready)
    return order, graph


def stale_stages(repo: Path) -> set[str] | None:
    """The stages `dvc status` reports changed now (deps, params, outs, command, always
    changed); None when it cannot say, and then every stage is put to DVC."""
    p = run_dvc(repo, "status", "--json")
    try:
        return set(json.loads(p.stdout)) if p.returncode == 0 else None
    except json.JSONDecodeError:
        return None


@task(cache_policy=NO_CACHE)
def repro_stage(repo: str, stage: str, force: bool = False, known_unchanged: bool = False) -> dict[str, Any]:
    """`dvc repro --single-item <stage>`: DVC decides whether it needs to run. With
    `known_unchanged` (the run's `dvc status` did not name it, nothing upstream ran) DVC is not
    started: it would say the same."""
    log = get_run_logger()
    if known_unchanged:
        log.info("stage %s unchanged (dvc status at the start of this run)", stage)
        return {"stage": stage, "ran": False, "seconds": 0.0}
    t0 = time.perf_counter()
    p = run_dvc(Path(repo), "repro", "--single-item", *(["--force"] if force else []), stage)
    dt = time.perf_counter() - t0
    skipped = "didn't change, skipping" in p.stdout + p.stderr
    if p.returncode:
        raise StageFailed(f"stage {stage} failed (exit {p.returncode}) after {dt:.1f} s:\n"
                          f"{(p.stdout + p.stderr)[-3000:]}")
    log.info("stage %s %s in %.1f s", stage, "unchanged" if skipped else "ran", dt)
    return {"stage": stage, "ran": not skipped, "seconds": round(dt, 2)}


def _gate_dir(stage: str) -> str:
    # Stage `collect@oracle` writes its gate reports under reports/quality/collect-oracle.
    return stage.replace("@", "-")


@task(cache_policy=NO_CACHE)
def publish_gates(repo: str, stage: str) -> list[dict[str, Any]]:
    """One table artifact per gate report the stage wrote (summaries of GX results)."""
    rows_all = []
    for path in sorted((Path(repo) / "reports/quality" / _gate_dir(stage)).glob("*.summary.json")):
        summary = json.loads(path.read_text())
        key = re.sub(r"[^a-z0-9-]+", "-", f"gate-{_gate_dir(stage)}-{summary['suite']}".lower())
        create_table_artifact(
            key=key,
            table=summary["expectations"],
            description=(f"Gate `{summary['suite']}` on `{summary['source']}`: "
                         f"{'passed' if summary['success'] else 'FAILED'}, "
                         f"{summary['n_failed_rows']} of {summary['n_rows']} rows offend."),
        )
        rows_all.append({"stage": stage, "suite": summary["suite"], "success": summary["success"],
                         "rows": summary["n_rows"], "failed_rows": summary["n_failed_rows"]})
    return rows_all


@task(cache_policy=NO_CACHE)
def publish_benchmark(repo: str) -> list[dict[str, Any]]:
    path = Path(repo) / "reports/details/benchmark.json"
    if not path.exists():
        return []
    bench = json.loads(path.read_text())
    rows = []
    for policy, fams in sorted(bench.items()):
        for family, m in sorted(fams.items()):
            rows.append({"policy": policy, "family": family, "episodes": m["episodes"],
                         "success_rate": m["success_rate"], "mean_score": m["mean_score"],
                         "mean_steps": m["mean_steps"], "validity_rate": m["validity_rate"]})
    create_table_artifact(key="benchmark", table=rows, description="Benchmark on the test split")
    overall = [r for r in rows if r["family"] == "all"]
    md = "| policy | success | score | steps |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['policy']} | {r['success_rate']:.3f} | {r['mean_score']:.3f} | {r['mean_steps']:.2f} |"
        for r in overall)
    create_markdown_artifact(key="benchmark-summary", markdown=md, description="Overall benchmark")
    return rows


@flow(name="distillery-pipeline", log_prints=True)
def pipeline(repo: str = ".", targets: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run the DVC stages of `repo` in DAG order; publish gate summaries and the benchmark."""
    repo_path = str(Path(repo).resolve())
    order, upstream = stage_graph(Path(repo_path), targets)
    stale = None if force else stale_stages(Path(repo_path))
    runs, gates, ran = [], [], set()
    for stage in order:
        unchanged = stale is not None and stage not in stale and not upstream.get(stage, set()) & ran
        try:
            runs.append(repro_stage(repo_path, stage, force, known_unchanged=unchanged))
            if runs[-1]["ran"]:
                ran.add(stage)
        finally:
            # A failed gate wrote its report before the stage exited: publish it either way.
            gates.extend(publish_gates(repo_path, stage))
    bench = publish_benchmark(repo_path)
    create_table_artifact(key="pipeline-stages", table=runs, description="Stages of this run")
    return {"stages": runs, "gates": gates, "benchmark": bench}


def task_runs_of_a_run(n_stages: int) -> int:
    """How many task runs one flow run of `n_stages` stages records: one `repro_stage` and one
    `publish_gates` per stage, and `publish_benchmark`."""
    return 2 * n_stages + 1


def wait_for_task_runs(flow_run_id: Any, expected: int, timeout: float = 30.0) -> None:
    """Wait until the server has recorded the flow run's `expected` task runs as finished.

    Task runs reach the server as events, recorded a moment after the flow run's own final
    state. The temporary server of `run` stops when this process exits: without the wait it
    can stop mid-flush, losing the last task runs from the run's history (and logging the
    flush's errors)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(flow_run_filter=only_this_run, limit=expected + 1)
            if len(runs) >= expected and all(r.state is not None and r.state.is_final() for r in runs):
                return
            time.sleep(0.2)
    print(f"warning: after {timeout:.0f} s the Prefect server had not recorded all {expected} task runs of "
          f"flow run {flow_run_id}; its history may lack the last ones", file=sys.stderr)


def repo_problem(repo: str) -> str | None:
    """Why `repo` cannot be the pipeline's DVC repository (None when it can): it must be a
    directory with a `dvc.yaml`, inside a DVC project (a `.dvc` directory here or above)."""
    path = Path(repo).expanduser()
    if not path.is_dir():
        return f"--repo {repo}: no such directory"
    root = path.resolve()
    if not (root / "dvc.yaml").is_file():
        return f"--repo {repo}: no dvc.yaml there (not the root of a DVC pipeline)"
    if not any((d / ".dvc").is_dir() for d in (root, *root.parents)):
        return f"--repo {repo}: not inside a DVC repository (no .dvc directory; run `dvc init`)"
    return None


def unknown_targets(repo: Path, targets: list[str]) -> list[str]:
    """The targets that name no stage of `repo` (`dvc stage list --name-only`). A foreach
    group's name (`collect` for `collect@oracle`) and a `dvc.yaml:stage` or path target are
    left to DVC."""
    listed = run_dvc(repo, "stage", "list", "--name-only")
    if listed.returncode:
        raise StageFailed(f"`dvc stage list` failed in {repo}:\n{listed.stderr[-2000:]}")
    names = {n.strip() for n in listed.stdout.splitlines() if n.strip()}
    groups = {n.split("@", 1)[0] for n in names}
    return [t for t in targets if t not in names and t not in groups and ":" not in t and "/" not in t]


def cron_problem(cron: str) -> str | None:
    """Why Prefect would refuse `cron` as a schedule (its own CronSchedule validation)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError as e:
        errors = getattr(e, "errors", None)
        msg = errors()[0]["msg"] if callable(errors) and errors() else str(e)
        return msg.removeprefix("Value error, ")
    return None


def server_problem(api_url: str, timeout: float = 5.0) -> str | None:
    """Why the Prefect server at `api_url` cannot take a deployment (None when `/health` answers)."""
    import httpx

    url = f"{api_url.rstrip('/')}/health"
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        return (f"no Prefect server answers at {api_url} ({type(e).__name__}): start one with `make server` "
                f"(or `prefect server start`), or set PREFECT_API_URL to a running one")
    if r.status_code != 200:
        return (f"the Prefect server at {api_url} is not healthy ({url} answered {r.status_code}): "
                f"start one with `make server`, or set PREFECT_API_URL to a running one")
    return None


def startup_timeout() -> contextlib.AbstractContextManager[Any]:
    """Give Prefect's temporary server STARTUP_TIMEOUT_S to start, unless the user set the
    timeout (Prefect reads its settings once, on import: change them in its settings context)."""
    if STARTUP_TIMEOUT_ENV in os.environ:
        return contextlib.nullcontext()
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )
    return temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: STARTUP_TIMEOUT_S})


def startup_timed_out(e: BaseException | None) -> bool:
    """Whether `e` (or an exception it was raised from) is Prefect's temporary server timing out."""
    seen = 0
    while e is not None and seen < 10:
        if STARTUP_TIMED_OUT in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


STARTUP_HINT = (f"Prefect's temporary server did not start in time (see {STARTUP_TIMEOUT_ENV}); start a "
                "server with `make server` and export PREFECT_API_URL=http://127.0.0.1:4200/api, then rerun")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the pipeline once now")
    r.add_argument("--repo", default=".", help="the DVC repository whose pipeline runs (default: here)")
    r.add_argument("--force", action="store_true", help="rerun stages even if unchanged")
    r.add_argument("targets", nargs="*", help="stages to run (with their upstream); default all")
    s = sub.add_parser("serve", help="serve a scheduled deployment (needs `prefect server start`)")
    s.add_argument("--repo", default=".", help="the DVC repository whose pipeline the deployment runs "
                                               "(default: here; recorded as an absolute path)")
    s.add_argument("--cron", default="0 3 * * *", help="when to run (default: daily at 03:00)")
    s.add_argument("--name", default="nightly", help="the deployment's name on the server (default: nightly)")
    a = ap.parse_args(argv)
    sp = r if a.cmd == "run" else s
    problem = repo_problem(a.repo)
    if problem:
        sp.error(problem)
    if a.cmd == "run":
        if a.targets:
            unknown = unknown_targets(Path(a.repo).resolve(), a.targets)
            if unknown:
                sp.error(f"no such stage in {a.repo}: {', '.join(unknown)} (`dvc stage list` names them)")
        with startup_timeout():
            try:
                state = pipeline(repo=a.repo, targets=a.targets or None, force=a.force, return_state=True)
            except Exception as e:
                if not startup_timed_out(e):
                    raise
                print(f"error: {STARTUP_HINT}", file=sys.stderr)
                return 1
            result = state.result()                 # a failed run raises its stage's error here
            wait_for_task_runs(state.state_details.flow_run_id, task_runs_of_a_run(len(result["stages"])))
        return 0
    problem = cron_problem(a.cron)
    if problem:
        sp.error(f"--cron {a.cron!r}: {problem}")
    if not a.name.strip():
        sp.error("--name must not be empty")
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        print("PREFECT_API_URL is not set: start `prefect server start` (or `make server`) and "
              "export PREFECT_API_URL=http://127.0.0.1:4200/api; schedules need a real server.", file=sys.stderr)
        return 2
    problem = server_problem(api_url)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    pipeline.serve(name=a.name, cron=a.cron, parameters={"repo": str(Path(a.repo).resolve())},
                   pause_on_shutdown=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
