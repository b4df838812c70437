"""Plugins by name: environments and task families, found through Python entry points.

Distillery's own environments and families are registered the same way as anyone else's,
in `pyproject.toml`:

    [project.entry-points."distillery.envs"]
    stage = "distillery.envs.stage:ENV"

    [project.entry-points."distillery.families"]
    stage = "distillery.envs.stage.families:FAMILIES"

A package that declares entries in these groups is found once it is installed: nothing in
Distillery is edited, and process-pool and Dask workers resolve a name the same way as the
parent (they read the same installed metadata), so a plugin is never known in one process
and unknown in another.

This module knows nothing of what it loads (it sits below every other layer); `envs.base`
checks the types. A family entry may point at one object or at a collection of them (a
sequence, or a mapping whose values are the objects), so one entry can register many.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

ENVS = "distillery.envs"
FAMILIES = "distillery.families"
POLICIES = "distillery.policies"    # policy backends beyond oracle, random, hf and openai


class RegistryError(LookupError):
    """A name that no installed plugin registers, or an entry point that fails to load."""


@functools.cache
def _entries(group: str) -> dict[str, EntryPoint]:
    eps = sorted(entry_points(group=group), key=lambda ep: ep.name)
    out: dict[str, EntryPoint] = {}
    for ep in eps:
        if ep.name in out and out[ep.name].value != ep.value:
            raise RegistryError(f"{group}: {ep.name!r} is registered twice ({out[ep.name].value} and "
                                f"{ep.value}); uninstall one of the two packages")
        out[ep.name] = ep
    return out


def entry_names(group: str) -> list[str]:
    """The names registered in `group`, sorted."""
    return list(_entries(group))


@functools.cache
def load(group: str, name: str) -> Any:
    """The object entry point `name` of `group` points at (imported on first use)."""
    eps = _entries(group)
    if name not in eps:
        known = ", ".join(eps) or "none"
        raise RegistryError(f"no {group} entry point named {name!r} (registered: {known}); a plugin "
                            "declares it under [project.entry-points] and must be installed (pip install -e ...)")
    try:
        return eps[name].load()
    except Exception as e:  # noqa: BLE001 - a broken plugin is reported with its name and target
        raise RegistryError(f"{group} entry point {name!r} ({origin(group, name)}) failed to load: "
                            f"{type(e).__name__}: {e}") from e


def origin(group: str, name: str) -> str:
    """Where entry point `name` of `group` points, for messages about it: its target and the
    distribution that declares it (the package to fix or uninstall)."""
    ep = _entries(group)[name]
    dist = getattr(ep.dist, "name", None)       # None for an entry point built by hand
    return f"{ep.value} in package {dist}" if dist else ep.value


def members(obj: Any) -> list[Any]:
    """The objects one entry registers: itself, or the values of a collection, in order."""
    if isinstance(obj, Mapping):
        return list(obj.values())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return [obj]


def clear_cache() -> None:
    """Forget what was read (after installing a plugin into a running process)."""
    _entries.cache_clear()
    load.cache_clear()
