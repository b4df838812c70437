"""The table track's data, grammar, rule critic and environment (no model trained here; the
stages run in the shared micro pipeline)."""

from __future__ import annotations

import random

import pytest

from distillery.envs.table.chains import (
    KINDS,
    MAX_NUMBER,
    PERTURBATIONS,
    Item,
    Table,
    make_item,
    perturb_chain,
    random_chain,
    verify_chain,
)
from distillery.vision.tables import TableDataConfig, cell_words, generate_items, render_table

CFG = TableDataConfig(n_train=300, n_test=40, n_large=40, n_long=40)


@pytest.fixture(scope="module")
def items():
    return generate_items(CFG)


def test_oracle_chains_pass_and_random_chains_almost_never(items):
    assert all(verify_chain(it.table, it.item, it.item.chain).valid for it in items)
    rng = random.Random(0)
    passed = sum(verify_chain(it.table, it.item, random_chain(it.table, rng)).valid for it in items)
    assert passed / len(items) < 0.02


def test_splits_by_table_size_and_program_length(items):
    by = {s: [it for it in items if it.split == s] for s in ("train", "test", "test_large", "test_long")}
    assert {len(v) for v in by.values()} == {300, 40}
    for it in by["train"] + by["test"]:
        assert it.item.n_steps <= CFG.max_train_steps and it.table.n_rows <= 3 and it.table.n_cols <= 3
    assert all(it.item.n_steps > CFG.max_train_steps for it in by["test_long"])
    assert all(it.table.n_rows == 4 and it.table.n_cols == 4 for it in by["test_large"])
    argmax = [it for it in by["train"] if it.item.kind == "argmax"]
    assert argmax and sum(it.item.shortcut for it in argmax) / len(argmax) > 0.6
    keys = [(str(it.table.to_json()), it.item.question) for it in items]
    assert len(set(keys)) == len(keys)
    assert generate_items(CFG) == items          # deterministic in the seed


def test_every_program_kind_and_its_shortcut_flag():
    rng = random.Random(3)
    t = Table(((10, 90), (80, 5), (20, 30)))
    for kind in KINDS:
        for _ in range(20):
            it = make_item(kind, t, rng)
            if it is not None:
                assert verify_chain(t, it, it.chain).valid, (kind, it.chain)
    aligned = Table(((10, 1), (99, 98), (20, 3)))
    item = make_item("argmax", aligned, random.Random(0))
    assert item is not None
    # the shortcut chain (the asked column's largest value, without the key column) is right
    # but not a valid process
    col = 0 if "largest B" in item.question else 1
    best = max(aligned.column(col))
    shortcut = f"look r2 {'A' if col == 0 else 'B'} = {best} ; answer {best}"
    v = verify_chain(aligned, item, shortcut)
    assert item.shortcut and v.correct and not v.valid and v.right_answer_wrong_process


ITEM = Item("difference", "what is A in r2 minus A in r1 ?", "look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 70 ; "
            "answer 70", ((1, 0), (0, 0)), 70)
TABLE = Table(((10, 90), (80, 5)))


@pytest.mark.parametrize("chain, reason", [
    ("look r2 A = 80 ; mul 80 10 = 800 ; answer 800", "unknown operation"),
    ("look r7 A = 80 ; answer 80", "outside the table"),
    ("look r2 Q = 80 ; answer 80", "outside the table"),
    ("look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 123456789012345678901234567890 ; answer 70", "overflows"),
    (f"look r2 A = {MAX_NUMBER + 1} ; answer 70", "overflows"),
    ("look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 70 ; answer", "empty answer"),
    ("look r2 A = 81 ; look r1 A = 10 ; sub 81 10 = 71 ; answer 71", "misread r2 A"),
    ("look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 60 ; answer 60", "arithmetic"),
    ("look r2 A = 80 ; look r1 A = 10 ; sub 80 11 = 69 ; answer 69", "not produced"),
    ("look r2 A = 80 ; look r1 B = 90 ; answer 80", "irrelevant cell"),
    ("look r2 A = 80 ; look r1 A = 10 ; sub 10 80 = 0 ; answer 0", "negative"),
    ("answer 70 ; look r2 A = 80", "after the answer"),
    ("look r2 A = eighty ; answer 70", "not a number"),
    ("", "empty chain"),
])
def test_malformed_chains_are_invalid_steps_with_a_reason(chain, reason):
    v = verify_chain(TABLE, ITEM, chain)
    assert not v.valid
    assert any(reason in r for r in v.reasons()), v.reasons()


@pytest.mark.parametrize("junk", [None, 42, b"look", "\ud800", "x" * 100_000, ";" * 5000, "look " * 3000,
                                  "look r99999999999999999999 A = 1"])
def test_the_rule_critic_never_raises(junk):
    v = verify_chain(TABLE, ITEM, junk)
    assert not v.valid and not v.correct


def test_perturbations_are_caught(items):
    rng = random.Random(1)
    caught = total = 0
    for it in items[:100]:
        for how in PERTURBATIONS:
            p = perturb_chain(it.table, it.item, rng, how)
            if p is not None:
                total += 1
                caught += not verify_chain(it.table, it.item, p).valid
    assert total > 200 and caught == total


def test_images_align_cells_with_patches(items):
    it = next(x for x in items if x.split == "test_large")
    img = render_table(it.table, CFG.image_size, CFG.grid)
    assert img.size == (80, 80) and img.mode == "RGB"
    words = cell_words(it.table, CFG.grid)
    assert len(words) == 25 and words[:3] == ["empty", "A", "B"] and words[5] == "r1"
    assert words[6] == str(it.table.get(0, 0))
    assert render_table(it.table).tobytes() == img.tobytes()
    with pytest.raises(ValueError, match="does not fit"):
        render_table(Table(((1,),) * 5))


def test_table_env_verifies_a_chain_step_by_step():
    from distillery.envs.base import env_spec, make_env
    from distillery.envs.table.env import state_of
    from distillery.types import Task

    assert env_spec("table").name == "table"
    env = make_env("table")
    task = Task("t", "table_qa", "test", "default", "", ITEM.question, state_of(TABLE, ITEM), [], [], env="table")
    env.reset(task)
    assert not env.verify().success
    res = env.step('chain(steps="look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 70 ; answer 70")')
    assert res.reward == 1.0 and res.done and res.valid and env.verify().success
    env.reset(task)
    res = env.step("look r2 A = 80 ; answer 80")
    assert res.reward == 0.0 and not res.valid and "read 50%" in res.error
    again = env.step("answer 70")
    assert not again.valid and "over" in again.error
    env.reset(task)
    assert env.step(None).observation


def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="grid"):
        TableDataConfig(large_rows=[5, 5])
    with pytest.raises(ValueError, match="kinds"):
        TableDataConfig(kinds=["sorting"])


# ---------------------------------------------------------------------------------------
# The training side's pure pieces (no model)
# ---------------------------------------------------------------------------------------


def _table_item():
    from distillery.vision.tables import TableItem

    return TableItem("x", "test", TABLE, ITEM)


def test_patches_name_their_content_and_place():
    from distillery.vision.table_rl import place_targets, table_tokenizer

    tok = table_tokenizer()
    t = place_targets(tok, [_table_item()], 5)[0]
    names = [[tok.convert_ids_to_tokens(int(i)) for i in row] for row in t]
    assert names[6] == ["10", "r1", "A"] and names[12] == ["5", "r2", "B"]
    assert names[1] == ["A", "A", "A"] and names[0] == ["empty"] * 3 and names[24] == ["empty"] * 3


def test_critic_labels_come_from_the_rule_critic():
    from distillery.vision.table_rl import critic_prefixes

    it = _table_item()
    assert [lab for _, lab in critic_prefixes(it, ITEM.chain)] == ["ok"] * 4
    skipped = "look r2 A = 80 ; answer 80"
    labels = critic_prefixes(it, skipped)
    assert labels[0] == ("look r2 A = 80", "ok") and labels[1][1] == "bad"   # the answer misses r1 A
    # a misread is bad where it happens; the steps after it are checked against what it wrote,
    # and the answer stays bad (the cell was never read right)
    misread = "look r2 A = 81 ; look r1 A = 10 ; sub 81 10 = 71 ; answer 71"
    assert [lab for _, lab in critic_prefixes(it, misread)] == ["bad", "ok", "ok", "bad"]


def test_each_variant_rewards_the_same_group_its_own_way():
    import torch

    from distillery.vision.table_rl import VARIANTS, Rollout, TableRLConfig, group_rewards

    cfg = TableRLConfig(max_new_tokens=20, overlong_cache=5, prefix_credit=0.1)
    chains = [ITEM.chain, "look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 70 ; answer 70 ; answer 70",
              "look r2 A = 80 ; look r1 A = 10 ; sub 80 10 = 60 ; answer 60"]
    lengths = [10, 18, 25]
    grp = [Rollout(0, [1] * n, c, n > 20, verify_chain(TABLE, ITEM, c)) for c, n in zip(chains, lengths, strict=True)]

    def rule(g):
        return [r.verdict.step_scores for r in g]

    got = {v: group_rewards([grp], VARIANTS[v], cfg, rule)[0].tolist() for v in ("grpo", "dapo", "pgpo")}
    assert got["grpo"] == [1.0, 1.0, 0.0]
    assert got["dapo"] == pytest.approx([1.0, 1.0 - 0.6, -1.0])        # soft penalty from 15 tokens, -1 past 20
    assert got["pgpo"] == pytest.approx([1.0, 0.0, 0.1 * 2 / 4])       # a step after the answer; wrong from step 3
    assert torch.is_tensor(group_rewards([grp], VARIANTS["pgpo_no_gate"], cfg, rule)[0])


def test_claims_follow_the_paired_rule():
    from distillery.vision.table_report import claims_rows, judge

    assert judge([0.1, 0.12, 0.11])[0] is True
    assert judge([0.1, -0.1, 0.05])[0] is False
    assert judge([0.1])[0] is None
    assert judge([-0.01, 0.01], not_worse=True)[0] is True

    def run(v, s, valid, rawp, acc):
        ev = {"test": {"valid_chain_rate": valid, "right_answer_wrong_process": rawp, "accuracy": acc}}
        return {"kind": "rl", "variant": v, "seed": s, "eval": ev}

    results = [run("pgpo", s, 0.5 + s / 100, 0.05, 0.4) for s in range(3)]
    results += [run("grpo", s, 0.3, 0.2, 0.4) for s in range(3)]
    rows = {c.finding: c for c in claims_rows(results)}
    assert rows["PGPO gives more fully valid chains than GRPO"].holds is True
    assert rows["PGPO gives fewer right answers with a wrong process than GRPO"].holds is True
    assert rows["PGPO's accuracy is not below GRPO's"].holds is True
    assert "DAPO" not in " ".join(rows)             # no DAPO runs: no DAPO rows
