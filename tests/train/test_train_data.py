"""Examples, batches and the deterministic, length-bucketed batch order."""

from __future__ import annotations

import pytest
import torch

from distillery.agents.prompts import PromptConfig, episode_example_ids
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.train.data import (
    Example,
    batch_order,
    collate,
    example_from_mask,
    example_from_prompt,
    examples_from_masks,
    fingerprint,
)
from distillery.train.losses import IGNORE_INDEX
from distillery.types import Turn


def test_example_from_an_episode_targets_exactly_the_actions():
    turns = [Turn("downloads/\n  invoice_acme.pdf", 'move_file(src="downloads/invoice_acme.pdf", dst="finance/")'),
             Turn("ok: moved", "finish()")]
    tok = train_tokenizer(["File the invoice.", *[t.observation for t in turns], *[t.action for t in turns]],
                          TokenizerConfig(vocab_size=600))
    pair = episode_example_ids("File the invoice.", turns, tok, PromptConfig())
    ex = examples_from_masks([pair, None])
    assert len(ex) == 1
    targets = [t for t in ex[0].labels if t != IGNORE_INDEX]
    assert tok.decode(targets) == turns[0].action + "<|end|>" + turns[1].action + "<|end|>"


def test_example_from_prompt_targets_the_action_only():
    e = example_from_prompt([7, 8, 9], [4, 5])
    assert e.input_ids == [7, 8, 9, 4, 5] and e.labels == [-100, -100, -100, 4, 5]
    with pytest.raises(ValueError, match="no target tokens"):
        example_from_prompt([1], [])


def test_example_checks_lengths():
    with pytest.raises(ValueError, match="2 input_ids but 1 labels"):
        Example([1, 2], [1])
    with pytest.raises(ValueError, match="per-token extra 'w' has 1 values for 2 tokens"):
        Example([1, 2], [1, 2], {"w": [0.5]})
    with pytest.raises(ValueError, match="3 ids but 2 mask"):
        example_from_mask([1, 2, 3], [True, False])


def test_truncation_keeps_the_prefix():
    e = Example([1, 2, 3, 4], [-100, 2, 3, 4], {"adv": 0.5, "lp": [0.1, 0.2, 0.3, 0.4]})
    t = e.truncated(2)
    assert t.input_ids == [1, 2] and t.labels == [-100, 2] and t.extras == {"adv": 0.5, "lp": [0.1, 0.2]}
    assert e.truncated(9) is e


def test_collate_pads_right_and_masks_only_when_needed():
    a = example_from_mask([5, 6, 7], [False, True, True], {"adv": 1.0, "lp": [0.0, -1.0, -2.0]})
    b = example_from_mask([8, 9], [False, True], {"adv": -1.0, "lp": [0.0, -3.0]})
    batch = collate([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch.labels.tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert (batch.n_tokens, batch.n_labels) == (5, 3)
    assert batch.extras["adv"].tolist() == [1.0, -1.0]
    assert torch.equal(batch.extras["lp"], torch.tensor([[0.0, -1.0, -2.0], [0.0, -3.0, 0.0]]))
    same = collate([a, a], pad_id=0)
    assert same.attention_mask is None        # nothing padded: the causal-only fast path


def test_batch_order_is_a_deterministic_partition_and_buckets_by_length():
    lengths = [((i * 37) % 50) + 1 for i in range(200)]
    order = batch_order(lengths, 8, seed=3, epoch=0, bucket=True, window=5)
    assert sorted(i for b in order for i in b) == list(range(200))
    assert order == batch_order(lengths, 8, seed=3, epoch=0, bucket=True, window=5)
    assert order != batch_order(lengths, 8, seed=3, epoch=1, bucket=True, window=5)
    assert order != batch_order(lengths, 8, seed=4, epoch=0, bucket=True, window=5)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    plain = batch_order(lengths, 8, seed=3, epoch=0, bucket=False)
    assert sorted(i for b in plain for i in b) == list(range(200))
    assert padding(order) < padding(plain) / 3


def test_fingerprint_sees_tokens_targets_and_extras():
    a = [example_from_mask([1, 2, 3], [False, True, True])]
    assert fingerprint(a) == fingerprint([example_from_mask([1, 2, 3], [False, True, True])])
    assert fingerprint(a) != fingerprint([example_from_mask([1, 2, 3], [False, False, True])])
    assert fingerprint(a) != fingerprint([example_from_mask([1, 2, 3], [False, True, True], {"adv": 1.0})])
