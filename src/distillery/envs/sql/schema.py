"""What a database holds (tables, columns, keys, comments) and what a query touches.

`load_meta(path)` reads a database's schema once (cached by file identity); the
exploration tools answer from it. `analyse(sql, meta)` parses a query with sqlglot and
resolves every table and column it touches against the real schema (`qualify` with
`validate_qualify_columns`): the tables and columns of a gold query, the identifiers a
policy's query needs in its proposal, and the hallucinated ones (that do not exist).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from distillery.envs.sql.engine import ro_uri
from distillery.envs.sql.generator import CATALOG


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    pk: bool = False
    ref: tuple[str, str] | None = None     # (parent table, parent column)
    comment: str = ""


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    rows: int
    comment: str = ""

    def column(self, name: str) -> ColumnInfo | None:
        low = name.lower()
        for c in self.columns:
            if c.name.lower() == low:
                return c
        return None


@dataclass
class DbMeta:
    tables: dict[str, TableInfo]              # lower-case name -> table (the catalogue excluded)
    names: list[str] = field(default_factory=list)   # real names, sorted case-insensitively
    # `analyse`'s answers for this schema (the oracle executes then submits the same SQL, a
    # group of sampled episodes repeats queries, validation re-reads gold SQL): sqlglot's
    # qualify costs milliseconds a query, the dominant cost of replaying an episode.
    _analysed: dict[str, SqlRefs | SqlRefError] = field(default_factory=dict, init=False, repr=False,
                                                        compare=False)

    def table(self, name: str) -> TableInfo | None:
        return self.tables.get(name.strip().strip('"`[]').lower())

    def sqlglot_schema(self, tables: set[str]) -> dict[str, dict[str, str]]:
        return {t.lower(): {c.name.lower(): (c.type or "TEXT") for c in self.tables[t.lower()].columns}
                for t in tables if t.lower() in self.tables}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=64)
def _load(path: str, size: int, mtime_ns: int) -> DbMeta:
    conn = sqlite3.connect(ro_uri(Path(path)), uri=True)
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        comments: dict[tuple[str, str], str] = {}
        if CATALOG in names:
            for t, c, text in conn.execute(f"SELECT table_name, column_name, comment FROM {CATALOG}"):
                comments[(str(t).lower(), str(c or "").lower())] = str(text or "")
        tables: dict[str, TableInfo] = {}
        for name in names:
            if name == CATALOG:
                continue
            fks = {str(r[3]).lower(): (str(r[2]), str(r[4] or "")) for r in conn.execute(f"PRAGMA foreign_key_list({_q(name)})")}
            cols = []
            for _cid, cname, ctype, _nn, _dflt, pk in conn.execute(f"PRAGMA table_info({_q(name)})"):
                ref = fks.get(cname.lower())
                if ref is not None and not ref[1]:
                    ref = (ref[0], "")
                cols.append(ColumnInfo(cname, ctype or "", bool(pk), ref, comments.get((name.lower(), cname.lower()), "")))
            n = conn.execute(f"SELECT COUNT(*) FROM {_q(name)}").fetchone()[0]
            tables[name.lower()] = TableInfo(name, tuple(cols), int(n), comments.get((name.lower(), ""), ""))
    finally:
        conn.close()
    return DbMeta(tables, sorted((t.name for t in tables.values()), key=lambda s: (s.lower(), s)))


def load_meta(path: str | Path) -> DbMeta:
    """The schema of the database at `path` (cached while the file is unchanged)."""
    p = Path(path).resolve()
    st = p.stat()
    return _load(str(p), st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------------------
# Searching the metadata
# ---------------------------------------------------------------------------------------


def query_words(query: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", query.strip().lower()) if w]


def _rank(name: str, comment: str, words: list[str], whole: str) -> int | None:
    n, c = name.lower(), comment.lower()
    if n == whole:
        return 0
    in_name = [w in n for w in words]
    if all(in_name):
        return 1
    if all(a or w in c for a, w in zip(in_name, words, strict=True)):
        return 2 if any(in_name) else 3
    return None


def search_tables(meta: DbMeta, query: str) -> list[TableInfo]:
    """Tables whose name or comment contains every word of `query`, best matches first."""
    words = query_words(query)
    whole = " ".join(words)
    hits = []
    for t in meta.tables.values():
        r = _rank(t.name, t.comment, words, whole)
        if r is not None:
            hits.append((r, len(t.name), t.name.lower(), t))
    return [h[-1] for h in sorted(hits, key=lambda h: h[:3])]


def search_columns(meta: DbMeta, query: str) -> list[tuple[TableInfo, ColumnInfo]]:
    """Columns whose name or comment contains every word of `query`, best matches first."""
    words = query_words(query)
    whole = " ".join(words)
    hits = []
    for t in meta.tables.values():
        for c in t.columns:
            r = _rank(c.name, c.comment, words, whole)
            if r is not None:
                hits.append((r, len(t.name), t.name.lower(), c.name.lower(), (t, c)))
    return [h[-1] for h in sorted(hits, key=lambda h: h[:4])]


# ---------------------------------------------------------------------------------------
# What a query touches
# ---------------------------------------------------------------------------------------


class SqlRefError(Exception):
    """A query that cannot be analysed: it does not parse, is not one SELECT, or names
    identifiers that do not exist (`unknown` lists those, for hallucination counts)."""

    def __init__(self, message: str, unknown: list[str] | None = None) -> None:
        super().__init__(message)
        self.unknown = unknown or []


@dataclass(frozen=True)
class SqlRefs:
    tables: frozenset[str]                      # real table names
    columns: frozenset[tuple[str, str]]         # (real table name, real column name)

    def column_names(self) -> list[str]:
        return sorted(f"{t}.{c}" for t, c in self.columns)


_UNRESOLVED = re.compile(r"Column '([^']+)' could not be resolved|Unknown column: (\S+)")


def parse_select(sql: str) -> exp.Expression:
    """One SELECT statement, parsed; SqlRefError for anything else."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except Exception as e:  # noqa: BLE001 - sqlglot on arbitrary agent text may raise anything
        errors = getattr(e, "errors", None)
        if errors and isinstance(errors[0], dict):
            err = errors[0]
            what = str(err.get("description", "")).split(" <Token")[0].split(". Line")[0]
            raise SqlRefError(f"could not parse the SQL near line {err.get('line')}, column {err.get('col')}: "
                              f"{what[:120]}") from None
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SqlRefError(f"could not parse the SQL: {first.split(' <Token')[0][:160]}") from None
    if not statements:
        raise SqlRefError("empty SQL")
    if len(statements) > 1:
        raise SqlRefError("one statement at a time")
    stmt = statements[0]
    if not isinstance(stmt, exp.Query):
        raise SqlRefError(f"only SELECT queries are allowed, not {stmt.key.upper()}")
    return stmt


_ANALYSED_MAX = 4096


def analyse(sql: str, meta: DbMeta) -> SqlRefs:
    """The real tables and columns `sql` touches; SqlRefError if it does not parse, is not
    one SELECT, or names a table or column that does not exist (memoised per schema)."""
    memo = meta._analysed
    got = memo.get(sql)
    if got is None:
        try:
            got = _analyse(sql, meta)
        except SqlRefError as e:
            got = e
        if len(memo) >= _ANALYSED_MAX:
            memo.clear()
        memo[sql] = got
    if isinstance(got, SqlRefError):
        raise SqlRefError(str(got), list(got.unknown))
    return got


def _analyse(sql: str, meta: DbMeta) -> SqlRefs:
    stmt = parse_select(sql)
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    named: set[str] = set()
    unknown: list[str] = []
    for t in stmt.find_all(exp.Table):
        if not t.name:
            raise SqlRefError("table functions and unnamed tables are not allowed")
        if t.db and t.db.lower() != "main":
            raise SqlRefError(f"'{t.db}.{t.name}': only this database's own tables can be queried")
        low = t.name.lower()
        if low in ctes and not t.db:
            continue
        if meta.table(low) is None:
            unknown.append(t.name)
        named.add(low)
    if unknown:
        raise SqlRefError(f"no such table: {', '.join(sorted(set(unknown)))}", sorted(set(unknown)))
    try:
        q = qualify(stmt.copy(), schema=meta.sqlglot_schema(named), dialect="sqlite",
                    validate_qualify_columns=True)
    except Exception as e:  # noqa: BLE001 - sqlglot's optimizer raises several types on bad input
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        m = _UNRESOLVED.search(msg)
        bad = [next(g for g in m.groups() if g)] if m else []
        what = f"no such column (or ambiguous): {bad[0]}" if bad else f"could not resolve the query: {msg[:200]}"
        raise SqlRefError(what, bad) from None
    tables: set[str] = set()
    columns: set[tuple[str, str]] = set()
    try:
        scopes = traverse_scope(q)
    except Exception as e:  # noqa: BLE001 - as above
        raise SqlRefError(f"could not resolve the query: {str(e)[:200]}") from None
    for scope in scopes:
        for source in scope.sources.values():
            if isinstance(source, exp.Table) and source.name.lower() in named:
                tables.add(source.name.lower())
        for col in scope.columns:
            source = scope.sources.get(col.table)
            if isinstance(source, exp.Table) and source.name.lower() in named:
                columns.add((source.name.lower(), col.name.lower()))
    tables |= {t for t in named}
    real_t = {t: meta.tables[t].name for t in tables}
    out_cols = set()
    for t, c in columns:
        info = meta.tables[t].column(c)
        if info is None:     # qualify accepted it but the table lacks it: treat as unknown
            raise SqlRefError(f"no such column: {meta.tables[t].name}.{c}", [c])
        out_cols.add((real_t[t], info.name))
    return SqlRefs(frozenset(real_t.values()), frozenset(out_cols))


def swap_table(sql: str | exp.Expression, table: str, replacement: str) -> str:
    """`sql` (text, or a statement `parse_select` returned: parse once, swap many) with every
    reference to `table` replaced by `replacement` (aliased as the old name when it had no
    alias, so qualified column references still resolve)."""
    stmt = parse_select(sql) if isinstance(sql, str) else sql
    low = table.lower()

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name.lower() == low:
            new = node.copy()
            new.set("this", exp.to_identifier(replacement))
            if not node.alias:
                new.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
            return new
        return node

    return stmt.transform(rename).sql(dialect="sqlite")
