"""The TextWorld adapter: commands as tool calls, settings, games generated from data and
cached (the same seed gives the same game, regenerated when missing, in another process
too), the oracle winning through the rollout engine, and failures naming TextWorld's plan
from where the episode ended. Tests that run TextWorld skip when the optional extra is not
installed. (Hostile actions over every tool: tests/envs/test_hostile_actions.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.conftest import REPO

from distillery.envs.actions import format_call
from distillery.envs.text_game import next_commands_name
from distillery.envs.textworld.commands import TOOL_NAMES, from_command, to_command
from distillery.envs.textworld.games import CHALLENGES, check_setting
from distillery.envs.textworld.phrasebook import PHRASEBOOK, missing_calls
from distillery.types import Task, ToolCall

WALKTHROUGH_COMMANDS = [
    "go east", "look", "inventory", "take coin", "take white onion from fridge", "open fridge", "close chest drawer",
    "examine cookbook", "drop knife", "eat meal", "drink milk", "prepare meal", "put apple on stove",
    "insert key into box", "unlock wooden door with old key", "lock wooden door with old key",
    "cook white onion with oven", "slice red potato with knife", "dice carrot with knife", "chop leek with knife",
    "xyzzy",
]
INSTALL = "TextWorld is an optional extra: pip install -e '.[textworld]'"


@pytest.mark.parametrize("cmd", WALKTHROUGH_COMMANDS)
def test_every_walkthrough_command_reads_back_as_a_call_that_renders_it(cmd):
    call = from_command(cmd)
    assert to_command(call) == cmd and call.tool in TOOL_NAMES


def test_commands_map_to_their_verb_templates():
    assert from_command("take white onion from fridge") == ToolCall("take", {"obj": "white onion", "source": "fridge"})
    assert from_command("unlock wooden door with old key") == ToolCall("unlock", {"obj": "wooden door", "key": "old key"})
    assert from_command("jump") == ToolCall("command", {"text": "jump"})
    assert to_command(ToolCall("take", {"obj": " Coin "})) == "take coin"


def test_settings_are_knobs_and_a_fold():
    s = check_setting("rooms-longer-test")
    assert s.knobs == ("rooms", "longer") and s.fold == "test"
    assert CHALLENGES["tw_cooking"].settings(s)["split"] == "test" and CHALLENGES["tw_cooking"].settings(s)["go"] == 6
    assert CHALLENGES["tw_coin"].settings(check_setting("default")) == {"level": 3}
    for bad in ("doors", "h01", ""):
        with pytest.raises(ValueError, match="setting"):
            check_setting(bad)


def test_a_failed_game_names_the_plan_and_the_miner_reads_it_back():
    name = next_commands_name(["open fridge", "take white onion from fridge"])
    assert missing_calls(name) == [ToolCall("open", {"obj": "fridge"}),
                                   ToolCall("take", {"obj": "white onion", "source": "fridge"})]
    assert PHRASEBOOK.missing_calls("not_lost") == [] and PHRASEBOOK.check_type(name) == "won"


def test_the_entry_points_register_the_environment_and_its_challenges(checkout_plugins):
    from distillery.envs.base import env_spec, families
    from distillery.envs.textworld import ENV

    assert env_spec("textworld") is ENV and ENV.requires == ("textworld",)
    assert sorted(f.name for f in families("textworld")) == sorted(CHALLENGES)


# ---------------------------------------------------------------------------------------
# With TextWorld
# ---------------------------------------------------------------------------------------


def _task(family: str, attempt: int = 0) -> Task:
    """A test task of `family` at the coordinates the hostile-action harness and the oracle test
    below draw too (seed 0, default setting), so each game is generated once per run."""
    from distillery.tasks.generate import draft_task

    return draft_task(family, "test", "default", attempt, seed=0, max_steps=30)


def fingerprint(state: dict) -> list:
    """What makes a game that game: its objective and walkthrough, the first observation, the
    commands admitted there and the world's facts."""
    from distillery.envs.textworld import engine
    from distillery.envs.textworld.games import ensure_game

    path = ensure_game(state)
    env = engine.start(path)
    try:
        s = env.reset()
        return [engine.game_data(path), s.feedback, sorted(s.admissible_commands), sorted(map(str, s.facts))]
    finally:
        env.close()


FINGERPRINT = """
import json, sys
from tests.envs.test_textworld import fingerprint
print(json.dumps(fingerprint(json.loads(sys.argv[1]))))
"""


@pytest.mark.heavy_env
def test_the_same_seed_gives_the_same_game_regenerated_when_missing_in_another_process(textworld_games,
                                                                                       checkout_plugins):
    pytest.importorskip("textworld", reason=INSTALL)
    from distillery.envs.textworld.games import game_path

    task, again = _task("tw_treasure"), _task("tw_treasure")
    assert task.to_row() == again.to_row()
    first = json.loads(json.dumps(fingerprint(task.initial_state)))      # generated or cached in this process
    path = game_path(task.initial_state)
    assert path.is_file() and path.is_relative_to(textworld_games)
    path.unlink()
    path.with_suffix(".json").unlink()
    env = {**os.environ, "PYTHONHASHSEED": "12345"}     # another process, another hash seed
    out = subprocess.run([sys.executable, "-c", FINGERPRINT, json.dumps(task.initial_state)], capture_output=True,
                         text=True, env=env, cwd=REPO, check=True, timeout=120)
    assert path.is_file() and json.loads(out.stdout.strip().splitlines()[-1]) == first
    other = dict(task.initial_state, seed=task.initial_state["seed"] + 1)
    assert game_path(other) != path


@pytest.mark.heavy_env
def test_a_partly_played_game_fails_naming_textworlds_plan_from_there(checkout_plugins):
    pytest.importorskip("textworld", reason=INSTALL)
    from distillery.envs.textworld import TextWorldEnv

    task = _task("tw_coin")
    env = TextWorldEnv()
    try:
        obs = env.reset(task)
        assert "$$" not in obs and task.instruction.split(".")[0] in " ".join(obs.split())
        h = env.state_hash()
        for bad in ['take(obj="unicorn")', 'command(text="quit")', 'command(text="take coin\\u0000")', None]:
            res = env.step(bad)
            assert not res.valid and res.error and not res.done and env.state_hash() == h
        first = task.reference_solution[0]
        assert env.step(format_call(first)).valid
        ver = env.verify()
        assert not ver.success and ver.score < 1
        assert missing_calls(ver.failed[0].name) == task.reference_solution[1:]
    finally:
        env.close()


@pytest.mark.heavy_env
@pytest.mark.slow
def test_tasks_validate_and_the_oracle_wins_them_through_the_rollout_engine(checkout_plugins):
    pytest.importorskip("textworld", reason=INSTALL)
    from distillery.agents.base import PolicySpec
    from distillery.config import TasksConfig
    from distillery.rollout import RolloutConfig, run_episodes
    from distillery.tasks.generate import generate_tasks

    # The hostile-action harness's tasks (seed 0, default setting, attempts 0 and 1): one generation each.
    cfg = TasksConfig(env="textworld", families=sorted(CHALLENGES), n_train_per_family=0, n_test_per_family=2,
                      max_steps=30, random_probes=1, family_detect_rate=0)
    tasks = generate_tasks(cfg, progress=False).tasks
    assert len(tasks) == 2 * len(CHALLENGES)
    traj = run_episodes(tasks, PolicySpec("oracle"), RolloutConfig(k=1), progress=False)
    assert traj.episodes["success"].all() and set(traj.episodes["env"]) == {"textworld"}
    random_ = run_episodes(tasks, PolicySpec("random", {"seed": 0}), RolloutConfig(k=1), progress=False)
    assert not random_.episodes["success"].any() and (random_.episodes["failure_mode"] != "error").all()


class SkipsTheCoin:
    """Plays the walkthrough but never takes the coin (then finishes)."""

    name = "skips"
    model = "-"

    def act(self, contexts):
        from distillery.types import ActionOutput

        out = []
        for ctx in contexts:
            calls = [c for c in ctx.task.reference_solution if c != ToolCall("take", {"obj": "coin"})]
            out.append(ActionOutput(text=format_call(calls[ctx.t]) if ctx.t < len(calls) else "finish()"))
        return out


@pytest.mark.heavy_env
def test_failures_name_textworlds_plan_and_the_miner_learns_the_goal_from_it(checkout_plugins):
    """The rules miner reads a failed game's plan (`won(next=take coin)`) through the phrasebook's
    `missing_calls`, contrasts it with the failure and words the lesson as the challenge's mechanic."""
    pytest.importorskip("textworld", reason=INSTALL)
    from dataclasses import replace

    from distillery.agents.base import PolicySpec, make_policy
    from distillery.mining.principles import update_pool
    from distillery.mining.rules import RulesSummariser
    from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch

    tasks = [_task("tw_coin", a) for a in range(3)]
    cfg = RolloutConfig(k=1)
    oracle = run_batch(make_policy(PolicySpec("oracle")), make_jobs(tasks, "oracle", cfg), cfg)
    skips = run_batch(SkipsTheCoin(), make_jobs(tasks, "skips", cfg), cfg)
    assert oracle.episodes["success"].all() and not skips.episodes["success"].any()
    assert all("won(next=take coin)" in names for names in skips.episodes["failed_checks"])
    traj = Trajectories.concat([oracle, skips])
    blind = {t.task_id: replace(t, preferences=[], checks=[], reference_solution=[]) for t in tasks}
    update = update_pool([], blind, traj.episodes, traj.steps, RulesSummariser(lessons_only=True))
    assert "The goal is to take the coin." in {e.text for e in update.pool}, update.messages
