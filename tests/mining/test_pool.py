"""The ExpeL principle pool: counters worked out by hand, and reply lines read as ops."""

from __future__ import annotations

import copy
import logging

import pytest
from tests.mining.conftest import rule

from distillery.mining.pool import PrincipleOp, apply_ops, parse_ops, principle_id
from distillery.types import Experience


def state(pool: list[Experience]) -> list[tuple[str, int]]:
    return [(e.text, e.counter) for e in pool]


def test_each_op_moves_the_counter_as_expel_does():
    pool = [rule("A", 3), rule("B", 1), rule("C", 2)]
    ops = [PrincipleOp("ADD", text="D"), PrincipleOp("EDIT", 0, text="A2"),
           PrincipleOp("AGREE", 2), PrincipleOp("REMOVE", 1)]
    new = apply_ops(pool, ops)
    # REMOVE B: 1 -> 0, dropped. AGREE C: 2 -> 3. EDIT A: 3 -> 4, new text. ADD D at 2.
    assert state(new) == [("A2", 4), ("C", 3), ("D", 2)]
    assert new[0].exp_id == principle_id("A2") != pool[0].exp_id
    assert new[2].status == "active" and new[2].kind == "principle"


def test_ops_apply_in_the_order_remove_agree_edit_add():
    pool = [rule("A", 1)]
    # Given AGREE first, A would reach 2 and survive the REMOVE; REMOVE goes first and drops it.
    assert apply_ops(pool, [PrincipleOp("AGREE", 0), PrincipleOp("REMOVE", 0)]) == []
    # A dropped rule takes no later op, and ADD comes after EDIT: the EDIT's text is not a duplicate.
    pool = [rule("A", 2), rule("B", 1)]
    new = apply_ops(pool, [PrincipleOp("ADD", text="B2"), PrincipleOp("EDIT", 1, text="B2"),
                           PrincipleOp("REMOVE", 1), PrincipleOp("EDIT", 0, text="A2")])
    assert state(new) == [("A2", 3), ("B2", 2)]


def test_remove_costs_three_when_the_list_is_full():
    def pool_of(n: int) -> list[Experience]:
        return [rule("top", 10)] + [rule(f"r{i}", 5) for i in range(n - 1)]

    full = apply_ops(pool_of(25), [PrincipleOp("REMOVE", 0)], max_rules=20)    # 25 >= 20 + 5
    assert full[0].text == "top" and full[0].counter == 7
    not_full = apply_ops(pool_of(24), [PrincipleOp("REMOVE", 0)], max_rules=20)
    assert not_full[0].text == "top" and not_full[0].counter == 9
    assert len(full) == len(not_full) == 20


def test_sorted_by_counter_stably_and_capped_to_the_highest():
    pool = [rule(f"r{i}", 2 if i % 2 else 1) for i in range(22)]
    new = apply_ops(pool, [], max_rules=20)
    assert [e.text for e in new] == [f"r{i}" for i in range(1, 22, 2)] + [f"r{i}" for i in range(0, 18, 2)]


def test_apply_ops_is_pure_and_skips_duplicates_and_bad_indices():
    pool = [rule("A", 2, provenance=["e1"]), rule("B", 2)]
    before = copy.deepcopy(pool)
    new = apply_ops(pool, [PrincipleOp("AGREE", 0, provenance=("e2",)), PrincipleOp("ADD", text="  a "),
                           PrincipleOp("REMOVE", 7), PrincipleOp("EDIT", 1, text="B2")])
    assert pool == before                                  # nothing mutated
    assert state(new) == [("A", 3), ("B2", 3)]             # duplicate ADD and REMOVE 8 ignored
    assert new[0].provenance == ["e1", "e2"] and pool[0].provenance == ["e1"]
    with pytest.raises(ValueError):
        PrincipleOp("EDIT", 0)
    with pytest.raises(ValueError):
        PrincipleOp("SWAP", 0)


def test_parse_ops_reads_one_op_per_line_and_says_why_it_skips(caplog):
    reply = ("ADD: Invoices go in paperwork/bills/.\n- EDIT 2: Mails end with 'Cheers, Alex'.\n"
             "AGREE 1\n**REMOVE 3**\nREMOVE 9\nEDIT 1:\nsome chatter\nAGREE\n")
    with caplog.at_level(logging.WARNING):
        ops, ignored = parse_ops(reply, n_rules=3)
    assert [o.render() for o in ops] == ["ADD: Invoices go in paperwork/bills/.",
                                          "EDIT 2: Mails end with 'Cheers, Alex'.", "AGREE 1", "REMOVE 3"]
    assert ops[1].index == 1
    assert len(ignored) == 4 and any("REMOVE 9" in w for w in ignored)
    assert sum("ignored" in r.message for r in caplog.records) == 4
