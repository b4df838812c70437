"""The ScienceWorld adapter: actions as tool calls, subgoals read from the simulator's goal
progress, the limit of simulators per worker, and the oracle completing the small fixed set
through the rollout engine. One simulator (a JVM of ~1.35 GB) for the whole module; tests
that start it skip when the optional extra is not installed. (Hostile actions over every
tool: tests/envs/test_hostile_actions.py.)"""

from __future__ import annotations

import random

import pytest

from distillery.envs.scienceworld.commands import BLOCKED, TOOL_NAMES, from_command, to_command
from distillery.envs.scienceworld.env import subgoals
from distillery.envs.scienceworld.families import TASKS
from distillery.types import Task, ToolCall

GOLD_ACTIONS = ["open door to kitchen", "go to kitchen", "look around", "pick up thermometer", "focus on blue jay",
                "move blue jay to orange box", "wait1", "wait", "0", "look at bee", "pour cup in pot",
                "connect battery anode to orange wire terminal 1", "use thermometer on water", "put down metal pot",
                "activate stove", "inventory", "task"]
INSTALL = "ScienceWorld is an optional extra: pip install -e '.[scienceworld]' (needs Java 17)"

PROGRESS = """Completed keys:
----------------------------------------------------------------------------------------------------
Sequential Subgoals:
----------------------------------------------------------------------------------------------------
0\ttrue\t                  GoalFocusOnLivingThing\tfocus on a living thing
1\tfalse\t                   GoalObjectInContainer\tmove living thing to answer box
----------------------------------------------------------------------------------------------------
Unordered and Optional Subgoals:
----------------------------------------------------------------------------------------------------
0\tfalse\t                   GoalObjectInContainer\tPick up object
"""


@pytest.mark.parametrize("cmd", GOLD_ACTIONS)
def test_every_gold_action_reads_back_as_a_call_that_renders_it(cmd):
    call = from_command(cmd)
    assert to_command(call) == cmd and call.tool in TOOL_NAMES


def test_actions_map_to_their_templates_and_subgoals_are_read_in_order():
    assert from_command("move blue jay to orange box") == ToolCall("move", {"obj": "blue jay", "to": "orange box"})
    assert from_command("focus on blue jay") == ToolCall("focus", {"obj": "blue jay"})
    assert subgoals(PROGRESS) == [("focus on a living thing", True), ("move living thing to answer box", False)]
    assert "reset task" in BLOCKED


def test_the_entry_points_register_the_environment_with_its_instance_limit(checkout_plugins):
    from distillery.envs.base import env_spec, families

    spec = env_spec("scienceworld")
    assert spec.max_instances == 4 and spec.batch_limit(64) == 4 and spec.batch_limit(64, held=1) == 3
    assert spec.batch_limit(2) == 2 and env_spec("stage").batch_limit(64) == 64
    assert sorted(f.name for f in families("scienceworld")) == sorted(TASKS)


@pytest.fixture(scope="module")
def sw():
    pytest.importorskip("scienceworld", reason=INSTALL)
    from distillery.envs.scienceworld import ScienceWorldEnv

    env = ScienceWorldEnv()
    yield env
    env.close()


@pytest.mark.heavy_env
def test_a_simulator_past_the_limit_is_refused_naming_it(sw, monkeypatch):
    from distillery.envs.scienceworld import ScienceWorldEnv, engine

    assert engine.in_use() >= 1
    monkeypatch.setattr(engine, "MAX_INSTANCES", engine.in_use())      # as if every allowed one were in use
    with pytest.raises(engine.InstanceLimitError, match=r"at most \d+ simulators per worker"):
        ScienceWorldEnv()


@pytest.mark.heavy_env
def test_bad_actions_are_observations_and_a_failed_task_names_the_gold_actions_left(sw):
    from distillery.envs.actions import format_call
    from distillery.envs.scienceworld.families import FAMILIES

    d = FAMILIES["sw_find_living_thing"].draft(random.Random(0), "default")
    task = Task(task_id="t", family="sw_find_living_thing", split="test", profile="default", hint="",
                instruction=d.instruction, initial_state=d.state, reference_solution=d.solution, checks=d.checks,
                max_steps=30, env="scienceworld")
    assert "living thing" in sw.reset(task)
    h = sw.state_hash()
    for bad in ['command(text="reset task")', 'command(text="xyzzy")', 'focus(obj="\\u0000")', None, "go(", ]:
        res = sw.step(bad)
        assert not res.valid and res.error and not res.done, (bad, res)
    assert sw.state_hash() == h
    res = sw.step("valid_actions()")
    assert res.valid and "Valid actions here" in res.observation
    assert sw.step(format_call(task.reference_solution[0])).valid
    ver = sw.verify()
    assert not ver.success and ver.checks[0].name.startswith("completed(next=")
    assert [c.type for c in ver.checks][:2] == ["completed", "not_failed"] and any(c.type == "subgoal" for c in ver.checks)


@pytest.mark.heavy_env
@pytest.mark.slow
def test_the_oracle_completes_the_fixed_set_through_the_rollout_engine(sw, checkout_plugins):
    from distillery.agents.base import PolicySpec
    from distillery.config import TasksConfig
    from distillery.rollout import RolloutConfig, run_episodes
    from distillery.tasks.generate import generate_tasks

    sw.close()          # the module's simulator goes back to the pool for the stage's own environment
    cfg = TasksConfig(env="scienceworld", families=sorted(TASKS), n_train_per_family=0, n_test_per_family=1,
                      max_steps=30, random_probes=1, family_detect_rate=0)
    tasks = generate_tasks(cfg, progress=False).tasks
    assert len(tasks) == len(TASKS)
    traj = run_episodes(tasks, PolicySpec("oracle"), RolloutConfig(k=1, batch_size=1), progress=False)
    assert traj.episodes["success"].all() and (traj.episodes["score"] == 1.0).all()


def test_without_java_drafting_says_so_in_one_line_not_as_a_family_bug(monkeypatch, tmp_path):
    """No `java` on PATH: the engine is unavailable (what to install), checked before the
    package's launch fails and its half-built object's destructor prints a second error; the
    task generator passes it on instead of wrapping it as the family's failure."""
    pytest.importorskip("scienceworld", reason=INSTALL)
    from distillery.envs.base import EngineUnavailable
    from distillery.envs.scienceworld import engine
    from distillery.tasks.generate import draft_task

    monkeypatch.setattr(engine, "_idle", [])            # no simulator already started to hand out
    monkeypatch.setenv("PATH", str(tmp_path))           # a PATH with no `java` on it
    started = engine._started
    with pytest.raises(EngineUnavailable, match="ScienceWorld needs Java 17 or later: no `java` on PATH"):
        draft_task("sw_find_plant", "train", "default", 0, seed=0, max_steps=40)
    assert engine._started == started                   # the refused start is not counted against the limit
