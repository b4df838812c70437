"""Mining TextWorldExpress episodes through the environment's own hooks: a failed game names
the gold commands the agent never ran (`Phrasebook.missing_calls`), the rules miner contrasts
them with what the failure did, and the lessons it finds are the games' mechanics, word for
word the principles the tasks were drafted with."""

from __future__ import annotations

from dataclasses import replace

import pytest

from distillery.envs.actions import format_call
from distillery.envs.textworldexpress.games import DOOR_RULE
from distillery.mining.principles import update_pool
from distillery.mining.rules import RulesSummariser
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.types import ActionOutput, Context, Task


class SkipsPolicy:
    """Plays the gold path but never opens a door and never takes the coin (then finishes)."""

    name = "skips"
    model = "-"

    def act(self, contexts: list[Context]) -> list[ActionOutput]:
        out = []
        for ctx in contexts:
            calls = [c for c in ctx.task.reference_solution
                     if not (c.tool == "open" and str(c.args.get("obj", "")).startswith("door"))
                     and not (c.tool == "take" and c.args.get("obj") == "coin")]
            out.append(ActionOutput(text=format_call(calls[ctx.t]) if ctx.t < len(calls) else "finish()"))
        return out


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    pytest.importorskip("textworld_express", reason="TextWorldExpress is an optional extra: pip install -e '.[textworld]' (needs Java 17)")
    import random

    from distillery.envs.textworldexpress.families import FAMILIES

    out = []
    for family, profile in (("twx_coin", "doors"), ("twx_coin", "rooms-doors"), ("twx_mapreader", "doors")):
        for i in range(4):
            d = FAMILIES[family].draft(random.Random(f"{family}:{profile}:{i}"), profile)
            out.append(Task(task_id=f"{family}-{profile}-{i}", family=family, split="heldout_train", profile=profile,
                            hint="", instruction=d.instruction, initial_state=d.state, reference_solution=d.solution,
                            checks=d.checks, preferences=d.preferences, max_steps=25, env="textworldexpress"))
    return out


@pytest.mark.heavy_env
def test_failures_teach_the_games_mechanics_in_their_principles_words(tasks, checkout_plugins):
    from distillery.agents.base import PolicySpec, make_policy

    cfg = RolloutConfig(k=1)
    oracle = run_batch(make_policy(PolicySpec("oracle")), make_jobs(tasks, "oracle", cfg), cfg)
    skips = run_batch(SkipsPolicy(), make_jobs(tasks, "skips", cfg), cfg)
    assert oracle.episodes["success"].all() and not skips.episodes["success"].any()
    assert all(any(n.startswith("won(next=") for n in names) for names in skips.episodes["failed_checks"])
    traj = Trajectories.concat([oracle, skips])
    # The miner never reads a task's principles, checks or reference solution.
    blind = {t.task_id: replace(t, preferences=[], checks=[], reference_solution=[]) for t in tasks}
    update = update_pool([], blind, traj.episodes, traj.steps, RulesSummariser(lessons_only=True))
    texts = {e.text for e in update.pool}
    principles = {p for t in tasks for p in t.preferences}
    assert DOOR_RULE in texts and "The goal is to take the coin." in texts, (texts, update.messages)
    assert texts <= principles, texts - principles
    # Failures alone teach too (no successful episode of a task needed beside them).
    alone = update_pool([], blind, traj.episodes.filter(~traj.episodes["task_id"].str.starts_with("twx_mapreader")
                                                         | traj.episodes["success"].not_()),
                        traj.steps, RulesSummariser(lessons_only=True))
    assert "Things go in the box." in {e.text for e in alone.pool}, alone.messages
