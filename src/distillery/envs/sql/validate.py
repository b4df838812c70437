"""Validating a question by execution, before it becomes a task.

A candidate is kept only if
  1. its gold SQL runs on the main database and returns a non-empty, non-trivial result
     (not only NULLs or a zero count, at most `max_rows` rows, and different from the
     unfiltered `baseline` when the template has one: the filter must filter);
  2. the result changes when any table it reads is swapped for any of that table's decoys
     (otherwise an answer that used the decoy would score);
  3. it runs on every sibling database, and top-k questions have no tie at the cut-off on
     any database (a tie would make the right answer depend on row order);
  4. the tables and columns the template recorded equal the ones sqlglot resolves from
     the gold SQL against the real schema.
Every failed rule is a reason, recorded with the rejection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distillery.envs.sql.engine import QueryError, QueryResult, ReadOnlyDb, same_result
from distillery.envs.sql.questions import Candidate
from distillery.envs.sql.schema import DbMeta, SqlRefError, analyse, parse_select, swap_table


@dataclass
class Checked:
    candidate: Candidate
    reasons: list[str]
    n_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.reasons


def trivial(result: QueryResult) -> str:
    """Why a result is trivial ('' when it is not)."""
    if not result.rows:
        return "the gold SQL returns no rows"
    if all(v is None for r in result.rows for v in r):
        return "the gold SQL returns only NULLs"
    if len(result.rows) == 1 and len(result.rows[0]) == 1 and result.rows[0][0] in (0, 0.0):
        return "the gold SQL returns a zero count"
    return ""


def _run(db: ReadOnlyDb, sql: str) -> QueryResult | str:
    try:
        return db.query(sql)
    except QueryError as e:
        return str(e)


def validate_candidate(cand: Candidate, main: ReadOnlyDb, siblings: list[ReadOnlyDb], meta: DbMeta,
                       decoys: dict[str, list[str]], max_rows: int = 50) -> Checked:
    """The rules of the module docstring; `decoys` maps a real table name to its decoys."""
    reasons: list[str] = []
    gold = _run(main, cand.sql)
    if isinstance(gold, str):
        return Checked(cand, [f"the gold SQL fails: {gold}"])
    why = trivial(gold)
    if why:
        reasons.append(why)
    if len(gold.rows) > max_rows:
        reasons.append(f"the gold SQL returns {len(gold.rows)} rows (more than {max_rows})")
    if cand.baseline_sql:
        base = _run(main, cand.baseline_sql)
        if not isinstance(base, str) and same_result(base.rows, gold.rows):
            reasons.append("the filter changes nothing (same result as without it)")
    stmt = parse_select(cand.sql) if any(decoys.get(t) for t in cand.tables) else None
    for table in cand.tables:
        for decoy in decoys.get(table, []):
            swapped = _run(main, swap_table(stmt, table, decoy))
            if not isinstance(swapped, str) and same_result(swapped.rows, gold.rows):
                reasons.append(f"result unchanged when {table} is swapped for its decoy {decoy}")
    for i, sib in enumerate(siblings, 1):
        res = _run(sib, cand.sql)
        if isinstance(res, str):
            reasons.append(f"the gold SQL fails on sibling {i}: {res}")
    if cand.tie_sql:
        for i, db in enumerate([main, *siblings]):
            res = _run(db, cand.tie_sql)
            got: Any = res if isinstance(res, str) else (res.rows[0][0] if res.rows else None)
            if got != cand.tie_expected:
                where = "the main database" if i == 0 else f"sibling {i}"
                reasons.append(f"a tie at the top-k cut-off on {where} ({got} rows where {cand.tie_expected} expected)")
    try:
        refs = analyse(cand.sql, meta)
        got_t, want_t = sorted(t.lower() for t in refs.tables), sorted(t.lower() for t in cand.tables)
        got_c, want_c = sorted(c.lower() for c in refs.column_names()), sorted(c.lower() for c in cand.columns)
        if got_t != want_t or got_c != want_c:
            reasons.append(f"the recorded gold schema disagrees with sqlglot: recorded {want_t} {want_c}, "
                           f"sqlglot {got_t} {got_c}")
    except SqlRefError as e:
        reasons.append(f"sqlglot cannot resolve the gold SQL: {e}")
    return Checked(cand, reasons, len(gold.rows))
