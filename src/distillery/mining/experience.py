"""Every kind of experience from one set of rollouts: what the `mine` stage computes.

Principles (an ExpeL-style pool written by the rules summariser or an LLM endpoint),
instances (the successful decisive calls per task) and SIRI skills, each skill validated by
paired rollouts of the same tasks with and without it (promoted or retired by its utility).
Mining starts from an empty pool: the stage's outputs are a function of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from distillery.config import _f
from distillery.mining.instances import mine_instances
from distillery.mining.principles import LLMSummariser, update_pool
from distillery.mining.rules import RulesSummariser
from distillery.mining.skills import (
    VALIDATION_SCHEMA,
    ValidationResult,
    make_run_fn,
    mine_skills,
    validate_skills,
)
from distillery.types import SPLITS, Experience, Task


@dataclass
class MineConfig:
    """`mine` stage."""

    rollouts: str = _f("warmup", "whose rollouts to mine: data/rollouts/<name>")
    split: str = _f("heldout_train", "the tasks the rollouts ran on")
    summariser: Literal["rules", "llm"] = _f("rules", "rules (offline, deterministic) | llm (OpenAI-compatible endpoint)")
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
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} is not a task split; choose from {list(SPLITS)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")


@dataclass
class Mined:
    principles: list[Experience]
    instances: list[Experience]
    skills: list[Experience]
    validation: pl.DataFrame                 # one row per validated skill (VALIDATION_SCHEMA)
    messages: list[str] = field(default_factory=list)   # what the principle summariser said


def validate_mined_skills(cfg: MineConfig, skills: Sequence[Experience], tasks: Sequence[Task],
                          seed: int = 0) -> ValidationResult:
    """The paired validation of `skills` on the `cfg.split` tasks, by `cfg.model_dir` sampling
    at `cfg.temperature` (`mining.skills.validate_skills`): (skills, table)."""
    from distillery.agents.hf import HFPolicy

    policy = HFPolicy(cfg.model_dir, temperature=cfg.temperature)
    learn = [t for t in tasks if t.split == cfg.split]
    return validate_skills(skills, learn, make_run_fn(policy, batch_size=128), pairs_per_group=cfg.pairs_per_group,
                           max_groups=cfg.max_groups or None, seed=seed)


def mine(cfg: MineConfig, tasks: Sequence[Task], episodes: pl.DataFrame, steps: pl.DataFrame) -> Mined:
    """Principles, instances and (validated) skills from `episodes`/`steps` of `cfg.split`."""
    by_id = {t.task_id: t for t in tasks}
    summariser = (RulesSummariser(lessons_only=cfg.lessons_only) if cfg.summariser == "rules"
                  else LLMSummariser.from_url(cfg.base_url, cfg.model))
    update = update_pool([], by_id, episodes, steps, summariser, max_rules=cfg.max_rules)
    instances = mine_instances(by_id, episodes, steps)
    skills = mine_skills(tasks, episodes, steps)
    table = pl.DataFrame(schema=VALIDATION_SCHEMA)
    if cfg.validate_skills and skills:
        skills, table = validate_mined_skills(cfg, skills, tasks)
    return Mined(update.pool, instances, skills, table, list(update.messages))


def mine_metrics(mined: Mined, episodes: pl.DataFrame, seconds: float) -> dict[str, Any]:
    """`reports/details/mine.json` (its headline: `evaluate.headline.MINE`)."""
    return {
        "episodes": episodes.height, "success": float(episodes["success"].mean()),
        "principles": len(mined.principles), "instances": len(mined.instances), "skills": len(mined.skills),
        "skills_active": sum(s.status == "active" for s in mined.skills),
        "skills_retired": sum(s.status == "retired" for s in mined.skills),
        "seconds": seconds,
    }
