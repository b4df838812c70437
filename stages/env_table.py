"""Stage `env_table`: the agent loop's figures on every environment side by side, as claims rows.

    python -m stages.env_table [--envs NAME ...]

Reads `params.yaml:env_table` and, per environment, its track's files (stages/track.py):
`data/<track>/trajectories/oracle/episodes.parquet`, the warm-up student's play
`data/<track>/trajectories/<play>/episodes.parquet`, `reports/<track>/details/internalize.json`
and the mined pool `data/<track>/experience/principles.jsonl`; writes
`reports/claims/environments.json` (`evaluate.environments`). `--envs` keeps only the named
environments (a table for the tracks that have run; the dvc stage takes them all).
"""

from __future__ import annotations

import argparse
import json
import sys

from distillery.config import load_section
from distillery.evaluate.environments import EnvTableConfig, environment_claims, environment_figures
from distillery.io import read_parquet, write_json
from distillery.mining.store import read_pool
from stages.track import Track

OUT = "reports/claims/environments.json"
COMMAND = "make repro TRACK=agents && make repro TRACK=textworldexpress && dvc repro env_table"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.env_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", nargs="*", default=None, help="only these environments (default: all in params)")
    args = ap.parse_args([] if argv is None else argv)
    cfg = load_section(EnvTableConfig, "env_table")
    unknown = sorted(set(args.envs or ()) - set(cfg.envs))
    if unknown:
        print(f"env_table: --envs {unknown} not in env_table.envs {cfg.envs}", file=sys.stderr)
        return 2
    figs = []
    for env, name, play in zip(cfg.envs, cfg.tracks, cfg.play, strict=True):
        if args.envs is not None and env not in args.envs:
            continue
        track = Track(name)
        oracle = read_parquet(track.path("data/trajectories/oracle/episodes.parquet"), "collect@oracle")
        played = read_parquet(track.path(f"data/trajectories/{play}/episodes.parquet"), f"play@{play}")
        report = json.loads(track.path("reports/details/internalize.json").read_text())
        pool = read_pool(track.path("data/experience/principles.jsonl"))
        figs.append(environment_figures(env, oracle, played, report, len(pool)))
    claims = environment_claims(figs, cfg.seeds, COMMAND)
    write_json([c.to_dict() for c in claims], OUT)
    for c in claims:
        print(f"  {c.finding}: {c.measured}", file=sys.stderr)
    print(f"env_table: {len(claims)} rows for {', '.join(f.env for f in figs)} -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
