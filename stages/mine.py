"""Stage `mine`: experience from the student's rollouts on the held-out user's tasks.

Reads `data/tasks/tasks.parquet`, `data/rollouts/<policy>/` (K samples per learning task,
no experience injected) and `params.yaml:mine`; writes `data/experience/`:

- `principles.jsonl`: ExpeL-style pool (rules summariser by default; `llm` for an endpoint),
- `instances.jsonl`: successful decisive calls per task,
- `skills.jsonl` and `skill_validation.{parquet,md}`: SIRI skills with their paired
  validation (rollouts of the same tasks with and without each skill, same seeds),

and `metrics/mine.json`. An existing pool is never dropped: if mining finds nothing (only
failures, an endpoint down), the previous files are kept and the reason is printed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distillery.config import _f, load_section
from distillery.io import read_parquet, write_json
from distillery.mining.store import read_pool, write_pool
from distillery.types import Experience, Task, tasks_from_frame

if TYPE_CHECKING:
    from distillery.mining.skills import ValidationResult

TASKS = "data/tasks/tasks.parquet"
OUT = Path("data/experience")
METRICS = "metrics/mine.json"


@dataclass
class MineConfig:
    """`mine` stage."""

    rollouts: str = _f("warmup", "whose rollouts to mine: data/rollouts/<name>")
    split: str = _f("heldout_train", "the tasks the rollouts ran on")
    summariser: str = _f("rules", "rules (offline, deterministic) | llm (OpenAI-compatible endpoint)")
    base_url: str = _f("http://127.0.0.1:8000/v1", "llm summariser: endpoint")
    model: str = _f("default", "llm summariser: model name")
    max_rules: int = _f(20, "principle pool cap (ExpeL max_num_rules)")
    lessons_only: bool = _f(True, "rules summariser: keep only regularities a failure contrasted (lessons)")
    validate_skills: bool = _f(True, "run the paired skill validation (student rollouts with/without)")
    model_dir: str = _f("models/warmup", "the policy that validates skills")
    pairs_per_group: int = _f(2, "skill validation: episodes per arm per task group")
    max_groups: int = _f(0, "skill validation: task groups per skill (0 = every learning task of its family)")
    temperature: float = _f(1.0, "skill validation: sampling temperature")

    def __post_init__(self) -> None:
        if self.max_groups < 0:
            raise ValueError(f"max_groups must be 0 (every group) or positive, got {self.max_groups}")


def validate_mined_skills(cfg: MineConfig, skills: Sequence[Experience], tasks: Sequence[Task],
                          seed: int = 0) -> ValidationResult:
    """The stage's paired validation of `skills` on the `cfg.split` tasks, by `cfg.model_dir`
    sampling at `cfg.temperature` (`mining.skills.validate_skills`): (skills, table)."""
    from distillery.agents.hf import HFPolicy
    from distillery.mining.skills import make_run_fn, validate_skills

    policy = HFPolicy(cfg.model_dir, temperature=cfg.temperature)
    learn = [t for t in tasks if t.split == cfg.split]
    return validate_skills(skills, learn, make_run_fn(policy, batch_size=128), pairs_per_group=cfg.pairs_per_group,
                           max_groups=cfg.max_groups or None, seed=seed)


def main() -> int:
    import polars as pl

    from distillery.mining.instances import mine_instances
    from distillery.mining.principles import LLMSummariser, update_pool
    from distillery.mining.rules import RulesSummariser
    from distillery.mining.skills import mine_skills, write_validation_table

    cfg = load_section(MineConfig, "mine")
    t0 = time.perf_counter()
    tasks = tasks_from_frame(read_parquet(TASKS, "tasks"))
    by_id = {t.task_id: t for t in tasks}
    src = Path("data/rollouts") / cfg.rollouts
    episodes = read_parquet(src / "episodes.parquet", f"rollout@{cfg.rollouts}")
    steps = read_parquet(src / "steps.parquet", f"rollout@{cfg.rollouts}")
    episodes = episodes.filter(pl.col("split") == cfg.split)
    if episodes.is_empty():
        print(f"mine: no {cfg.split!r} episodes in {src}; set rollout.splits to [{cfg.split}]", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    old = read_pool(OUT / "principles.jsonl")
    summariser = RulesSummariser(lessons_only=cfg.lessons_only) if cfg.summariser == "rules" else LLMSummariser.from_url(cfg.base_url, cfg.model)
    up = update_pool([], by_id, episodes, steps, summariser, max_rules=cfg.max_rules)
    for m in up.messages:
        print(f"mine: principles: {m}", file=sys.stderr)
    principles = up.pool if up.pool else old
    write_pool(OUT / "principles.jsonl", principles)
    instances = mine_instances(by_id, episodes, steps)
    write_pool(OUT / "instances.jsonl", instances)
    skills = mine_skills(tasks, episodes, steps)
    table = None
    if cfg.validate_skills and skills:
        skills, table = validate_mined_skills(cfg, skills, tasks)
        write_validation_table(OUT / "skill_validation.parquet", table)
    if table is None:   # a declared out even when nothing was validated
        from distillery.mining.skills import VALIDATION_SCHEMA

        table = pl.DataFrame(schema=VALIDATION_SCHEMA)
        write_validation_table(OUT / "skill_validation.parquet", table)
    write_pool(OUT / "skills.jsonl", skills)
    metrics = {
        "episodes": episodes.height, "success": float(episodes["success"].mean()),
        "principles": len(principles), "instances": len(instances), "skills": len(skills),
        "skills_active": sum(s.status == "active" for s in skills),
        "skills_retired": sum(s.status == "retired" for s in skills),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(metrics, METRICS)
    print(f"mine: {metrics['principles']} principles, {metrics['instances']} instances, {metrics['skills']} skills "
          f"({metrics['skills_active']} active, {metrics['skills_retired']} retired) from {episodes.height} "
          f"episodes in {metrics['seconds']} s -> {OUT}", file=sys.stderr)
    for p in principles:
        print(f"  principle [{p.counter}] {p.text}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
