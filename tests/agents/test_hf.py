"""`policy_from_model`: a model in memory plays as a policy, named and prompted as told."""

from __future__ import annotations

import pytest

from distillery.agents.hf import policy_from_model
from distillery.agents.prompts import PromptConfig
from distillery.config import TasksConfig
from distillery.lm.model import ModelConfig, build_model
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.rollout import RolloutConfig, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.train.examples import corpus_texts


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(families=["save_note"], n_train_per_family=2, n_test_per_family=0,
                                      random_probes=0, max_steps=3), progress=False).tasks


def test_a_model_in_memory_plays_under_its_name_with_the_given_prompt(tasks, tmp_path):
    tok = train_tokenizer(corpus_texts(tasks), TokenizerConfig(vocab_size=400))
    model = build_model(ModelConfig(hidden_size=16, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                    max_position_embeddings=256, init_seed=0), tok)
    prompt = PromptConfig(max_prompt_tokens=192)
    policy = policy_from_model(model, tok, "student-i0", prompt=prompt, temperature=0.7, max_new_tokens=8,
                               device="cpu")
    assert (policy.name, policy.model, policy.prompt) == ("student-i0", "student-i0", prompt)
    assert policy.lm is model and policy.sampling.temperature == 0.7 and policy.sampling.max_new_tokens == 8

    cfg = RolloutConfig(k=1, seed=0, env_kwargs={"root": str(tmp_path)})
    traj = run_batch(policy, make_jobs(tasks, policy.name, cfg), cfg)
    assert traj.episodes.height == len(tasks)
    assert set(traj.episodes["policy"]) == {"student-i0"} and set(traj.episodes["model"]) == {"student-i0"}
    assert all(0 < n <= 8 for n in traj.steps["tokens_out"].to_list())


def _counting(act_deferring, unfinished):
    def call(contexts):
        outs = act_deferring(contexts)
        unfinished.append(sum(o is None for o in outs))
        return outs
    return call


def test_continuous_batching_across_act_calls_records_the_actions_of_lockstep_calls(tasks, tmp_path, monkeypatch):
    """With `continuous_batching` the rollout engine calls `act_deferring`: a call returns
    once few actions are left unfinished (here half, with many stop tokens so that actions
    end at different lengths), those episodes get the same context again, and the policy
    goes on with their actions. The trajectories are those of lockstep `act` calls."""
    import distillery.agents.hf as hf

    monkeypatch.setattr(hf, "DEFER_SHARE", 2)
    real_generate, resumed = hf.generate, []

    def generate(*args, resume, **kwargs):
        resumed.append(sum(r is not None for r in resume))
        return real_generate(*args, resume=resume, **kwargs)

    monkeypatch.setattr(hf, "generate", generate)
    tok = train_tokenizer(corpus_texts(tasks), TokenizerConfig(vocab_size=400))
    model = build_model(ModelConfig(hidden_size=16, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                    max_position_embeddings=512, init_seed=0), tok)
    runs, unfinished = [], []
    for continuous in (True, False):
        policy = policy_from_model(model, tok, "student", prompt=PromptConfig(max_prompt_tokens=192),
                                   temperature=1.0, max_new_tokens=12, device="cpu")
        policy.stop_ids = list(range(3, 400, 3))     # a third of the vocabulary stops an action
        policy.act_deferring = _counting(policy.act_deferring, unfinished)
        cfg = RolloutConfig(k=4, seed=0, env_kwargs={"root": str(tmp_path)}, continuous_batching=continuous)
        runs.append(run_batch(policy, make_jobs(tasks, "student", cfg), cfg).steps.sort(["episode_id", "t"]))
        if continuous:
            calls = len(unfinished)
    assert len(unfinished) == calls                   # off: act_deferring is never called
    assert sum(unfinished) > 0                        # actions were carried into later calls
    assert sum(resumed) == sum(unfinished)            # and went on there, not started over
    deferred, lockstep = runs
    assert deferred["action_text"].to_list() == lockstep["action_text"].to_list()
    assert deferred["tokens_out"].to_list() == lockstep["tokens_out"].to_list()
    assert deferred["tokens_in"].to_list() == lockstep["tokens_in"].to_list()
    for a, b in zip(deferred["logprob"].to_list(), lockstep["logprob"].to_list(), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_a_device_this_machine_lacks_is_a_value_error_naming_it():
    import torch

    from distillery.agents.hf import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device 'gpu0': not a device torch knows"):
        resolve_device("gpu0")
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=f"device '{missing}': "):
        resolve_device(missing)
