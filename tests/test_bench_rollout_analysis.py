"""bench/rollout_throughput.py's analysis: the decode pass cost fit and the count of prompt
tokens that K/V reuse cannot save once the history window drops a turn."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest
from tests.conftest import REPO

from distillery.agents.prompts import PromptConfig, action_ids
from distillery.config import TasksConfig
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.tasks.generate import generate_tasks
from distillery.train.examples import corpus_texts

sys.path.insert(0, str(REPO / "bench"))   # the benchmark imports its sibling machine.py
_spec = importlib.util.spec_from_file_location("bench_rollout_throughput", REPO / "bench" / "rollout_throughput.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench   # its dataclasses look their module up there
_spec.loader.exec_module(bench)


def test_pass_cost_recovers_a_fixed_and_a_per_row_cost():
    passes = [(rows, 0.0008 + 0.00005 * rows) for rows in (1, 1, 3, 8, 20, 64, 120)]
    fixed, per_row = bench.pass_cost(passes)
    assert fixed == pytest.approx(0.0008)
    assert per_row == pytest.approx(0.00005)
    assert bench.pass_cost([(4, 0.002)]) == (0.002, 0.0)
    assert bench.pass_cost([]) == (0.0, 0.0)


@pytest.fixture(scope="module")
def episode():
    tasks = generate_tasks(TasksConfig(families=["save_note"], n_train_per_family=1, n_test_per_family=0,
                                       random_probes=0), progress=False).tasks
    tok = train_tokenizer(corpus_texts(tasks), TokenizerConfig(vocab_size=400))
    task = tasks[0]
    observations = [f"listing {i}: " + "notes/a.txt notes/b.txt " * 3 for i in range(5)]
    actions = [f'read_file(path="notes/{i}.txt")' for i in range(5)]
    side = bench.Side(actions={task.task_id: actions}, observations={task.task_id: observations})
    return task, tok, side


def test_a_window_that_keeps_every_turn_is_never_cut(episode):
    task, tok, side = episode
    policy = SimpleNamespace(tok=tok, prompt=PromptConfig(max_history_turns=8))
    rp = bench.reprefill(policy, [task], side)
    assert (rp.later, rp.cut, rp.cut_prefilled) == (4, 0, 0)
    # each later step prefills only what follows the previous prompt and its action: over the
    # episode, the last prompt less the actions, whose K/V the engine kept from generating them
    last = bench.render_prompt_ids(
        bench.Context(task.task_id, task, 4, side.observations[task.task_id][4],
                      history=[bench.Turn(o, a) for o, a in zip(side.observations[task.task_id][:4],
                                                                 side.actions[task.task_id][:4], strict=True)]),
        tok, bench.tool_specs(task.env), policy.prompt)
    generated = sum(len(action_ids(tok, a)) - 1 for a in side.actions[task.task_id][:4])
    assert rp.prefilled == len(last) - generated


def test_a_one_turn_window_cuts_every_prompt_from_the_third_step(episode):
    task, tok, side = episode
    policy = SimpleNamespace(tok=tok, prompt=PromptConfig(max_history_turns=1))
    rp = bench.reprefill(policy, [task], side)
    # step 1 still extends step 0; steps 2-4 drop their oldest turn
    assert (rp.later, rp.cut) == (4, 3)
    assert 0 < rp.cut_prefilled < rp.prefilled


class _Env:
    """Stands in for an environment class whose step calls another protocol method."""

    def reset(self, task):
        return "obs"

    def step(self, action):
        return self.state_hash()

    def state_hash(self):
        return "h"


class _SubEnv(_Env):
    def verify(self):
        return "v"


def test_env_timer_counts_each_outer_call_once_and_puts_the_methods_back():
    own = dict(_SubEnv.__dict__)
    timer = bench.EnvTimer(_SubEnv)
    env = _SubEnv()
    assert (env.reset(None), env.step("a"), env.verify()) == ("obs", "h", "v")
    assert timer.calls == 3                       # the step's own state_hash is inside the step
    assert timer.seconds > 0.0
    timer.reset()
    assert (timer.calls, timer.seconds) == (0, 0.0)
    _Env().step("a")                              # the base class is not wrapped
    assert timer.calls == 0
    timer.remove()
    assert dict(_SubEnv.__dict__) == own          # inherited methods are the base's again


def test_env_timer_over_the_real_stage_environment():
    from distillery.envs.actions import format_call
    from distillery.envs.base import make_env

    tasks = generate_tasks(TasksConfig(families=["save_note"], n_train_per_family=1, n_test_per_family=0,
                                       random_probes=0), progress=False).tasks
    env = make_env("stage")
    timer = bench.EnvTimer(type(env))
    try:
        env.reset(tasks[0])
        for action in tasks[0].reference_solution:
            env.step(format_call(action))
        assert env.verify().success
    finally:
        env.close()
        timer.remove()
    assert timer.calls == 1 + len(tasks[0].reference_solution) + 2   # reset, each step, verify and close
