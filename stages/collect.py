"""Stages `collect@<policy>`, `play@<policy>` and `rollout@<policy>`: run one named policy
on the tasks and record gated trajectories.

    python -m stages.collect <policy> [--section collect|play|rollout] [--track NAME]

Reads `data/tasks/tasks.parquet`, `params.yaml:<section>` and `params.yaml:policies.<name>`;
writes `<out>/<name>/{episodes,steps}.parquet` only if both pass their gates, where <out> is
`data/trajectories` (collect, play: what `evaluate` benchmarks) or `data/rollouts`
(rollout: the student's K-sample groups that mining and RL learn from). Gate reports go to
`reports/quality/<section>-<name>`, offending rows to `data/quarantine/<section>-<name>`.
With `--track twx` the section is `twx_<section>` and every path is under the track's
folders (`data/twx/tasks/tasks.parquet`, `data/twx/rollouts/...`: stages/track.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from distillery.agents.base import policy_spec
from distillery.config import CollectConfig, exit_on_config_error, load_policy, read_params
from distillery.io import read_parquet, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.rollout import RolloutConfig, run_episodes
from distillery.types import tasks_from_frame
from stages.track import Track, track_parser

TASKS = "data/tasks/tasks.parquet"
OUT_DIRS = {"collect": "data/trajectories", "play": "data/trajectories", "rollout": "data/rollouts"}


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("collect", __doc__)
    ap.add_argument("policy", help="a policy named under `policies:` in params.yaml")
    ap.add_argument("--section", default="collect", choices=sorted(OUT_DIRS),
                    help="the params.yaml section that configures the run (default: collect)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    name, section, track = args.policy, args.section, Track(args.track)
    params = read_params()
    cfg = track.load(CollectConfig, section, params)
    spec = policy_spec(name, load_policy(name, params), cfg.policy_overrides)
    frame = read_parquet(track.path(TASKS), track.section("tasks"))
    frame = frame.filter(pl.col("split").is_in(cfg.splits)).sort("task_id")
    if cfg.tasks_per_family:
        frame = frame.filter(pl.int_range(pl.len()).over("family", "split") < cfg.tasks_per_family)
    tasks = tasks_from_frame(frame)
    traj = run_episodes(
        tasks, spec, RolloutConfig(k=cfg.k, seed=cfg.seed, batch_size=cfg.batch_size,
                                    continuous_batching=cfg.continuous_batching), cfg.executor
    )
    out = track.path(Path(OUT_DIRS[section]) / name)
    reports = track.path(Path("reports/quality") / f"{section}-{name}")
    quarantine = track.path(Path("data/quarantine") / f"{section}-{name}")
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
    print(f"{section} {name}: {ep.height} episodes, success {ep['success'].mean():.3f}, "
          f"{traj.steps.height} steps -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.collect", main, sys.argv[1:]))
