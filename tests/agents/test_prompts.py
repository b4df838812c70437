"""Prompt rendering: never over budget, the instruction never cut, and a training sequence's
prefixes are exactly what acting renders (so the model is trained on what it will see)."""

from __future__ import annotations

import random

import pytest

from distillery.agents.prompts import (
    MARKERS,
    PromptConfig,
    PromptTooLong,
    action_ids,
    episode_example_ids,
    render_compact_ids,
)
from distillery.config import TasksConfig
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.tasks.generate import generate_tasks
from distillery.train.examples import corpus_texts
from distillery.types import Context, Turn


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(n_train_per_family=2, n_test_per_family=0, random_probes=0),
                          progress=False).tasks


@pytest.fixture(scope="module")
def tok(tasks):
    return train_tokenizer(corpus_texts(tasks), TokenizerConfig(vocab_size=2048))


def _random_history(rng: random.Random, words: list[str], n: int) -> list[Turn]:
    return [Turn(" ".join(rng.choices(words, k=rng.randint(1, 120))),
                 f'read_file(path="{rng.choice(words)}")') for _ in range(n)]


def test_compact_prompt_never_exceeds_budget_and_keeps_the_instruction(tasks, tok):
    rng = random.Random(0)
    words = " ".join(corpus_texts(tasks)).split()
    checked = 0
    for budget in (64, 128, 256, 640):
        cfg = PromptConfig(max_prompt_tokens=budget, max_observation_tokens=rng.choice([20, 200]))
        for task in tasks:
            hist = _random_history(rng, words, rng.randint(0, 12))
            exp = [" ".join(rng.choices(words, k=30)) for _ in range(rng.randint(0, 3))]
            ctx = Context("e", task, len(hist), " ".join(rng.choices(words, k=rng.randint(0, 400))), hist, exp)
            head = [tok.convert_tokens_to_ids(MARKERS["instruction"]),
                    *tok.encode(task.instruction, add_special_tokens=False)]
            try:
                ids = render_compact_ids(ctx, tok, cfg)
            except PromptTooLong:
                assert len(head) + 2 > budget  # only when the instruction itself cannot fit
                continue
            assert len(ids) <= budget
            assert ids[: len(head)] == head                         # instruction whole, first
            assert ids[-1] == tok.convert_tokens_to_ids(MARKERS["action"])
            checked += 1
    assert checked > 50


def test_instruction_over_budget_is_a_clear_error(tasks, tok):
    task = tasks[0]
    task = type(task)(**{**task.__dict__, "instruction": "word " * 400})
    with pytest.raises(PromptTooLong, match="raise prompt.max_prompt_tokens"):
        render_compact_ids(Context("e", task, 0, "obs"), tok, PromptConfig(max_prompt_tokens=64))


def test_episode_sequence_prefixes_equal_what_acting_renders(tasks, tok):
    cfg = PromptConfig()
    for task in tasks:
        turns = [Turn(f"observation {i} for {task.task_id}", f'list_dir(path="d{i}")')
                 for i in range(len(task.reference_solution))]
        pair = episode_example_ids(task.instruction, turns, tok, cfg)
        assert pair is not None
        ids, mask = pair
        pos = 0
        for t, turn in enumerate(turns):
            prompt = render_compact_ids(Context("e", task, t, turn.observation, turns[:t]), tok, cfg)
            act = action_ids(tok, turn.action)
            # The prompt is a prefix of the sequence at this step, and the action follows it.
            assert ids[: len(prompt)] == prompt
            assert ids[len(prompt): len(prompt) + len(act)] == act
            assert all(mask[len(prompt): len(prompt) + len(act)])
            assert not any(mask[pos: len(prompt)])
            pos = len(prompt) + len(act)
        assert pos == len(ids)
