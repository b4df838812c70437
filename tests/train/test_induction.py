"""The warm-up's synthetic copy curriculum (train.warmup.induction_examples)."""

from __future__ import annotations

import pytest

from distillery.train.losses import IGNORE_INDEX
from distillery.train.warmup import WarmupConfig, induction_examples


def test_induction_examples_repeat_a_span_and_target_only_the_predictable_repeat():
    vocab = list(range(10, 60))
    exs = induction_examples(vocab, 50, seed=3, min_span=4, max_span=9, max_gap=5)
    assert len(exs) == 50
    for ex in exs:
        targets = [i for i, lab in enumerate(ex.labels) if lab != IGNORE_INDEX]
        assert targets, "every sequence has targets"
        first = targets[0]
        span = ex.input_ids[first - 1:]                  # the repeat: its first token is context
        assert 4 <= len(span) <= 9
        assert ex.input_ids[:len(span)] == span          # ... a copy of the opening span
        assert targets == list(range(first, len(ex)))    # targets: the whole repeat after its first token
        assert [ex.labels[i] for i in targets] == ex.input_ids[first:]
        assert set(ex.input_ids) <= set(vocab)
        assert len(ex) - 2 * len(span) <= 5              # the gap


def test_induction_examples_are_deterministic_in_the_seed():
    a = induction_examples(range(100), 20, seed=0)
    assert a == induction_examples(range(100), 20, seed=0)
    assert a != induction_examples(range(100), 20, seed=1)


def test_bad_induction_settings_fail_clearly():
    with pytest.raises(ValueError, match="induction_steps"):
        WarmupConfig(induction_steps=-1)
    with pytest.raises(ValueError, match="no token ids"):
        induction_examples([], 3, seed=0)


def test_principle_experience_shows_the_stated_principles_for_a_stable_share():
    import polars as pl

    from distillery.train.warmup import principle_experience
    from distillery.types import Task

    def task(i: int, prefs: list[str]) -> Task:
        return Task(f"t{i}", "file_invoice", "train", "u01", "", "do it", {}, [], [], preferences=prefs)

    tasks = {f"t{i}": task(i, ["Invoices are filed in admin/receipts/."] if i % 4 else []) for i in range(200)}
    eps = pl.DataFrame({"episode_id": [f"e{i}" for i in range(200)], "task_id": [f"t{i}" for i in range(200)]})
    shown = principle_experience(eps, tasks, 0.5, seed=0)
    assert shown == principle_experience(eps, tasks, 0.5, seed=0)          # stable
    assert all(tasks[f"t{e[1:]}"].preferences for e in shown)               # never an empty list
    assert all(v == ["Invoices are filed in admin/receipts/."] for v in shown.values())
    assert 50 < len(shown) < 100                                            # about half of 150
    assert principle_experience(eps, tasks, 0.0, seed=0) == {}
    assert len(principle_experience(eps, tasks, 1.0, seed=0)) == 150
