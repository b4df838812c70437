"""The TextWorldExpress adapter: commands as tool calls, settings, drafts that validate, the
oracle winning every game, bad actions as observations, failures naming the gold commands
still needed, and its registration. Tests that start the engine (a JVM) skip when the
optional package is not installed."""

from __future__ import annotations

import pytest

from distillery.envs.actions import format_call
from distillery.envs.text_game import next_commands_name, remaining_gold
from distillery.envs.textworldexpress.commands import (
    TOOL_SPECS,
    command_error,
    from_command,
    to_command,
)
from distillery.envs.textworldexpress.games import DOOR_RULE, GAMES, parse_setting
from distillery.envs.textworldexpress.phrasebook import PHRASEBOOK, missing_calls, parse_check_name
from distillery.types import ToolCall

# Commands of every kind the eight games' gold paths hold.
GOLD_COMMANDS = [
    "look around", "inventory", "task", "move north", "take coin", "take 25g of oak", "open door to north",
    "open fridge", "close fridge", "read cookbook", "read math problem", "put coin in box",
    "put clean blue socks in chest of drawers", "cook red hot pepper in oven", "slice red hot pepper",
    "dice purple potato", "chop block of cheese", "prepare meal", "eat meal", "smell pineapple",
    "touch pineapple", "examine oven", "jump up and down", "hop on your right foot", "turn around in a circle",
]


# ---------------------------------------------------------------------------------------
# Without the engine
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", GOLD_COMMANDS)
def test_every_gold_command_reads_back_as_a_call_that_renders_it(cmd):
    call = from_command(cmd)
    assert to_command(call) == cmd
    names = {s.name for s in TOOL_SPECS}
    assert call.tool in names


def test_commands_map_to_their_verb_templates():
    assert from_command("put coin in box") == ToolCall("put", {"obj": "coin", "container": "box"})
    assert from_command("cook red hot pepper in oven") == ToolCall("cook", {"obj": "red hot pepper", "appliance": "oven"})
    assert from_command("open door to north") == ToolCall("open", {"obj": "door to north"})
    assert from_command("look around") == ToolCall("look", {})
    assert from_command("jump up and down") == ToolCall("command", {"text": "jump up and down"})
    assert to_command(ToolCall("take", {"obj": "  Coin "})) == "take coin"
    assert command_error("take coin\x00") and command_error("x" * 201) and not command_error("take coin")


def test_settings_name_knobs_and_a_fold():
    assert parse_setting("default") == parse_setting("default-train")
    s = parse_setting("rooms-doors-test")
    assert s.knobs == ("rooms", "doors") and s.fold == "test" and s.name == "rooms-doors-test"
    assert parse_setting("doors-rooms").knobs == ("rooms", "doors")
    for bad in ("", "h01", "rooms-rooms", "test-rooms", "default-default"):
        with pytest.raises(ValueError, match="setting"):
            parse_setting(bad)


def test_a_setting_changes_the_game_parameters_and_doors_bring_their_rule():
    coin = GAMES["twx_coin"]
    assert coin.params_text(()) == "includeDoors=0,limitInventorySize=0,numDistractorItems=0,numLocations=3"
    assert coin.params(("rooms", "doors")) == {**coin.base, "numLocations": 5, "includeDoors": 1}
    assert DOOR_RULE not in coin.principles(()) and DOOR_RULE in coin.principles(("doors",))
    assert GAMES["twx_sorting"].params(("rooms",)) == {}      # a knob a game lacks changes nothing


def test_a_failed_game_names_the_gold_commands_never_run_and_the_miner_reads_them_back():
    gold = ["look around", "open door to west", "move west", "take coin"]
    left = remaining_gold(gold, ["look around", "move west", "move west"])
    assert left == ["open door to west", "take coin"]
    name = next_commands_name(left)
    assert name == "won(next=open door to west | take coin)"
    assert parse_check_name(name) == ("won", {"next": "open door to west | take coin"})
    assert missing_calls(name) == [ToolCall("open", {"obj": "door to west"}), ToolCall("take", {"obj": "coin"})]
    assert PHRASEBOOK.missing_calls("not_lost") == [] and PHRASEBOOK.check_type("won") == "won"
    assert remaining_gold(gold, gold) == [] and next_commands_name([]) == "won"


# ---------------------------------------------------------------------------------------
# With the engine
# ---------------------------------------------------------------------------------------

SETTINGS = ("default", "rooms-doors-test")


@pytest.fixture(scope="module")
def twx():
    pytest.importorskip("textworld_express", reason="TextWorldExpress is an optional extra: pip install -e '.[textworld]' (needs Java 17)")
    from distillery.envs.textworldexpress import TwxEnv

    env = TwxEnv()
    yield env
    env.close()


def _task(family: str, profile: str, attempt: int = 0):
    import random

    from distillery.envs.textworldexpress.families import FAMILIES
    from distillery.types import Task

    d = FAMILIES[family].draft(random.Random(f"{family}:{profile}:{attempt}"), profile)
    return Task(task_id=f"{family}-{profile}-{attempt}", family=family, split="test", profile=profile,
                hint="", instruction=d.instruction, initial_state=d.state, reference_solution=d.solution,
                checks=d.checks, preferences=d.preferences, max_steps=30, env="textworldexpress")


@pytest.mark.heavy_env
def test_the_engine_seed_folds_are_the_ones_drafts_draw_from(twx):
    from distillery.envs.textworldexpress import engine

    g = engine.new_game()
    try:
        engine.load(g, "coin", "")
        assert list(g.getSeedsTrain()) == list(engine.seeds("train"))
        assert list(g.getSeedsDev()) == list(engine.seeds("dev"))
        assert list(g.getSeedsTest()) == list(engine.seeds("test"))
    finally:
        engine.release(g)


@pytest.mark.heavy_env
@pytest.mark.parametrize("family", sorted(GAMES))
@pytest.mark.parametrize("profile", SETTINGS)
def test_every_game_drafts_deterministically_fails_untouched_and_the_oracle_wins(twx, family, profile):
    task, again = _task(family, profile), _task(family, profile)
    assert task.to_row() == again.to_row()
    assert task.initial_state["fold"] == parse_setting(profile).fold
    assert GAMES[family].min_gold <= len(task.reference_solution) <= GAMES[family].max_gold
    twx.reset(task)
    h = twx.state_hash()
    untouched = twx.verify()
    assert not untouched.success and untouched.score < 1
    assert untouched.failed[0].name == next_commands_name([to_command(c) for c in task.reference_solution])
    twx.reset(task)
    assert twx.state_hash() == h
    for i, call in enumerate(task.reference_solution):
        res = twx.step(format_call(call))
        assert res.valid and not res.error, (call, res)
        assert res.done == (i == len(task.reference_solution) - 1)
    ver = twx.verify()
    assert ver.success and ver.score == 1.0 and [c.name for c in ver.checks] == ["won", "not_lost"]


@pytest.mark.heavy_env
@pytest.mark.parametrize("family", sorted(GAMES))
def test_games_played_side_by_side_on_one_jvm_both_win(twx, family):
    """A rollout steps many games in turn on one JVM; the sorting game keeps the game generated
    last in shared state, so without the replay in `TwxEnv._resync` the first of two
    interleaved sorting games stops accepting commands after its first `put`."""
    from distillery.envs.textworldexpress import TwxEnv

    task = _task(family, "default-test", attempt=1)
    other = TwxEnv()
    try:
        twx.reset(task)
        other.reset(task)
        for call in task.reference_solution:
            for env in (twx, other):
                res = env.step(format_call(call))
                assert res.valid, (family, call, res.error)
        assert twx.verify().success and other.verify().success
    finally:
        other.close()


@pytest.mark.heavy_env
def test_the_sorting_game_needs_the_replay(twx, monkeypatch):
    """The test above fails for sorting without `Game.shared_state`: the engine's behaviour
    the replay works around is still there (if this starts failing, the replay can go)."""
    from distillery.envs.textworldexpress import TwxEnv
    from distillery.envs.textworldexpress.games import Game

    monkeypatch.setitem(GAMES, "twx_sorting", Game(**{**GAMES["twx_sorting"].__dict__, "shared_state": False}))
    task = _task("twx_sorting", "default-test", attempt=1)
    other = TwxEnv()
    try:
        twx.reset(task)
        other.reset(task)
        valid = []
        for call in task.reference_solution:
            valid += [twx.step(format_call(call)).valid, other.step(format_call(call)).valid]
        assert not all(valid) and not twx.verify().success
    finally:
        other.close()


@pytest.mark.heavy_env
def test_gold_paths_with_a_command_the_game_does_not_offer_are_redrawn(twx):
    """The engine's cooking gold agent sometimes opens a cupboard the game no longer offers to
    open (seed 20921 of the test fold, with doors and 2 places): such a seed is redrawn."""
    from distillery.envs.textworldexpress import engine
    from distillery.envs.textworldexpress.families import _until_won

    g = engine.new_game()
    try:
        engine.load(g, "cookingworld", GAMES["twx_cooking"].params_text(("rooms", "doors")))
        engine.generate(g, 20921, "test", True)
        gold = engine.gold_path(g)
        assert "open kitchen cupboard" in gold and _until_won(g, 20921, "test", gold) is None
        engine.generate(g, 20922, "test", True)
        won = _until_won(g, 20922, "test", engine.gold_path(g))
        assert won and len(won) >= 2
    finally:
        engine.release(g)


@pytest.mark.heavy_env
def test_bad_actions_are_observations_that_change_nothing(twx):
    task = _task("twx_coin", "doors")
    obs = twx.reset(task)
    assert "You are in" in obs
    h = twx.state_hash()
    for action in ['take(obj="unicorn")', "fly(to='moon')", "take(", 'command(text="take coin\\u0000")',
                   'move(direction="' + "n" * 300 + '")', None, b"look()", 'command(text="xyzzy")']:
        res = twx.step(action)
        assert not res.valid and res.error and res.observation and not res.done, (action, res)
        assert twx.state_hash() == h
    res = twx.step('command(text="look around")')
    assert res.valid and res.tool == "command"
    assert twx.step("finish()").done


@pytest.mark.heavy_env
def test_a_partly_played_game_names_what_is_left(twx):
    task = _task("twx_mapreader", "default")
    twx.reset(task)
    for call in task.reference_solution[:3]:
        assert twx.step(format_call(call)).valid
    ver = twx.verify()
    left = [to_command(c) for c in task.reference_solution[3:]]
    assert not ver.success and ver.failed[0].name == next_commands_name(left)
    assert missing_calls(ver.failed[0].name) == task.reference_solution[3:]


def test_the_entry_points_register_the_environment_and_its_eight_games(checkout_plugins):
    from distillery.envs.base import env_names, env_spec, families
    from distillery.envs.textworldexpress import ENV

    assert "textworldexpress" in env_names() and env_spec("textworldexpress") is ENV
    assert sorted(f.name for f in families("textworldexpress")) == sorted(GAMES)
    assert ENV.requires == ("textworld_express",) and ENV.phrasebook is PHRASEBOOK
    ENV.check_profile("rooms-doors-test")
    with pytest.raises(ValueError):
        ENV.check_profile("h01")


@pytest.mark.heavy_env
@pytest.mark.slow
def test_tasks_validate_and_the_oracle_wins_them_through_the_rollout_engine_and_gates(twx, checkout_plugins, tmp_path):
    from distillery.agents.base import PolicySpec
    from distillery.config import TasksConfig
    from distillery.quality import SUITES, gate
    from distillery.rollout import RolloutConfig, run_episodes
    from distillery.tasks.generate import generate_tasks

    cfg = TasksConfig(env="textworldexpress", families=["twx_coin", "twx_peckingorder"], n_train_per_family=3,
                      n_test_per_family=2, train_profiles=["default", "doors"], test_profiles=["default-test"],
                      heldout_profiles=["rooms-doors-test"], n_heldout_train_per_family=2, n_heldout_test_per_family=2,
                      max_steps=20, random_probes=1, family_detect_rate=0)
    result = generate_tasks(cfg, progress=False)
    assert result.report["kept"] == {"train": 6, "test": 4, "heldout_train": 4, "heldout_test": 4}
    assert len({(t.initial_state["seed"], t.initial_state["params"]) for t in result.tasks
                if t.family == "twx_coin"}) == 9
    traj = run_episodes(result.tasks, PolicySpec("oracle"), RolloutConfig(k=1), progress=False)
    assert traj.episodes["success"].all() and set(traj.episodes["env"]) == {"textworldexpress"}
    refs = {"episodes": traj.episodes, "steps": traj.steps}
    for suite, frame in refs.items():
        gate(frame, SUITES[suite], source=f"{suite}.parquet", refs=refs, report_dir=tmp_path / "q",
             quarantine_dir=tmp_path / "quarantine")
    random_ = run_episodes(result.tasks, PolicySpec("random", {"seed": 0}), RolloutConfig(k=1), progress=False)
    assert not random_.episodes["success"].any()
    assert (random_.episodes["failure_mode"] != "error").all()


def test_without_java_drafting_says_so_in_one_line_not_as_a_family_bug(monkeypatch, tmp_path):
    """No `java` on PATH: the engine is unavailable (what to install), and the task generator
    passes that on instead of wrapping it as the family's failure (`DraftFailed`)."""
    pytest.importorskip("textworld_express", reason="TextWorldExpress is an optional extra")
    from distillery.envs.base import EngineUnavailable
    from distillery.envs.textworldexpress import engine
    from distillery.tasks.generate import draft_task

    monkeypatch.setattr(engine, "_gateway", None)       # as in a process that has not started it
    monkeypatch.setenv("PATH", str(tmp_path))          # a PATH with no `java` on it
    engine.drafting_game.cache_clear()
    try:
        with pytest.raises(EngineUnavailable, match="TextWorldExpress needs Java 17 or later: no `java` on PATH"):
            draft_task("twx_coin", "train", "default", 0, seed=0, max_steps=12)
    finally:
        engine.drafting_game.cache_clear()              # later tests draft on the real engine
