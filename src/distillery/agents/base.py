"""The policy protocol (design section 3) and how a policy is named and built.

Policies are batched: `act` takes the contexts of every active episode and returns one
action each, so a model-backed policy can advance them all in one forward pass. A policy
crosses process boundaries as a `PolicySpec` (a name and keyword arguments), never as an
object: each worker builds its own.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import UnionType
from typing import (
    Any,
    Protocol,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    runtime_checkable,
)

from distillery import registry
from distillery.config import BUILT_IN_POLICY_KINDS, ConfigError, PolicyEntry
from distillery.types import ActionOutput, Context


@runtime_checkable
class Policy(Protocol):
    name: str    # e.g. "oracle", "random", "hf"
    model: str   # what produced the actions: a model dir, an endpoint model name, or "-"

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]: ...

    # Optional, for a policy that batches across calls: `act_deferring(contexts)` returns
    # None for an action it has not finished (at least one per call must be finished); the
    # rollout engine then calls again with the same context (agents/hf.py).


@dataclass(frozen=True)
class PolicySpec:
    """A picklable recipe for a policy: `make_policy(spec)` builds it where it runs."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""   # the name trajectories record; defaults to `kind`

    @property
    def name(self) -> str:
        return self.label or self.kind


def check_kind(kind: str) -> None:
    """Raise ValueError unless `kind` is built in or an installed plugin registers it."""
    if kind in BUILT_IN_POLICY_KINDS:
        return
    try:
        registry.load(registry.POLICIES, kind)
    except registry.RegistryError as e:
        raise ValueError(f"unknown policy kind {kind!r}; built in: {', '.join(BUILT_IN_POLICY_KINDS)}; {e}") from e


def policy_spec(name: str, entry: PolicyEntry, overrides: dict[str, Any] | None = None) -> PolicySpec:
    """The spec of `policies.<name>` in params.yaml (its kwargs under `overrides`), refused as a
    ConfigError naming the key when no built-in policy or installed plugin has its kind."""
    try:
        check_kind(entry.kind)
    except ValueError as e:
        raise ConfigError(f"policies.{name}.kind: {e}") from e
    return PolicySpec(kind=entry.kind, kwargs={**entry.kwargs, **(overrides or {})}, label=name)


def make_policy(spec: PolicySpec) -> Policy:
    """Build a policy from its spec; a labelled spec's label is what trajectories record."""
    check_policy_kwargs(spec)
    policy = _build(spec)
    if spec.label:
        policy.name = spec.label  # two hf models must not both be called "hf" in the benchmark
    return policy


def policy_factory(kind: str) -> Callable[..., Any]:
    """What builds a policy of `kind`: a built-in class, or what a plugin registers under the
    `distillery.policies` entry-point group. Imports are lazy: a random-policy worker loads no torch."""
    if kind == "oracle":
        from distillery.agents.oracle import OraclePolicy

        return OraclePolicy
    if kind == "random":
        from distillery.agents.random import RandomPolicy

        return RandomPolicy
    if kind == "hf":
        from distillery.agents.hf import HFPolicy  # type: ignore[import-not-found]

        return HFPolicy
    if kind == "openai":
        from distillery.agents.openai import OpenAIPolicy  # type: ignore[import-not-found]

        return OpenAIPolicy
    check_kind(kind)
    factory = registry.load(registry.POLICIES, kind)
    if not callable(factory):
        raise TypeError(f"policy kind {kind!r}: its entry point holds a {type(factory).__name__} object, "
                        "not a class to build with the entry's kwargs")
    return cast(Callable[..., Any], factory)


def check_policy_kwargs(spec: PolicySpec) -> None:
    """Raise ValueError naming an argument the policy of `spec.kind` does not take, one it needs
    and lacks, or a value whose JSON type does not fit the argument's annotation, before the
    policy is built (a wrong value would otherwise surface mid-run, as a traceback)."""
    factory = policy_factory(spec.kind)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):     # a builtin or C callable: nothing to read
        return
    params = {n: p for n, p in signature.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(spec.kwargs) - set(params))
    if unknown and not takes_any:
        accepted = f"its arguments: {', '.join(params)}" if params else "it takes none"
        raise ValueError(f"the {spec.kind} policy takes no argument {' or '.join(map(repr, unknown))} ({accepted})")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in spec.kwargs]
    if missing:
        raise ValueError(f"the {spec.kind} policy needs {' and '.join(map(repr, missing))}")
    try:
        hints = get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve leaves the values unchecked
        return
    for name, value in spec.kwargs.items():
        hint = hints.get(name)
        if hint is not None and not _fits(value, hint):
            raise ValueError(f"the {spec.kind} policy's {name} must be {_describe(hint)}, got {value!r}")


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON-decoded `value` fits the annotation `hint` (containers by their type only)."""
    if hint is Any:
        return True
    if get_origin(hint) in (Union, UnionType):
        return any(_fits(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value))
    base = get_origin(hint) or hint
    return isinstance(value, base) if isinstance(base, type) else True


_KINDS_OF_VALUE = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
                   dict: "an object", list: "a list", type(None): "null"}


def _describe(hint: Any) -> str:
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_describe(h) for h in get_args(hint))
    base = get_origin(hint) or hint
    return _KINDS_OF_VALUE.get(base, getattr(base, "__name__", str(base)))


def _build(spec: PolicySpec) -> Policy:
    factory = policy_factory(spec.kind)
    policy = factory(**spec.kwargs)
    if spec.kind in BUILT_IN_POLICY_KINDS:
        return cast(Policy, policy)
    # A plugin's factory is only known to be callable: check what it made.
    missing = [what for what, ok in (("act method", callable(getattr(policy, "act", None))),
                                     ("model attribute", hasattr(policy, "model"))) if not ok]
    if missing:
        raise TypeError(f"policy kind {spec.kind!r}: {type(policy).__name__} has no {' and no '.join(missing)}; "
                        "a policy has `name`, `model` and `act(contexts) -> list[ActionOutput]`")
    if not hasattr(policy, "name"):
        policy.name = spec.kind
    return cast(Policy, policy)
