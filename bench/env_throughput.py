"""Environment steps per second under an oracle policy, on one core: STAGE, TextWorldExpress,
TextWorld and ScienceWorld in one run.

Every side plays its tasks' reference solutions over and over, resets included (a reset
is part of running an episode), for the same wall-clock budget in the same run:

- STAGE: the default task set's test split; an episode = reset (build the directory and
  the SQLite database) + every reference step + verify (read the state back and score it).
- TextWorldExpress (if installed: `pip install 'distillery[textworld]'`): through its adapter
  (`distillery.envs.textworldexpress`), 5 tasks of each of its 8 games in the default setting;
  an episode = reset (generate the game) + every gold step as a tool call + verify.
- TextWorld (if installed: `pip install 'distillery[textworld]'`): through its adapter
  (`distillery.envs.textworld`), 2 generated games of each of its 4 challenges; an episode =
  reset + every walkthrough step as a tool call + verify (TextWorld's state tracker lists the
  admitted commands and its plan every step). Also its engine alone, the peer: a generated
  5-room game, reset + walkthrough through `textworld.start(...).step`, no adapter.
- ScienceWorld (if installed: `pip install 'distillery[scienceworld]'`; skip with
  --no-scienceworld): through its adapter, 2 variations of each of its 4 tasks on one
  simulator; an episode = reset (load the variation) + every gold step + verify (subgoals).

    python bench/env_throughput.py [--seconds 10] [--no-scienceworld]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

from distillery.config import TasksConfig
from distillery.envs.stage import StageEnv
from distillery.envs.throughput import replay_throughput
from distillery.tasks.generate import generate_tasks
from machine import cpu_line, positive_float


def replay_steps_per_s(env, tasks, seconds: float) -> tuple[float, int, int]:
    """(steps/s, steps, episodes) of `env` replaying each task's reference solution (each
    must win) for about `seconds` (`envs.throughput`, the cross-environment table's measure);
    the environment is closed at the end."""
    try:
        r = replay_throughput(env, tasks, seconds)
    finally:
        env.close()
    return r.steps_per_s, r.steps, r.episodes


def stage_steps_per_s(seconds: float) -> tuple[float, int, int]:
    tasks = generate_tasks(TasksConfig(n_train_per_family=0), progress=False).tasks
    return replay_steps_per_s(StageEnv(), tasks, seconds)


def textworldexpress_steps_per_s(seconds: float) -> tuple[float, int, int] | None:
    try:
        import textworld_express  # noqa: F401
    except ImportError:
        return None
    from distillery.envs.textworldexpress import TwxEnv
    from distillery.envs.textworldexpress.families import FAMILIES

    return replay_steps_per_s(TwxEnv(), _drafted(FAMILIES, "textworldexpress", "default", 5), seconds)


def _drafted(families: dict, env: str, profile: str, per_family: int) -> list:
    from distillery.types import Task

    tasks = []
    for name, fam in families.items():
        for i in range(per_family):
            d = fam.draft(random.Random(f"{name}:{i}"), profile)
            tasks.append(Task(task_id=f"{name}-{i}", family=name, split="test", profile=profile, hint="",
                              instruction=d.instruction, initial_state=d.state, reference_solution=d.solution,
                              checks=d.checks, env=env))
    return tasks


def textworld_steps_per_s(seconds: float) -> tuple[float, int, int] | None:
    """Through the adapter: 2 generated games of each of its 4 challenges (default setting),
    generated into a temporary games folder before the clock starts."""
    try:
        import textworld  # noqa: F401
    except ImportError:
        return None
    from distillery.envs.textworld import TextWorldEnv
    from distillery.envs.textworld.families import FAMILIES

    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("DISTILLERY_TEXTWORLD_GAMES", d)
        tasks = _drafted(FAMILIES, "textworld", "default", 2)
        return replay_steps_per_s(TextWorldEnv(), tasks, seconds)


def textworld_engine_steps_per_s(seconds: float) -> tuple[float, int, int] | None:
    """The peer, TextWorld's own engine with no adapter: a generated 5-room game (`make_game`,
    seed 1234), an episode = `env.reset()` + its walkthrough through `env.step`."""
    try:
        import textworld
        from textworld.generator import compile_game, make_game
    except ImportError:
        return None
    opts = textworld.GameOptions()
    opts.seeds = 1234
    opts.nb_rooms, opts.nb_objects, opts.quest_length = 5, 10, 5
    with tempfile.TemporaryDirectory() as d:
        opts.path = os.path.join(d, "game.z8")
        game = make_game(opts)
        env = textworld.start(compile_game(game, opts))
        walk = game.metadata["walkthrough"]
        steps = episodes = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            env.reset()
            for c in walk:
                env.step(c)
            steps += len(walk)
            episodes += 1
        env.close()
    return steps / (time.perf_counter() - t0), steps, episodes


def scienceworld_steps_per_s(seconds: float) -> tuple[float, int, int] | None:
    """Through the adapter: 2 variations of each of its 4 tasks, one simulator (a JVM)."""
    try:
        import scienceworld  # noqa: F401
    except ImportError:
        return None
    from distillery.envs.scienceworld import ScienceWorldEnv
    from distillery.envs.scienceworld.families import FAMILIES

    tasks = _drafted(FAMILIES, "scienceworld", "default", 2)
    return replay_steps_per_s(ScienceWorldEnv(), tasks, seconds)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=positive_float, default=10.0, help="wall-clock budget per side")
    ap.add_argument("--scienceworld", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure ScienceWorld (starts a JVM of ~1.35 GB)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target is stated
    print(f"machine: {cpu_line()}")
    stage, s_steps, s_eps = stage_steps_per_s(args.seconds)
    print(f"STAGE             {stage:8.0f} steps/s  ({s_steps} steps, {s_eps} episodes, reset+verify included, 1 core)")
    twx = textworldexpress_steps_per_s(args.seconds)
    if twx is None:
        print("TextWorldExpress  not installed (pip install 'distillery[textworld]')")
    else:
        print(f"TextWorldExpress  {twx[0]:8.0f} steps/s  ({twx[1]} steps, {twx[2]} episodes, reset+verify included, "
              f"1 core for Python; its JVM runs beside it)")
        print(f"ratio             TextWorldExpress / STAGE = {twx[0] / stage:.2f}x")
    tw = textworld_steps_per_s(args.seconds)
    if tw is None:
        print("TextWorld         not installed (pip install 'distillery[textworld]'): not measured")
    else:
        print(f"TextWorld         {tw[0]:8.0f} steps/s  ({tw[1]} steps, {tw[2]} episodes, reset+verify included, "
              "1 core, through the adapter)")
        print(f"ratio             STAGE / TextWorld = {stage / tw[0]:.2f}x")
        if twx is not None:
            print(f"ratio             TextWorldExpress / TextWorld = {twx[0] / tw[0]:.2f}x")
        raw = textworld_engine_steps_per_s(args.seconds)
        if raw is not None:
            print(f"TextWorld engine  {raw[0]:8.0f} steps/s  ({raw[1]} steps, {raw[2]} episodes, reset included, "
                  "1 core, no adapter: the peer)")
            print(f"ratio             STAGE / TextWorld engine = {stage / raw[0]:.2f}x")
    if args.scienceworld:
        sw = scienceworld_steps_per_s(args.seconds)
        if sw is None:
            print("ScienceWorld      not installed (pip install 'distillery[scienceworld]'): not measured")
        else:
            print(f"ScienceWorld      {sw[0]:8.0f} steps/s  ({sw[1]} steps, {sw[2]} episodes, reset+verify included, "
                  "1 core for Python; its JVM runs beside it; evaluation only)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
