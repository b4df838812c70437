"""Question templates and validation by execution: at least 25 templates of every kind; a
question is kept only when its gold SQL runs and returns a non-trivial result, the result
changes when a table is swapped for its decoy, it runs on every sibling without a top-k
tie, and the recorded gold schema agrees with sqlglot."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from distillery.envs.sql.domains import domain
from distillery.envs.sql.engine import ReadOnlyDb
from distillery.envs.sql.generator import DbSpec, build_database
from distillery.envs.sql.questions import TEMPLATES, Candidate, Ctx, candidates
from distillery.envs.sql.schema import analyse, load_meta, swap_table
from distillery.envs.sql.validate import validate_candidate


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    out = tmp_path_factory.mktemp("val")
    specs = [DbSpec(i, d, s, n_fillers=100) for i, (d, s) in enumerate(
        [("retail", "snake"), ("hr", "camel"), ("logistics", "upper"), ("finance", "snake_abbr"),
         ("healthcare", "pascal_abbr"), ("education", "prefixed"), ("retail", "legacy"), ("hr", "snake")])]
    built = [build_database(s, out / f"db{s.seed}.sqlite") for s in specs]
    opened = []
    for b in built:
        opened.append((b, load_meta(b.path), ReadOnlyDb(b.path), [ReadOnlyDb(p, base=b.path) for p in b.siblings],
                       {b.layout.tables[k]: v for k, v in b.layout.decoys.items()}))
    yield opened
    for _b, _m, main, sibs, _d in opened:
        main.close()
        for s in sibs:
            s.close()


def check(db, cand: Candidate):
    b, meta, main, sibs, decoys = db
    return validate_candidate(cand, main, sibs, meta, decoys)


def test_there_are_at_least_25_templates_covering_every_kind_of_question():
    names = set(TEMPLATES)
    assert len(names) >= 25
    for needed in ("filter_cat", "count_cat", "sum_cat", "avg_cat", "group_count", "group_having", "top_k",
                   "join_filter_parent", "join3_count", "join4_group", "two_parents", "not_exists"):
        assert needed in names


def test_almost_every_template_yields_validated_questions(dbs):
    validated = set()
    for i, db in enumerate(dbs):
        b = db[0]
        ctx = Ctx(domain(b.spec.domain), b.layout, b.data, random.Random(i))
        for name in TEMPLATES:
            for cand in candidates(name, ctx)[:4]:
                assert cand.template == name and cand.question and cand.sql.startswith("SELECT")
                if name not in validated and check(db, cand).ok:
                    validated.add(name)
    assert len(validated) >= 0.9 * len(TEMPLATES), sorted(set(TEMPLATES) - validated)


def _a_valid(db, template: str = "filter_cat") -> Candidate:
    b = db[0]
    for seed in range(20):
        for cand in candidates(template, Ctx(domain(b.spec.domain), b.layout, b.data, random.Random(seed))):
            if check(db, cand).ok:
                return cand
    raise AssertionError(f"no valid {template} candidate")


def test_a_query_a_decoy_swap_does_not_change_is_rejected(dbs):
    db = dbs[0]
    b = db[0]
    real = b.layout.tables["customer"]
    cand = Candidate("probe", "Is there a customer?", f"SELECT 1 FROM {real} LIMIT 1", (real,), ())
    reasons = check(db, cand).reasons
    assert any("swapped for its decoy" in r and real in r for r in reasons)
    # and the swap itself reads the decoy: its result differs for a query that reads data
    cand = _a_valid(db)
    table = cand.tables[0]
    for decoy in db[4][table]:
        swapped = swap_table(cand.sql, table, decoy)
        assert decoy in swapped and db[2].query(swapped).rows != db[2].query(cand.sql).rows


def test_trivial_results_are_rejected(dbs):
    db = dbs[1]
    real = db[0].layout.tables["employee"]
    empty = Candidate("probe", "q", f"SELECT 1 FROM {real} WHERE 1 = 0", (real,), ())
    zero = Candidate("probe", "q", f"SELECT COUNT(*) FROM {real} WHERE 1 = 0", (real,), ())
    assert any("no rows" in r for r in check(db, empty).reasons)
    assert any("zero count" in r for r in check(db, zero).reasons)
    good = _a_valid(db)
    same = replace(good, baseline_sql=good.sql)
    assert any("filter changes nothing" in r for r in check(db, same).reasons)
    broken = replace(good, sql=good.sql.replace("SELECT", "SELEC", 1))
    assert any("gold SQL fails" in r for r in check(db, broken).reasons)


def test_a_tie_at_the_top_k_cut_off_is_rejected(dbs):
    db = dbs[2]
    good = _a_valid(db, "top_k")
    assert check(db, good).ok
    tied = replace(good, tie_expected=good.tie_expected + 1)
    assert any("tie at the top-k cut-off" in r for r in check(db, tied).reasons)


def test_a_recorded_schema_that_disagrees_with_sqlglot_is_rejected(dbs):
    db = dbs[3]
    good = _a_valid(db, "join_filter_parent")
    refs = analyse(good.sql, db[1])
    assert sorted(refs.tables) == sorted(good.tables)
    assert sorted(c.lower() for c in refs.column_names()) == sorted(c.lower() for c in good.columns)
    wrong = replace(good, columns=good.columns[1:])
    assert any("disagrees with sqlglot" in r for r in check(db, wrong).reasons)


def test_swap_table_keeps_qualified_columns_resolving():
    out = swap_table("SELECT orders.id FROM orders JOIN c AS x ON x.id = orders.cid", "orders", "orders_bak")
    assert "orders_bak AS orders" in out and "orders.id" in out
