"""Stage `pghs`: mine policies, fit both branches, fuse, evaluate over seeds, save the simulator.

Reads `params.yaml:pghs` and the gated outputs of `pghs_data`. Writes `reports/details/pghs.json`
(every number), its headline `metrics/pghs.json`, `reports/claims/pghs.json` (rows for reports/claims.md), `reports/pghs.md` with one plot per
group under `reports/pghs/`, and the fitted simulator of the first seed under `models/pghs/`
(what `distillery simulate` loads).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from distillery.config import PghsConfig, exit_on_config_error, load_section
from distillery.evaluate.headline import pghs_headline
from distillery.io import read_parquet, write_json, write_text
from distillery.pghs.data import World, groups_from_json
from distillery.pghs.evaluate import claims, run_experiment
from distillery.pghs.report import plot_groups, render
from stages.usage import take_no_options

TRAJECTORIES = "data/pghs/trajectories.parquet"
GROUPS = "data/pghs/groups.json"
WORLD = "data/pghs/world.json"
CLAIMS = "reports/claims/pghs.json"
REPORT = "reports/pghs.md"
PLOTS = "reports/pghs"
MODEL = "models/pghs"


def main(argv: list[str] | None = None) -> int:
    take_no_options("pghs", __doc__, argv)
    cfg = load_section(PghsConfig, "pghs")
    t0 = time.perf_counter()
    trajectories = read_parquet(TRAJECTORIES, "pghs_data")
    groups = groups_from_json(json.loads(Path(GROUPS).read_text()), GROUPS)
    world_json = json.loads(Path(WORLD).read_text())
    world = None if "world" in world_json and world_json["world"] is None else World.from_json(world_json)

    summary, results = run_experiment(trajectories, groups, world, cfg)
    rows = claims(summary)
    first = results[0]
    shutil.rmtree(PLOTS, ignore_errors=True)
    plots = plot_groups(first.predictions, summary["headline_target"], PLOTS)
    shutil.rmtree(MODEL, ignore_errors=True)
    first.simulator.save(MODEL)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(summary, "reports/details/pghs.json")
    write_json(pghs_headline(summary), "metrics/pghs.json")
    write_json([r.to_dict() for r in rows], CLAIMS)
    write_text(render(summary, rows, plots, REPORT, first.policies) + "\n", REPORT)
    head = summary["headline_target"]
    err = {m: summary["errors"][m]["test_merchants"][head]["mean"]
           for m in ("reasoning_only", "fitting_only", "reasoning", "fitting", "pghs")}
    print("pghs: held-out merchant error " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in err.items())
          + f"; criterion {'met' if summary['done'] else 'NOT met'}; {summary['seconds']} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.pghs", main, sys.argv[1:]))
