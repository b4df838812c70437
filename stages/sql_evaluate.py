"""Stage `sql_evaluate`: the SQL policies on held-out databases, on real databases and on the
schema-size sets, under the track's options; the run's metrics, report and claim rows.

Reads `data/sql/tasks.parquet` (the held-out train databases and the test split), `data/sql/real/tasks.parquet`,
`data/sql/scale/tasks.parquet`, the students `models/<name>` of `sql_evaluate.models`, the
named entries of `policies:` in `sql_evaluate.policies` (the oracle, the random policy, any
`openai` endpoint), `reports/details/sql_warmup.json` and `reports/details/sql_rl.json`. Every policy plays
the held-out databases (unseen databases of the training domains and naming styles) and the
test split (unseen databases, domains and styles); the last student, the oracle, the random policy and the named policies also
play the real databases; the last student plays the schema-size sets. Writes
`data/sql/eval/{episodes,steps,outcomes}.parquet` (gated: `episodes`, `steps`,
`sql_outcomes`), `reports/details/sql_evaluate.json` and its headline
`metrics/sql_evaluate.json`, `reports/sql.md` and `reports/claims/sql.json`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl

from distillery.agents.base import PolicySpec, policy_spec
from distillery.config import exit_on_config_error, load_policy, load_section, read_params
from distillery.evaluate.headline import sql_headline
from distillery.io import read_parquet, write_json, write_parquet, write_text
from distillery.quality import SUITES, GateError, gate
from distillery.quality.sql_traj_suites import SQL_OUTCOMES
from distillery.rollout import Trajectories
from distillery.train.sql_eval import (
    SqlEvaluateConfig,
    pick_real,
    run_sql_policy,
    summarise,
    summarise_by,
)
from distillery.train.sql_report import claim_rows, markdown
from distillery.train.sql_rl import SqlTrackConfig, adapt_tasks, split_train, spread_slice
from distillery.types import tasks_from_frame
from stages.usage import take_no_options

TASKS = "data/sql/tasks.parquet"
REAL = "data/sql/real/tasks.parquet"
SCALE = "data/sql/scale/tasks.parquet"
OUT = Path("data/sql/eval")


def _read(path: str) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


def main(argv: list[str] | None = None) -> int:
    take_no_options("sql_evaluate", __doc__, argv)
    params = read_params()
    cfg = load_section(SqlEvaluateConfig, "sql_evaluate", params)
    track = load_section(SqlTrackConfig, "sql_track", params)
    t0 = time.perf_counter()
    every = tasks_from_frame(read_parquet(TASKS, "sql_tasks"))
    heldout = adapt_tasks(spread_slice(split_train(every, track).heldout, cfg.heldout_tasks), track)
    test = adapt_tasks(spread_slice([t for t in every if t.split == "test"], cfg.test_tasks), track)
    real = adapt_tasks(pick_real(tasks_from_frame(read_parquet(REAL, "sql_real")), cfg.real_tasks_per_db),
                       track) if cfg.transfer else []
    scale = adapt_tasks(tasks_from_frame(read_parquet(SCALE, "sql_scale")), track) if cfg.scale else []
    by_id = {t.task_id: t for t in [*heldout, *test, *real, *scale]}
    specs = {name: policy_spec(name, load_policy(name, params)) for name in cfg.policies}
    specs |= {name: PolicySpec("hf", {"model_dir": f"models/{name}", "temperature": 0.0,
                                      "max_new_tokens": cfg.max_new_tokens}, name) for name in cfg.models}
    final = cfg.models[-1] if cfg.models else None
    parts: list[Trajectories] = []
    outs: list[pl.DataFrame] = []
    metrics: dict = {"track": params.get("sql_track", {}), "label": track.label, "heldout": {}, "test": {},
                     "real": {}, "scale": {}, "timing_s": {}}
    for name, spec in specs.items():
        sets = [("heldout", heldout), ("test", test)]
        if real and (name == final or name not in cfg.models):
            sets.append(("real", real))
        if scale and name == final:
            sets.append(("scale", scale))
        # One rollout per policy over all its sets: the engine refills its batch as episodes
        # end, so a model decodes a few full batches instead of one short one per set.
        t1 = time.perf_counter()
        every_task = [t for _, tasks in sets for t in tasks]
        traj, outcomes = run_sql_policy(spec, every_task, track, batch_size=cfg.batch_size, max_steps=cfg.max_steps,
                                        seed=cfg.seed, workers=cfg.workers)
        parts.append(traj)
        outs.append(outcomes)
        metrics["timing_s"][name] = round(time.perf_counter() - t1, 1)
        for set_name, tasks in sets:
            mine = outcomes.filter(pl.col("task_id").is_in([t.task_id for t in tasks]))
            if set_name in ("heldout", "test"):
                metrics[set_name][name] = summarise(mine)
            elif set_name == "real":
                metrics["real"][name] = summarise_by(mine, by_id, "db_id")
            else:
                metrics["scale"][name] = summarise_by(mine, by_id, "size")
            print(f"sql_evaluate {name} on {set_name}: {len(tasks)} tasks, accuracy {mine['correct'].mean():.3f}",
                  file=sys.stderr)
        print(f"sql_evaluate {name}: {len(every_task)} episodes in {metrics['timing_s'][name]} s", file=sys.stderr)
    traj = Trajectories.concat(parts)
    outcomes = pl.concat(outs)
    refs = {"episodes": traj.episodes, "steps": traj.steps}
    Path("data/quarantine/sql_evaluate").mkdir(parents=True, exist_ok=True)
    try:
        for suite, frame in ((SUITES["episodes"], traj.episodes), (SUITES["steps"], traj.steps),
                             (SQL_OUTCOMES, outcomes)):
            gate(frame, suite, source=str(OUT / f"{suite.name}.parquet"), refs=refs,
                 report_dir="reports/quality/sql_evaluate", quarantine_dir="data/quarantine/sql_evaluate")
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(traj.episodes.sort("episode_id"), OUT / "episodes.parquet")
    write_parquet(traj.steps.sort(["episode_id", "t"]), OUT / "steps.parquet")
    write_parquet(outcomes.sort("episode_id"), OUT / "outcomes.parquet")
    rl, wu = _read("reports/details/sql_rl.json"), _read("reports/details/sql_warmup.json")
    metrics["rl"] = {k: rl[k] for k in ("method", "seed", "curve", "seconds") if k in rl}
    metrics["warmup"] = {k: wu[k] for k in ("steps", "eval_loss", "train_loss", "wall_s", "n_params",
                                             "train_examples") if k in wu}
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(metrics, "reports/details/sql_evaluate.json")
    write_json(sql_headline(metrics), "metrics/sql_evaluate.json")
    write_text(markdown(metrics), "reports/sql.md")
    write_json([c.to_dict() for c in claim_rows(metrics)], "reports/claims/sql.json")
    print(f"sql_evaluate: {traj.episodes.height} episodes in {metrics['seconds']} s -> reports/details/sql_evaluate.json, "
          "reports/sql.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.sql_evaluate", main, sys.argv[1:]))
