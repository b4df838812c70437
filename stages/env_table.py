"""Stage `env_table`: the agent loop's figures on every environment side by side, as claims rows.

    python -m stages.env_table [--envs NAME ...]

Reads `params.yaml:env_table` and, per environment, its track's files (stages/track.py):
`data/<track>/trajectories/oracle/episodes.parquet`, the warm-up student's play
`data/<track>/trajectories/<play>/episodes.parquet`, the track's internalize report
`reports/<track>/details/internalize.json` (its warm-up on the held-out setting), the mined pool
`data/<track>/experience/principles.jsonl`, the track's test tasks (replayed for the
environment's steps/s) and the internalize reports listed in `env_table.runs` (one per
internalization seed: the track's `internalize` and `internalize --seed N` reports, or the
internalize grid's record of the same recipe); writes `reports/claims/environments.json`
(`evaluate.environments`). `--envs` keeps only the named environments (a table for the
tracks that have run; the dvc stage takes them all).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from distillery.config import exit_on_config_error, load_section
from distillery.envs import make_env
from distillery.envs.throughput import replay_throughput
from distillery.evaluate.environments import (
    EnvTableConfig,
    environment_claims,
    environment_figures,
    grid_runs,
)
from distillery.io import read_parquet, write_json
from distillery.mining.store import read_pool
from distillery.types import tasks_from_frame
from stages.track import Track, track_parser

OUT = "reports/claims/environments.json"
COMMAND = "make repro TRACK=agents && make repro TRACK=textworldexpress && dvc repro env_table"


def read_reports(paths: list[str], cell: str) -> tuple[list[dict], str]:
    """The internalize reports behind one environment's rows (EnvTableConfig.runs), and where
    they come from when a grid's record is among them."""
    out, grids = [], []
    for p in paths:
        data = json.loads(Path(p).read_text())
        if isinstance(data, dict) and "runs" in data:
            out.extend(grid_runs(data, cell, p))
            grids.append(f"{p}, tag {data.get('tag', '?')}")
        else:
            out.append(data)
    return out, (f"from the internalize grid's record ({'; '.join(grids)}; cell {cell})" if grids else "")


def steps_per_s(env_name: str, track: Track, cfg: EnvTableConfig) -> float | None:
    if cfg.throughput_seconds <= 0:
        return None
    frame = read_parquet(track.path("data/tasks/tasks.parquet"), "tasks").filter(pl.col("split") == "test")
    tasks = tasks_from_frame(frame.sort("task_id").head(cfg.throughput_tasks))
    env = make_env(tasks[0].env)
    try:
        return replay_throughput(env, tasks, cfg.throughput_seconds).steps_per_s
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("env_table", __doc__, track=False)   # every track's files: no --track
    ap.add_argument("--envs", nargs="+", default=None, help="only these environments (default: all in params)")
    args = ap.parse_args([] if argv is None else argv)
    cfg = load_section(EnvTableConfig, "env_table")
    unknown = sorted(set(args.envs or ()) - set(cfg.envs))
    if unknown:
        print(f"env_table: --envs {unknown} not in env_table.envs {cfg.envs}", file=sys.stderr)
        return 2
    figs = []
    for env, name, play, runs in zip(cfg.envs, cfg.tracks, cfg.play, cfg.runs, strict=True):
        if args.envs is not None and env not in args.envs:
            continue
        track = Track(name)
        oracle = read_parquet(track.path("data/trajectories/oracle/episodes.parquet"), "collect@oracle")
        played = read_parquet(track.path(f"data/trajectories/{play}/episodes.parquet"), f"play@{play}")
        pool = read_pool(track.path("data/experience/principles.jsonl"))
        reports, runs_from = read_reports(runs, cfg.grid_cell)
        own = json.loads(track.path("reports/details/internalize.json").read_text())
        figs.append(environment_figures(env, oracle, played, own, reports, len(pool),
                                        runs_from=runs_from, steps_per_s=steps_per_s(env, track, cfg)))
    claims = environment_claims(figs, COMMAND)
    write_json([c.to_dict() for c in claims], OUT)
    for c in claims:
        print(f"  {c.finding}: {c.measured}", file=sys.stderr)
    print(f"env_table: {len(claims)} rows for {', '.join(f.env for f in figs)} -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.env_table", main, sys.argv[1:]))
