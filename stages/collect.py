"""Stage `collect <policy>`: run one named policy on the tasks and record gated trajectories.

Reads `data/tasks/tasks.parquet`, `params.yaml:collect` and `params.yaml:policies.<name>`;
writes `data/trajectories/<name>/{episodes,steps}.parquet` only if both pass their gates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from distillery.agents.base import PolicySpec
from distillery.config import CollectConfig, load_policy, load_section, read_params
from distillery.io import read_parquet, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.rollout import RolloutConfig, run_episodes
from distillery.types import tasks_from_frame

TASKS = "data/tasks/tasks.parquet"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m stages.collect <policy name from params.yaml:policies>", file=sys.stderr)
        return 2
    name = argv[0]
    params = read_params()
    cfg = load_section(CollectConfig, "collect", params)
    entry = load_policy(name, params)
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks").filter(pl.col("split").is_in(cfg.splits)))
    spec = PolicySpec(kind=entry.kind, kwargs=entry.kwargs, label=name)
    traj = run_episodes(
        tasks, spec, RolloutConfig(k=cfg.k, seed=cfg.seed, batch_size=cfg.batch_size), cfg.executor
    )
    out = Path("data/trajectories") / name
    reports, quarantine = Path("reports/quality") / f"collect-{name}", Path("data/quarantine") / f"collect-{name}"
    quarantine.mkdir(parents=True, exist_ok=True)
    try:
        refs = {"episodes": traj.episodes, "steps": traj.steps}
        for suite, frame in (("episodes", traj.episodes), ("steps", traj.steps)):
            gate(frame, SUITES[suite], source=str(out / f"{suite}.parquet"), refs=refs,
                 report_dir=reports, quarantine_dir=quarantine)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(traj.episodes, out / "episodes.parquet")
    write_parquet(traj.steps, out / "steps.parquet")
    ep = traj.episodes
    print(f"collect {name}: {ep.height} episodes, success {ep['success'].mean():.3f}, "
          f"{traj.steps.height} steps -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
