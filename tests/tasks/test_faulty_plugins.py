"""A plugin that breaks its contract while its tasks are generated: an environment that
raises during validation loses the draft (the reason, naming the environment, the call and
the exception, is in the report), and a draft function that raises or returns the wrong
thing stops the run naming its family."""

from __future__ import annotations

import traceback

import pytest
from tests.envs import faulty_plugin as F

from distillery.config import ExecutorConfig, TasksConfig
from distillery.tasks.generate import DraftFailed, ValidationFailed, draft_task, generate_tasks

INLINE = ExecutorConfig(kind="inline", workers=1)     # the entry points are this process's


def _cfg(env: str, **kw) -> TasksConfig:
    return TasksConfig(**{"env": env, "n_train_per_family": 2, "n_test_per_family": 0, "random_probes": 0,
                          "max_attempts_factor": 2, "executor": INLINE, **kw})


@pytest.mark.parametrize("call", ["reset", "step", "verify", "state_hash"])
def test_an_environment_that_raises_rejects_every_draft_and_the_failure_says_why(tmp_path, call):
    env = f"raises_in_{call}"
    with F.installed(tmp_path, envs=F.ENVS, families=F.FAMILIES), pytest.raises(ValidationFailed) as err:
        generate_tasks(_cfg(env), progress=False)
    reason = f"environment {env!r} raised in {call}: KeyError: 'boom in {call}'"
    result = err.value.result
    assert len(result.rejected) == 4 and all(reason in r.reasons[-1] for r in result.rejected)
    if call == "step":          # the action it raised on, to reproduce it
        assert result.rejected[0].reasons[-1].startswith(reason + " (on the action 'list_dir(")
    family = f"{env}_invoice"
    assert result.report["families"][family]["rejection_reasons"] == {f"environment {env!r} raised in {call}": 4}
    assert str(err.value).endswith(
        f"  - {family}: train: only 0 of 2 drafts validated after 4 attempts: environment {env!r} raised on "
        f"every draft it rejected (first, {family}-train-default-0000: {result.rejected[0].reasons[-1]}); fix "
        "the environment: reset, step, verify and state_hash must answer, never raise (a bad action is an "
        "observation)")


def test_an_environment_that_raises_on_some_drafts_loses_only_those(tmp_path):
    with F.installed(tmp_path, envs=F.ENVS, families=F.FAMILIES):
        result = generate_tasks(_cfg("sometimes_raises", max_attempts_factor=8), progress=False)
    assert len(result.tasks) == 2 and all(t.seed % 2 == 0 for t in result.tasks)
    assert result.rejected and all(
        r.reasons == ["environment 'sometimes_raises' raised in reset: ValueError: odd seed"] for r in result.rejected)
    assert result.report["rejection_reasons"] == {
        "environment 'sometimes_raises' raised in reset": len(result.rejected)}


def test_a_draft_that_is_not_a_draft_names_its_family(tmp_path):
    with F.installed(tmp_path, families=F.FAMILIES), pytest.raises(TypeError) as err:
        draft_task("dict_draft", "train", "default", 0, 0, 15)
    assert str(err.value).startswith("task family 'dict_draft' (environment 'stage'): its draft function "
                                     "returned a dict, not a Draft")


def test_a_draft_that_raises_keeps_its_traceback_and_names_its_family(tmp_path):
    with F.installed(tmp_path, families=F.FAMILIES), pytest.raises(DraftFailed) as err:
        generate_tasks(_cfg("stage", families=["zero_draft"]), progress=False)
    assert str(err.value) == ("task family 'zero_draft' (environment 'stage') raised ZeroDivisionError while "
                              "drafting zero_draft-train-default-0000: division by zero")
    cause = err.value.__cause__
    assert isinstance(cause, ZeroDivisionError) and cause.__traceback__ is not None
    assert traceback.extract_tb(cause.__traceback__)[-1].name == "divides_by_zero"
