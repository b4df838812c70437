"""Stage `mine`: experience from the student's rollouts on the held-out user's tasks.

Reads `data/tasks/tasks.parquet`, `data/rollouts/<mine.rollouts>/` and `params.yaml:mine`;
writes `data/experience/{principles,instances,skills}.jsonl`, the skills' paired validation
`data/experience/skill_validation.{parquet,md}`, `reports/details/mine.json` and its headline
`metrics/mine.json` (`mining.experience.mine`). Nothing it wrote before is read: an empty pool is written as such.
`python -m stages.mine --track twx` reads `params.yaml:twx_mine` and keeps every file under the
track's folders (stages/track.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import polars as pl

from distillery.config import exit_on_config_error
from distillery.evaluate.headline import MINE, pick
from distillery.io import read_parquet, write_json
from distillery.mining.experience import MineConfig, mine, mine_metrics
from distillery.mining.skills import write_validation_table
from distillery.mining.store import write_pool
from distillery.types import tasks_from_frame
from stages.track import Track, track_parser

OUT = Path("data/experience")


def main(argv: list[str] | None = None) -> int:
    ap = track_parser("mine", __doc__)
    track = Track(ap.parse_args([] if argv is None else argv).track)   # main() alone: the agent track
    out = track.path(OUT)
    cfg = track.load(MineConfig, "mine")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(track.path("data/tasks/tasks.parquet"), track.section("tasks")))
    src = track.path(Path("data/rollouts") / cfg.rollouts)
    made_by = track.section(f"rollout@{cfg.rollouts}")
    episodes = read_parquet(src / "episodes.parquet", made_by).filter(pl.col("split") == cfg.split)
    steps = read_parquet(src / "steps.parquet", made_by)
    if episodes.is_empty():
        print(f"mine: no {cfg.split!r} episodes in {src}; set rollout.splits to [{cfg.split}]", file=sys.stderr)
        return 1
    mined = mine(cfg, tasks, episodes, steps)
    for m in mined.messages:
        print(f"mine: principles: {m}", file=sys.stderr)
    write_pool(out / "principles.jsonl", mined.principles)
    write_pool(out / "instances.jsonl", mined.instances)
    write_pool(out / "skills.jsonl", mined.skills)
    write_validation_table(out / "skill_validation.parquet", mined.validation)
    metrics = mine_metrics(mined, episodes, round(time.perf_counter() - t0, 1))
    write_json(metrics, track.path("reports/details/mine.json"))
    write_json(pick(metrics, MINE), track.path("metrics/mine.json"))
    print(f"mine: {metrics['principles']} principles, {metrics['instances']} instances, {metrics['skills']} skills "
          f"({metrics['skills_active']} active, {metrics['skills_retired']} retired) from {episodes.height} "
          f"episodes in {metrics['seconds']} s -> {out}", file=sys.stderr)
    for p in mined.principles:
        print(f"  principle [{p.counter}] {p.text}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_config_error("python -m stages.mine", main, sys.argv[1:]))
