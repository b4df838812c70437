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
