"""Stage `sql_collect@<policy>`: a teacher's trajectories on the SQL track's learning databases.

    python -m stages.sql_collect <policy>

Reads `data/sql/tasks.parquet`, `params.yaml:sql_collect`, `sql_track` and `policies.<policy>`;
runs the policy (the oracle's reference rewritten for the track's options) on
`sql_collect.train_tasks` train-split tasks outside the validation databases; writes
`data/sql/trajectories/<policy>/{episodes,steps,outcomes}.parquet` once all three pass their
gates (`episodes`, `steps`, `sql_outcomes`), gate reports under
`reports/quality/sql_collect-<policy>` and offending rows under `data/quarantine/sql_collect-<policy>`.
The oracle's episodes are the warm-up's demonstrations; the random policy's are the start
of the grid's no-warm-up cell (the call syntax without a strategy).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distillery.agents.base import policy_spec
from distillery.config import exit_on_config_error, load_policy, load_section, read_params
from distillery.io import read_parquet, write_parquet
from distillery.quality import SUITES, GateError, gate
from distillery.quality.sql_traj_suites import SQL_OUTCOMES
from distillery.train.sql_eval import SqlCollectConfig, run_sql_policy
from distillery.train.sql_rl import SqlTrackConfig, adapt_tasks, split_train, spread_slice
from distillery.types import tasks_from_frame
from stages.usage import stage_parser

TASKS = "data/sql/tasks.parquet"
OUT = Path("data/sql/trajectories")


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("sql_collect", __doc__)
    ap.add_argument("policy", help="a policy named under `policies:` in params.yaml (dvc.yaml runs oracle)")
    name = ap.parse_args([] if argv is None else argv).policy
    params = read_params()
    spec = policy_spec(name, load_policy(name, params))   # a wrong name is reported before any input is read
    cfg = load_section(SqlCollectConfig, "sql_collect", params)
    track = load_section(SqlTrackConfig, "sql_track", params)
    tasks = tasks_from_frame(read_parquet(TASKS, "sql_tasks"))
    chosen = adapt_tasks(spread_slice(split_train(tasks, track).learn, cfg.train_tasks), track)
    t0 = time.perf_counter()
    traj, outcomes = run_sql_policy(spec, chosen, track,
                                    batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers)
    out = OUT / name
    quarantine = Path(f"data/quarantine/sql_collect-{name}")
    quarantine.mkdir(parents=True, exist_ok=True)
    refs = {"episodes": traj.episodes, "steps": traj.steps}
    try:
        for suite, frame in ((SUITES["episodes"], traj.episodes), (SUITES["steps"], traj.steps),
                             (SQL_OUTCOMES, outcomes)):
            gate(frame, suite, source=str(out / f"{suite.name}.parquet"), refs=refs,
                 report_dir=f"reports/quality/sql_collect-{name}", quarantine_dir=quarantine)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(traj.episodes, out / "episodes.parquet")
    write_parquet(traj.steps, out / "steps.parquet")
    write_parquet(outcomes, out / "outcomes.parquet")
    print(f"sql_collect {name} ({track.label}): {traj.episodes.height} episodes, accuracy "
          f"{outcomes['correct'].mean():.3f}, {time.perf_counter() - t0:.1f} s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_collect", main, sys.argv[1:]))
