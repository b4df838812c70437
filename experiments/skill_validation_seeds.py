"""Does the `mine` stage's skill verdict depend on the validation seed?

Mines the skills exactly as the `mine` stage does (the warm-up student's rollouts on the
held-out user's learning tasks) and runs its paired validation
(`mining.experience.validate_mined_skills`, with `params.yaml:mine`) once per seed, recording every
skill's utility and status per seed.

    python -m experiments.skill_validation_seeds --seeds 0 1 2   # from the repository root, after `dvc repro mine`

Writes experiments/skill_validation_seeds.json. Not a DVC stage: a one-off check, recorded
here with the command that made it (about 30 s a seed on two cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl

from distillery.config import load_section
from distillery.io import read_parquet, write_json
from distillery.mining.experience import MineConfig, validate_mined_skills
from distillery.mining.skills import mine_skills
from distillery.types import tasks_from_frame

OUT = Path("experiments/skill_validation_seeds.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args(argv)
    cfg = load_section(MineConfig, "mine")
    tasks = tasks_from_frame(read_parquet("data/tasks/tasks.parquet", "tasks"))
    src = Path("data/rollouts") / cfg.rollouts
    episodes = read_parquet(src / "episodes.parquet", f"rollout@{cfg.rollouts}").filter(pl.col("split") == cfg.split)
    steps = read_parquet(src / "steps.parquet", f"rollout@{cfg.rollouts}")
    skills = mine_skills(tasks, episodes, steps)
    per_seed = {}
    for seed in a.seeds:
        t0 = time.perf_counter()
        _, table = validate_mined_skills(cfg, skills, tasks, seed=seed)
        per_seed[str(seed)] = {r["family"]: {"utility": r["utility"], "status": r["status"], "trials": r["trials"]}
                               for r in table.iter_rows(named=True)}
        counts = {s: sum(v["status"] == s for v in per_seed[str(seed)].values()) for s in ("active", "retired", "candidate")}
        print(f"seed {seed}: {counts} in {time.perf_counter() - t0:.0f} s")
    verdicts = {fam: sorted({per_seed[s][fam]["status"] for s in per_seed}) for fam in per_seed[str(a.seeds[0])]}
    write_json({"command": "python -m experiments.skill_validation_seeds --seeds " + " ".join(map(str, a.seeds)),
                "settings": {"pairs_per_group": cfg.pairs_per_group, "max_groups": cfg.max_groups,
                             "temperature": cfg.temperature, "model_dir": cfg.model_dir},
                "per_seed": per_seed,
                "same_verdict_every_seed": all(len(v) == 1 for v in verdicts.values())}, OUT)
    for fam, v in verdicts.items():
        us = ", ".join(f"{per_seed[s][fam]['utility']:+.3f}" for s in per_seed)
        print(f"  {fam:18s} {'/'.join(v):10s} U = {us}")
    print(f"-> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
