"""A plugin that breaks its contracts, registered in-process for a test (`installed`).

Its environments are STAGE's with one call broken (it raises, or is missing), its families
STAGE's `file_invoice` drafted in them, or draft functions that raise or return the wrong
thing; its entry points are written as an installed distribution's metadata into a folder put
on `sys.path`, so `distillery.registry` finds them as it finds any installed plugin."""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distillery import registry
from distillery.envs.base import Family
from distillery.envs.stage import ENV as STAGE
from distillery.envs.stage.env import StageEnv
from distillery.envs.stage.families import FAMILIES as STAGE_FAMILIES
from distillery.types import Task

DIST = "distillery-faulty-plugin"      # the distribution the entry points belong to
MODULE = __name__


def _raises_in(call: str) -> type[StageEnv]:
    """STAGE whose `call` raises (`KeyError: 'boom in <call>'`) instead of answering."""
    def broken(self: StageEnv, *args: Any) -> Any:
        raise KeyError(f"boom in {call}")
    return type(f"Raises{call.title().replace('_', '')}", (StageEnv,), {call: broken})


def _env(name: str, factory: Any) -> Any:
    return dataclasses.replace(STAGE, name=name, factory=factory)


def _invoices(env: str) -> Family:
    return dataclasses.replace(STAGE_FAMILIES["file_invoice"], name=f"{env}_invoice", env=env)


RAISES_IN_RESET = _env("raises_in_reset", _raises_in("reset"))
RAISES_IN_STEP = _env("raises_in_step", _raises_in("step"))
RAISES_IN_VERIFY = _env("raises_in_verify", _raises_in("verify"))
RAISES_IN_STATE_HASH = _env("raises_in_state_hash", _raises_in("state_hash"))


class ResetRaisesOnOddSeeds(StageEnv):
    """Builds only tasks whose seed is even: its other drafts are lost, not the run."""

    def reset(self, task: Task) -> str:
        if task.seed % 2:
            raise ValueError("odd seed")
        return super().reset(task)


SOMETIMES_RAISES = _env("sometimes_raises", ResetRaisesOnOddSeeds)


class NoneStateHash(StageEnv):
    state_hash = None           # "switched off", as a plugin author might


class MissingMethods:
    """Forgot `state_hash` and `verify` altogether."""

    name = "missing_methods"

    def reset(self, task: Task) -> str:
        return ""

    def step(self, action_text: str) -> Any:
        return None

    def close(self) -> None:
        pass


NONE_STATE_HASH = _env("none_state_hash", NoneStateHash)
MISSING_METHODS = _env("missing_methods", MissingMethods)
MISNAMED = _env("other", StageEnv)            # registered as `misnamed`

FAULTY_FAMILIES = [_invoices(e) for e in ("raises_in_reset", "raises_in_step", "raises_in_verify",
                                          "raises_in_state_hash", "sometimes_raises")]


def returns_dict(rng: random.Random, profile: str) -> dict[str, Any]:
    return {"instruction": "a dict, not a Draft"}


def divides_by_zero(rng: random.Random, profile: str) -> Any:
    return 1 / 0


BAD_DRAFTS = [Family("dict_draft", "stage", "returns a dict", returns_dict),
              Family("zero_draft", "stage", "raises", divides_by_zero)]

ENVS = {name: f"{MODULE}:{name.upper()}" for name in (
    "raises_in_reset", "raises_in_step", "raises_in_verify", "raises_in_state_hash", "sometimes_raises",
    "none_state_hash", "missing_methods")}
FAMILIES = {"faulty": f"{MODULE}:FAULTY_FAMILIES", "bad_drafts": f"{MODULE}:BAD_DRAFTS"}


@contextmanager
def installed(site: Path, envs: dict[str, str] | None = None,
              families: dict[str, str] | None = None) -> Iterator[None]:
    """`envs` and `families` (entry-point name -> target) registered while the block runs, as
    entry points of the distribution `DIST`; the registry forgets them afterwards, so no
    other test meets them."""
    info = site / f"{DIST.replace('-', '_')}-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.0\n")
    lines = []
    for group, entries in ((registry.ENVS, envs), (registry.FAMILIES, families)):
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in (entries or {}).items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    sys.path.insert(0, str(site))
    registry.clear_cache()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        registry.clear_cache()
