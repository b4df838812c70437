"""Stage `pghs_data`: build (or import) merchant-user trajectories and gate them.

Reads `params.yaml:pghs_data`. With `source: generate` it draws the synthetic market; with a
parquet path it imports your trajectories (schema: `distillery.pghs.data`) and needs
`groups_file`, a JSON list of group descriptions. Writes `data/pghs/trajectories.parquet`,
`data/pghs/groups.json` and `data/pghs/world.json` (the generator's hidden truth, or a note
that imported data has none). A failing gate writes none of them: nothing downstream runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl

from distillery.config import PghsDataConfig, exit_on_config_error, load_section
from distillery.io import write_json, write_parquet
from distillery.pghs.data import generate, groups_from_json, groups_to_json, trajectory_suite
from distillery.quality import GateError, gate
from stages.usage import take_no_options

TRAJECTORIES = "data/pghs/trajectories.parquet"
GROUPS = "data/pghs/groups.json"
WORLD = "data/pghs/world.json"
REPORTS = "reports/quality/pghs"
QUARANTINE = "data/quarantine/pghs"


def main(argv: list[str] | None = None) -> int:
    take_no_options("pghs_data", __doc__, argv)
    cfg = load_section(PghsDataConfig, "pghs_data")
    t0 = time.perf_counter()
    for stale in (TRAJECTORIES, GROUPS, WORLD):      # a failed gate must not leave old data
        Path(stale).unlink(missing_ok=True)
    Path(QUARANTINE).mkdir(parents=True, exist_ok=True)   # a declared out, even when empty
    if cfg.source == "generate":
        frame, groups, world = generate(cfg)
        source, world_json = TRAJECTORIES, world.to_json()
    else:
        if not cfg.groups_file:
            print("pghs_data: an imported source needs pghs_data.groups_file (a JSON list of "
                  "{name, description, stated_price_sensitivity, stated_propensity})", file=sys.stderr)
            return 2
        try:
            frame = pl.read_parquet(cfg.source)
            groups = groups_from_json(json.loads(Path(cfg.groups_file).read_text()), cfg.groups_file)
        except (OSError, ValueError, pl.exceptions.PolarsError) as e:
            print(f"pghs_data: cannot read {cfg.source} / {cfg.groups_file}: {e}", file=sys.stderr)
            return 2
        source = cfg.source
        world_json = {"world": None, "note": f"imported from {cfg.source}: no counterfactual truth"}
    try:
        gate(frame, trajectory_suite([g.name for g in groups]), source=source,
             report_dir=REPORTS, quarantine_dir=QUARANTINE)
    except GateError as e:
        print(e, file=sys.stderr)
        return 1
    write_parquet(frame, TRAJECTORIES)
    write_json(groups_to_json(groups), GROUPS)
    write_json(world_json, WORLD)
    print(f"pghs_data: {frame.height} trajectories, {frame['merchant_id'].n_unique()} merchants, "
          f"{len(groups)} groups in {time.perf_counter() - t0:.1f} s -> {TRAJECTORIES}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.pghs_data", main, sys.argv[1:]))
