"""The TextWorldExpress engine: one JVM per process, one game object per environment.

`textworld_express` (an optional extra: `pip install 'distillery[textworld]'`) starts a JVM
through py4j for every `TextWorldExpressEnv` it builds (about 0.4 s and a JVM each). A rollout
shard runs up to its batch size of environments at once, so here the process starts one
gateway, lazily, and every environment gets its own game object (`PythonInterface`) on it:
game objects share nothing, and creating one costs a remote call. The JVM ends with the
process (py4j's `die_on_exit`).

Game objects on one JVM are not fully independent: the sorting game keeps the game generated
last in static state, so a sorting game stepped after another game object generated a game
goes wrong (its first `put` is accepted, then nothing is). `generate` therefore records which
game object generated last (`generated_last`), and an environment whose game has
`Game.shared_state` regenerates and replays its own commands before stepping when it was not
the last (env.py): the same game, the same state, at the cost of a replay.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

from distillery.envs.base import EngineUnavailable, jvm_failure, require_java

INSTALL_HINT = ("TextWorldExpress is not installed: pip install 'distillery[textworld]' "
                "(or textworld-express), and Java 17 or later")

_lock = threading.Lock()
_gateway: Any = None
_owner: Any = None          # the package's env object that owns the gateway (kept alive)
_last: Any = None           # the game object that generated a game last on this JVM


def _start() -> Any:
    global _gateway, _owner
    with _lock:
        if _gateway is None:
            try:
                from py4j.protocol import Py4JError
                from textworld_express import TextWorldExpressEnv
            except ImportError as e:
                raise EngineUnavailable(INSTALL_HINT) from e
            require_java("TextWorldExpress")
            try:
                _owner = TextWorldExpressEnv(envStepLimit=10_000)
            except (OSError, Py4JError) as e:     # a JVM that would not start
                raise jvm_failure("TextWorldExpress", e) from e
            _gateway = _owner._gateway
    return _gateway


def new_game() -> Any:
    """A fresh game object on this process's JVM."""
    return _start().jvm.textworldexpress.runtime.PythonInterface()


def parse(response: str) -> dict[str, Any]:
    return json.loads(response)


@functools.lru_cache(maxsize=1)
def drafting_game() -> Any:
    """The game object task drafting uses (one per process)."""
    return new_game()


def load(game: Any, engine_name: str, params: str) -> None:
    msg = game.load(engine_name, params)
    if msg:
        raise ValueError(f"TextWorldExpress refused game {engine_name!r} with parameters {params!r}: {msg}")


def generate(game: Any, seed: int, fold: str, gold: bool) -> dict[str, Any]:
    global _last
    out = parse(game.generateNewGameJSON(seed, fold, gold))
    _last = game
    return out


def generated_last(game: Any) -> bool:
    """Whether `game` generated the last game on this process's JVM (module docstring)."""
    return _last is game


def gold_path(game: Any) -> list[str]:
    return [str(c) for c in game.getGoldActionSequence()]


def task_description(game: Any) -> str:
    return str(game.getTaskDescription())


def step(game: Any, command: str) -> dict[str, Any]:
    return parse(game.stepJSON(command))


def release(game: Any) -> None:
    """Let the JVM collect a game object this process no longer uses."""
    global _last
    if game is None or _gateway is None:
        return
    if _last is game:
        _last = None
    try:
        _gateway.detach(game)
    except Exception:  # noqa: BLE001 - the gateway is already gone: nothing to release
        pass


def seeds(fold: str) -> range:
    """TextWorldExpress's seeds of a fold (1,000 each; fixed by the engine)."""
    return {"train": range(0, 1000), "dev": range(10_000, 11_000), "test": range(20_000, 21_000)}[fold]
