"""The `openai` backend against `distillery serve` plays exactly as the `hf` backend.

A tiny Llama is trained here for a few dozen steps on oracle episodes of a few STAGE tasks
(plain torch, one thread), so that its greedy actions are real tool calls: some episodes
finish and succeed, some go wrong, some run to the step limit. The model directory is
then run twice over the same tasks with `rollout.run_batch`:

- `hf`: `HFPolicy`, greedy, all episodes decoded together in-process;
- `openai`: `OpenAIPolicy` (official client, text mode, temperature 0, 8 requests in flight)
  against the real server app (`serve.serve_in_thread`, uvicorn on 127.0.0.1, a free port),
  which turns each chat request back into the episode's context and micro-batches
  concurrent requests into shared `generate` calls.

Every action, observation, validity, success, score, step count, failure mode and token
count must be identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
import polars as pl
import pytest
import torch

from distillery.agents.hf import HFPolicy
from distillery.agents.openai import OpenAIPolicy
from distillery.agents.oracle import OraclePolicy
from distillery.agents.prompts import PromptConfig, episode_example_ids
from distillery.envs.stage.families import FAMILIES
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.serve import RunningServer, load_engine, serve_in_thread
from distillery.tasks.generate import draft_task
from distillery.types import Task, Turn

pytestmark = pytest.mark.slow

NAME = "tiny-parity"
PROMPT = PromptConfig(max_prompt_tokens=384, max_observation_tokens=96, max_history_turns=6)
MAX_NEW_TOKENS = 40


def parity_tasks() -> tuple[list[Task], list[Task]]:
    """(train tasks, evaluation tasks): the model memorises a few episodes, and is run on
    those (mostly solved) and on unseen ones (mostly not)."""
    fams = sorted(FAMILIES)[:6]
    train = [draft_task(f, "train", "default", i, seed=0, max_steps=8) for f in fams for i in range(2)]
    unseen = [draft_task(f, "test", "default", 0, seed=0, max_steps=8) for f in fams]
    return train, train[::2] + unseen


def oracle_turns(tasks: list[Task]) -> dict[str, list[Turn]]:
    cfg = RolloutConfig()
    traj = run_batch(OraclePolicy(), make_jobs(tasks, "oracle", cfg), cfg)
    task_of = dict(zip(traj.episodes["episode_id"], traj.episodes["task_id"], strict=True))
    turns: dict[str, list[Turn]] = {}
    for row in traj.steps.sort(["episode_id", "t"]).iter_rows(named=True):
        turns.setdefault(task_of[row["episode_id"]], []).append(Turn(row["observation"], row["action_text"]))
    return turns


def build_model_dir(path: Path, tasks: list[Task], steps: int = 120, seed: int = 0,
                    prompt: PromptConfig = PROMPT) -> Path:
    """Tokenizer + tiny Llama trained on the tasks' oracle episodes (rendered with `prompt`),
    saved as a model dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from distillery.lm.model import save_model_dir
    from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer

    turns = oracle_turns(tasks)
    texts = [t.instruction for t in tasks] + [x for ts in turns.values() for tr in ts
                                              for x in (tr.observation, tr.action)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=2048))
    examples = [episode_example_ids(t.instruction, turns[t.task_id], tok, prompt) for t in tasks]
    examples = [e for e in examples if e is not None]
    assert len(examples) >= len(tasks) // 2, "most oracle episodes should fit the prompt budget"
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), tok.pad_token_id, dtype=torch.long)
    target = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, (e_ids, e_mask) in enumerate(examples):
        ids[i, : len(e_ids)] = torch.tensor(e_ids)
        target[i, : len(e_mask)] = torch.tensor(e_mask)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max(512, prompt.max_prompt_tokens + 64),
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    first = last = 0.0
    for step in range(steps):
        logits = model(input_ids=ids).logits[:, :-1]
        mask = target[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[mask], ids[:, 1:][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first, last = (loss.item(), loss.item()) if step == 0 else (first, loss.item())
    assert last < first / 3, f"the tiny model did not learn ({first:.2f} -> {last:.2f})"
    return save_model_dir(path, model.eval(), tok, {"prompt": asdict(prompt)})


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # Deterministic and quick: a 2-core machine shared with other jobs stalls torch's pool.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(parity_model_dir: Path, one_thread: None) -> tuple[Path, list[Task]]:
    return parity_model_dir, parity_tasks()[1]        # tests/conftest.py trains it once


@pytest.fixture(scope="module")
def server(setup: tuple[Path, list[Task]]) -> Iterator[RunningServer]:
    model_dir, _ = setup
    with serve_in_thread(load_engine(model_dir, name=NAME, device="cpu"), port=0) as srv:
        yield srv


def rollout(policy: object, tasks: list[Task]) -> Trajectories:
    cfg = RolloutConfig(seed=0, batch_size=64)
    return run_batch(policy, make_jobs(tasks, policy.name, cfg), cfg)  # type: ignore[arg-type]


EPISODE_COLS = ["task_id", "success", "score", "n_steps", "invalid_actions", "finished",
                "failure_mode", "failed_checks", "tokens_in", "tokens_out", "error"]
STEP_COLS = ["task_id", "t", "observation", "action_text", "tool", "args_json", "valid", "error",
             "feedback", "reward", "state_hash", "tokens_in", "tokens_out"]


def comparable(traj: Trajectories) -> tuple[pl.DataFrame, pl.DataFrame]:
    eps = traj.episodes.select(EPISODE_COLS).sort("task_id")
    steps = (traj.steps.join(traj.episodes.select("episode_id", "task_id"), on="episode_id")
             .select(STEP_COLS).sort("task_id", "t"))
    return eps, steps


def test_openai_backend_through_the_server_plays_exactly_as_hf(setup, server):
    model_dir, tasks = setup
    hf = HFPolicy(str(model_dir), temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, device="cpu")
    with OpenAIPolicy(server.base_url, NAME, mode="text", temperature=0.0,
                      max_tokens=MAX_NEW_TOKENS, concurrency=8, max_retries=0, timeout=120) as api:
        via_api = rollout(api, tasks)
        notes = dict(api.notes)
    health = httpx.get(server.base_url.removesuffix("/v1") + "/health").json()
    in_process = rollout(hf, tasks)

    hf_eps, hf_steps = comparable(in_process)
    api_eps, api_steps = comparable(via_api)
    # The model is good enough that the comparison is not vacuous.
    assert hf_eps["success"].sum() >= 2 and not hf_eps["success"].all(), hf_eps
    assert 10 <= hf_steps["valid"].sum() < hf_steps.height, hf_steps.select("task_id", "t", "action_text")
    assert notes == {}, f"the openai policy had to repair replies: {notes}"
    # ... and the server really shared generate calls between concurrent requests.
    assert health["batches"] < via_api.steps.height, health
    for a, b in zip(hf_steps.iter_rows(named=True), api_steps.iter_rows(named=True), strict=False):
        assert a == b, f"first differing step:\n hf     {a}\n openai {b}"
    assert hf_steps.equals(api_steps)
    assert hf_eps.equals(api_eps), pl.concat([hf_eps, api_eps])
