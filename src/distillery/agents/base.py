"""The policy protocol (design section 3) and how a policy is named and built.

Policies are batched: `act` takes the contexts of every active episode and returns one
action each, so a model-backed policy can advance them all in one forward pass. A policy
crosses process boundaries as a `PolicySpec` (a name and keyword arguments), never as an
object: each worker builds its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
    policy = _build(spec)
    if spec.label:
        policy.name = spec.label  # two hf models must not both be called "hf" in the benchmark
    return policy


def _build(spec: PolicySpec) -> Policy:
    # Imports are lazy: a random-policy worker loads no torch.
    if spec.kind == "oracle":
        from distillery.agents.oracle import OraclePolicy

        return OraclePolicy(**spec.kwargs)
    if spec.kind == "random":
        from distillery.agents.random import RandomPolicy

        return RandomPolicy(**spec.kwargs)
    if spec.kind == "hf":
        from distillery.agents.hf import HFPolicy  # type: ignore[import-not-found]

        return HFPolicy(**spec.kwargs)
    if spec.kind == "openai":
        from distillery.agents.openai import OpenAIPolicy  # type: ignore[import-not-found]

        return OpenAIPolicy(**spec.kwargs)
    # Any other kind is a plugin: a package registers its policy class under the
    # `distillery.policies` entry-point group, and it is built with the spec's kwargs.
    check_kind(spec.kind)
    factory = registry.load(registry.POLICIES, spec.kind)
    if not callable(factory):
        raise TypeError(f"policy kind {spec.kind!r}: its entry point holds a {type(factory).__name__} object, "
                        "not a class to build with the entry's kwargs")
    policy = factory(**spec.kwargs)
    missing = [what for what, ok in (("act method", callable(getattr(policy, "act", None))),
                                     ("model attribute", hasattr(policy, "model"))) if not ok]
    if missing:
        raise TypeError(f"policy kind {spec.kind!r}: {type(policy).__name__} has no {' and no '.join(missing)}; "
                        "a policy has `name`, `model` and `act(contexts) -> list[ActionOutput]`")
    if not hasattr(policy, "name"):
        policy.name = spec.kind
    return policy
