"""A policy backend from a plugin: named in params.yaml like a built-in one, built with the
entry's kwargs, and refused with a message naming the kind when it breaks the policy
contract (an entry point at an object that is not a class, a class without `act` or `model`,
an `act` that raises or returns something other than one ActionOutput per context)."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from distillery import registry
from distillery.agents.base import PolicySpec, make_policy, policy_spec
from distillery.config import ConfigError, TasksConfig, load_policy
from distillery.rollout import PolicyError, RolloutConfig, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.types import ActionOutput


class Teller:
    """A well-formed plugin policy: finishes at once."""

    def __init__(self, greeting: str = "hi") -> None:
        self.name, self.model, self.greeting = "teller", "-", greeting

    def act(self, contexts):
        return [ActionOutput(text="finish()") for _ in contexts]


class NoAct:
    name, model = "noact", "-"


class NoModel:
    name = "nomodel"

    def act(self, contexts):
        return [ActionOutput(text="finish()") for _ in contexts]


class Raises(Teller):
    def act(self, contexts):
        return int("not a number")


class Strings(Teller):
    def act(self, contexts):
        return ["finish()" for _ in contexts]


class TooFew(Teller):
    def act(self, contexts):
        return [ActionOutput(text="finish()")]


AN_INSTANCE = Teller()
KINDS = {"teller": "Teller", "noact": "NoAct", "nomodel": "NoModel", "instance": "AN_INSTANCE",
         "raises": "Raises", "strings": "Strings", "toofew": "TooFew"}


@pytest.fixture(autouse=True)
def plugin_policies(monkeypatch):
    """This module's classes registered under `distillery.policies`, as an installed package's
    entry points would be."""
    real = registry._entries

    def entries(group: str):
        found = dict(real(group))
        if group == registry.POLICIES:
            found |= {kind: EntryPoint(kind, f"{__name__}:{attr}", group) for kind, attr in KINDS.items()}
        return found

    registry.load.cache_clear()
    monkeypatch.setattr(registry, "_entries", entries)
    yield
    registry.load.cache_clear()


def test_a_plugin_kind_is_a_policy_entry_built_with_its_kwargs():
    params = {"policies": {"mine": {"kind": "teller", "kwargs": {"greeting": "hello"}}}}
    spec = policy_spec("mine", load_policy("mine", params), {"greeting": "hey"})
    assert spec == PolicySpec("teller", {"greeting": "hey"}, "mine")
    policy = make_policy(spec)
    assert (type(policy), policy.greeting, policy.name) == (Teller, "hey", "mine")


def test_an_unknown_or_empty_kind_is_a_config_error_naming_the_key():
    params = {"policies": {"mine": {"kind": "nosuch"}, "blank": {"kind": " "}}}
    with pytest.raises(ConfigError, match=r"^policies.mine.kind: unknown policy kind 'nosuch'; built in: oracle, "
                                          r"random, hf, openai; .*registered: .*teller"):
        policy_spec("mine", load_policy("mine", params))
    with pytest.raises(ConfigError, match=r"policies.blank.*must name a policy kind"):
        load_policy("blank", params)


@pytest.mark.parametrize("kind, message", [
    ("instance", r"policy kind 'instance': its entry point holds a Teller object, not a class"),
    ("noact", r"policy kind 'noact': NoAct has no act method; a policy has `name`, `model` and `act"),
    ("nomodel", r"policy kind 'nomodel': NoModel has no model attribute"),
])
def test_a_plugin_that_is_not_a_policy_is_refused_when_built(kind, message):
    with pytest.raises(TypeError, match=message):
        make_policy(PolicySpec(kind))


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(n_train_per_family=1, n_test_per_family=0, random_probes=0,
                                      families=["file_invoice"]), progress=False).tasks


@pytest.mark.parametrize("kind, message", [
    ("raises", r"policy raises: act\(\) raised ValueError: invalid literal"),
    ("strings", r"policy strings: act\(\) returned a str among its actions; each must be a "
                r"distillery.types.ActionOutput"),
    ("toofew", r"policy toofew: act\(\) returned 1 actions for 2 contexts; it returns one ActionOutput per "
               r"context"),
])
def test_an_act_that_breaks_the_contract_stops_the_rollout_naming_the_policy(tasks, kind, message):
    cfg = RolloutConfig(k=2)
    with pytest.raises(PolicyError, match=message):
        run_batch(make_policy(PolicySpec(kind, label=kind)), make_jobs(tasks, kind, cfg), cfg)


def test_a_well_formed_plugin_plays(tasks):
    cfg = RolloutConfig(k=2)
    traj = run_batch(make_policy(PolicySpec("teller")), make_jobs(tasks, "teller", cfg), cfg)
    assert traj.episodes.height == 2 * len(tasks) and (traj.episodes["error"] == "").all()
