"""Read-only execution: every hostile statement class is refused with a message, nothing
ever changes the file; and how results are compared."""

from __future__ import annotations

import hashlib

import pytest

from distillery.envs.sql.engine import Limits, QueryError, ReadOnlyDb, format_rows, same_result
from distillery.envs.sql.generator import DbSpec, build_database

HOSTILE = {
    "insert": "INSERT INTO {t} DEFAULT VALUES",
    "update": "UPDATE {t} SET {c} = NULL",
    "delete": "DELETE FROM {t}",
    "drop": "DROP TABLE {t}",
    "create": "CREATE TABLE x (a)",
    "create_temp": "CREATE TEMP TABLE x AS SELECT 1",
    "alter": "ALTER TABLE {t} ADD COLUMN z",
    "attach": "ATTACH DATABASE ':memory:' AS other",
    "detach": "DETACH DATABASE main",
    "pragma": "PRAGMA writable_schema = 1",
    "vacuum": "VACUUM",
    "reindex": "REINDEX",
    "begin": "BEGIN IMMEDIATE",
    "load_extension": "SELECT load_extension('/tmp/evil')",
    "random": "SELECT random()",
    "endless_recursion": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r",
    "long_cross_join": "SELECT COUNT(*) FROM {t} a, {t} b, {t} c, {t} d, {t} e",
    "huge_blob": "SELECT zeroblob(500000000)",
    "two_statements": "SELECT 1; DELETE FROM {t}",
    "nul": "SELECT 1\x00; DELETE FROM {t}",
    "not_utf8": "SELECT '\udcff'",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_database(DbSpec(1, "retail", "snake", n_fillers=100), tmp_path_factory.mktemp("eng") / "r.sqlite")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_each_hostile_statement_is_refused_and_the_database_is_unchanged(built, kind):
    before = hashlib.sha256(built.path.read_bytes()).hexdigest()
    t = built.layout.tables["order_line"]
    c = built.layout.columns[("order_line", "quantity")]
    db = ReadOnlyDb(built.path, limits=Limits(max_vm_steps=1_000_000, time_limit_s=30))
    try:
        with pytest.raises(QueryError) as e:
            db.query(HOSTILE[kind].format(t=t, c=c))
        assert str(e.value)
        assert db.query(f"SELECT COUNT(*) FROM {t}").rows[0][0] > 0      # the connection still works
    finally:
        db.close()
    assert hashlib.sha256(built.path.read_bytes()).hexdigest() == before


def test_the_step_limit_names_itself(built):
    db = ReadOnlyDb(built.path, limits=Limits(max_vm_steps=100_000))
    with pytest.raises(QueryError, match="100,000 steps"):
        db.query(HOSTILE["endless_recursion"])
    db.close()


def test_a_missing_file_is_an_error_not_a_new_database(tmp_path):
    with pytest.raises(FileNotFoundError):
        ReadOnlyDb(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


def test_too_many_rows_are_marked_truncated(built):
    db = ReadOnlyDb(built.path, limits=Limits(max_rows=3))
    res = db.query(f"SELECT * FROM {built.layout.tables['order_line']}")
    assert len(res.rows) == 3 and res.truncated
    db.close()


def test_results_compare_as_sets_of_rows():
    assert same_result([(1, "a"), (2, "b")], [(2, "b"), (1, "a")])          # row order ignored
    assert same_result([(1, "a"), (1, "a")], [(1, "a")])                    # as sets (BIRD)
    assert same_result([(0.1 + 0.2,)], [(0.3,)])                            # float noise
    assert same_result([(2,)], [(2.0,)])
    assert not same_result([("a", 1)], [(1, "a")])                         # column order matters
    assert not same_result([(1,)], [(1,), (2,)])
    assert not same_result([(None,)], [])


def test_observations_of_results_are_short():
    from distillery.envs.sql.engine import QueryResult

    res = QueryResult([f"col{i}" for i in range(30)], [tuple("x" * 100 for _ in range(30))] * 50, truncated=True)
    text = format_rows(res, max_rows=5)
    assert len(text) < 2500 and text.startswith("50+ rows (first 5)")
