"""ScienceWorld's engine: at most `MAX_INSTANCES` simulators per worker process.

Each `scienceworld.ScienceWorldEnv` starts its own JVM (py4j), which grows to about 1.35 GB
as it runs, so a worker process holds at most four: asking for a fifth raises
`InstanceLimitError`, naming the limit, rather than letting a batch of episodes exhaust the
machine's memory. Instances are pooled: an environment takes one when it is built and gives
it back when closed, and task drafting borrows one for the time of a draft, so one worker
starts each JVM once (about 2 s) and reuses it. The JVMs end with the process (py4j's
`die_on_exit`).

The adapter calls the simulator's server object directly: `server.load` (faster than
`reset`), `server.step` (the package's own `step` also lists every valid action, about 115
of them, each step) and free actions for the state; valid actions are fetched only when
an agent asks for them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distillery.envs.base import EngineUnavailable, jvm_failure, require_java

MAX_INSTANCES = 4
JVM_GB = 1.35
INSTALL_HINT = ("ScienceWorld is not installed: pip install 'distillery[scienceworld]' (scienceworld 1.2), "
                "and Java 17 or later")

_lock = threading.Lock()
_idle: list[Any] = []
_started = 0                 # simulators this process started (idle or in use)


class InstanceLimitError(ValueError):
    """More ScienceWorld simulators were asked for than one worker may hold."""


def in_use() -> int:
    """Simulators held by environments or drafts right now."""
    with _lock:
        return _started - len(_idle)


def acquire() -> Any:
    """A simulator for one environment (an idle one if any); InstanceLimitError past the limit."""
    global _started
    with _lock:
        if _idle:
            return _idle.pop()
        if _started >= MAX_INSTANCES:
            raise InstanceLimitError(
                f"ScienceWorld runs at most {MAX_INSTANCES} simulators per worker process (each is a JVM of about "
                f"{JVM_GB} GB) and {MAX_INSTANCES} are in use: play at most {MAX_INSTANCES} episodes at once "
                f"(distillery eval --batch-size {MAX_INSTANCES}, rollout batch_size <= {MAX_INSTANCES}) and close "
                "environments you no longer use")
        _started += 1
    try:
        try:
            from py4j.protocol import Py4JError
            from scienceworld import ScienceWorldEnv
        except ImportError as e:
            raise EngineUnavailable(INSTALL_HINT) from e
        require_java("ScienceWorld")
        try:
            return ScienceWorldEnv("", envStepLimit=1_000_000)
        except (OSError, Py4JError) as e:     # a JVM that would not start
            raise jvm_failure("ScienceWorld", e) from e
    except Exception:
        with _lock:
            _started -= 1
        raise


def release(sim: Any) -> None:
    """Give a simulator back to the pool."""
    if sim is None:
        return
    with _lock:
        if sim not in _idle:
            _idle.append(sim)


@contextmanager
def borrowed() -> Iterator[Any]:
    sim = acquire()
    try:
        yield sim
    finally:
        release(sim)


def load(sim: Any, task: str, variation: int, simplification: str = "", gold: bool = False) -> None:
    sim.server.load(task, int(variation), simplification, gold)


_gold: dict[tuple[str, int, str], list[str]] = {}


def gold_path(sim: Any, task: str, variation: int, simplification: str = "") -> list[str]:
    """The simulator's gold action sequence of a task variation (loads it with the gold path).

    The simulator's gold agent picks at random where a task allows several answers (which
    non-living thing to fetch), so the same variation can give another path on the next call:
    the first path a process gets is kept for the process, so a draft is a function of its
    coordinates (the task table stores the path, so a table never changes)."""
    key = (task, int(variation), simplification)
    if key not in _gold:
        load(sim, task, variation, simplification, gold=True)
        _gold[key] = [str(c) for c in sim.server.getGoldActionSequence()]
    return list(_gold[key])


def variations(sim: Any, task: str, fold: str) -> list[int]:
    load(sim, task, 0)
    get = {"train": sim.server.getVariationsTrain, "dev": sim.server.getVariationsDev,
           "test": sim.server.getVariationsTest}[fold]
    return [int(v) for v in get()]
