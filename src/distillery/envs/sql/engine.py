"""Read-only SQLite execution with limits, and how query results are compared.

Every database an episode touches is opened with `mode=ro` (a URI), `PRAGMA query_only`,
an authorizer that allows reading and nothing else (no writes, ATTACH, PRAGMA, extension
loading, nondeterministic functions), SQLite's own size limits, and a progress handler
that stops a query after a number of virtual-machine steps (deterministic) or a wall-clock
limit (a safety net). A refused or failed query raises `QueryError` with a message written
for the agent; nothing else escapes and nothing is ever written.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Progress handler granularity: SQLite calls back every this many VM steps.
_TICK = 1000
_DENIED_FUNCTIONS = frozenset({"load_extension", "random", "randomblob", "changes", "total_changes",
                               "last_insert_rowid", "sqlite_compileoption_get", "sqlite_compileoption_used",
                               "sqlite_source_id", "fts3_tokenizer", "readfile", "writefile", "edit"})
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    sqlite3.SQLITE_RECURSIVE}


@dataclass(frozen=True)
class Limits:
    """How much one query may do."""

    max_vm_steps: int = 20_000_000     # SQLite virtual-machine steps (deterministic)
    time_limit_s: float = 5.0          # wall clock, a safety net behind the step budget
    max_rows: int = 10_000             # rows fetched for scoring; more means "too many rows"
    max_value_bytes: int = 1_000_000   # longest string or blob a query may build
    max_sql_chars: int = 8_000


class QueryError(Exception):
    """A query refused or failed; the message is meant for the agent."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False            # more than Limits.max_rows rows


def ro_uri(path: Path) -> str:
    return f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class ReadOnlyDb:
    """One read-only connection: a database file, or a sibling overlay with its base file
    attached behind it (unqualified names resolve to the overlay's tables first)."""

    def __init__(self, path: str | Path, base: str | Path | None = None, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such database file")
        self.conn = sqlite3.connect(ro_uri(self.path), uri=True, isolation_level=None, check_same_thread=False)
        self.conn.text_factory = lambda b: b.decode("utf-8", "replace")
        if base is not None:
            if not Path(base).is_file():
                raise FileNotFoundError(f"{base}: no such database file")
            self.conn.execute("ATTACH DATABASE ? AS base", (ro_uri(Path(base)),))
        self.conn.execute("PRAGMA query_only = ON")
        lim = self.limits
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, lim.max_value_bytes)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, max(lim.max_sql_chars * 4, 1000))
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 200)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 50)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_FUNCTION_ARG, 32)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 0)
        self.conn.set_authorizer(_authorize)
        self.conn.set_progress_handler(self._tick, _TICK)
        self._steps = 0
        self._deadline = 0.0
        self._stopped = ""

    def _tick(self) -> int:
        self._steps += _TICK
        if self._steps > self.limits.max_vm_steps:
            self._stopped = f"it ran past the limit of {self.limits.max_vm_steps:,} steps"
            return 1
        if time.perf_counter() > self._deadline:
            self._stopped = f"it ran past the limit of {self.limits.time_limit_s:g} s"
            return 1
        return 0

    def query(self, sql: str, max_rows: int | None = None, params: Sequence[Any] = ()) -> QueryResult:
        """Run one read-only statement; raises QueryError (never anything else) on refusal."""
        max_rows = self.limits.max_rows if max_rows is None else max_rows
        if len(sql) > self.limits.max_sql_chars:
            raise QueryError(f"the query is {len(sql)} characters; the limit is {self.limits.max_sql_chars}")
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryError("the query is not valid UTF-8 text") from None
        if "\x00" in sql:
            raise QueryError("the query contains a NUL character")
        self._steps, self._stopped = 0, ""
        self._deadline = time.perf_counter() + self.limits.time_limit_s
        cur = None
        try:
            cur = self.conn.execute(sql, tuple(params))
            if cur.description is None:
                raise QueryError("only SELECT queries are allowed")
            columns = [d[0] for d in cur.description]
            rows = cur.fetchmany(max_rows + 1)
        except QueryError:
            raise
        except sqlite3.Error as e:
            raise QueryError(self._explain(e)) from None
        except (ValueError, OverflowError, MemoryError, UnicodeError) as e:
            raise QueryError(f"the query failed: {e}") from None
        finally:
            if cur is not None:
                try:
                    cur.close()
                except sqlite3.Error:
                    pass
        truncated = len(rows) > max_rows
        return QueryResult(columns, [tuple(r) for r in rows[:max_rows]], truncated)

    def _explain(self, e: sqlite3.Error) -> str:
        msg = str(e)
        low = msg.lower()
        if self._stopped or "interrupted" in low:
            return f"the query was stopped: {self._stopped or 'it ran too long'}; simplify it"
        if "not authorized" in low or "readonly" in low or "read-only" in low or "query_only" in low \
                or "prohibited" in low:
            return ("refused: only reading SELECT queries are allowed (no writes, ATTACH, PRAGMA, "
                    "extensions or random functions)")
        if "one statement" in low:
            return "one statement at a time"
        if "too big" in low or "too many" in low or "too large" in low:
            return f"refused: {msg}"
        return f"SQL error: {msg}"

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


# ---------------------------------------------------------------------------------------
# Comparing results (execution accuracy)
# ---------------------------------------------------------------------------------------


def _norm(v: Any) -> Any:
    # Binary float noise (SUM of 2-decimal amounts) must not decide a comparison: floats are
    # compared at 6 decimals; 2 and 2.0 are equal (Python's == and hash agree on them).
    if isinstance(v, float):
        r = round(v, 6)
        return int(r) if r.is_integer() else r
    return v


def normalise_rows(rows: Sequence[Sequence[Any]]) -> set[tuple[Any, ...]]:
    return {tuple(_norm(v) for v in r) for r in rows}


def same_result(pred: Sequence[Sequence[Any]], gold: Sequence[Sequence[Any]]) -> bool:
    """BIRD's and TRUST-SQL's rule: the two results are equal as sets of rows."""
    return normalise_rows(pred) == normalise_rows(gold)


def format_rows(result: QueryResult, max_rows: int = 5, max_cell: int = 24) -> str:
    """A short text view of a result for an observation."""
    def cell(v: Any) -> str:
        if isinstance(v, bytes):
            s = "x'" + v[:8].hex() + ("…" if len(v) > 8 else "") + "'"
        elif isinstance(v, float):
            s = f"{v:.6g}" if abs(v) < 1e6 else f"{v:.2f}"
        else:
            s = "NULL" if v is None else str(v)
        s = s.replace("\n", " ")
        return s if len(s) <= max_cell else s[: max_cell - 1] + "…"

    head = " | ".join(cell(c) for c in result.columns[:12]) + (" | …" if len(result.columns) > 12 else "")
    lines = [head]
    for r in result.rows[:max_rows]:
        lines.append(" | ".join(cell(v) for v in r[:12]) + (" | …" if len(r) > 12 else ""))
    n = len(result.rows)
    more = "+" if result.truncated else ""
    shown = f" (first {min(n, max_rows)})" if n > max_rows else ""
    return f"{n}{more} row{'s' if n != 1 else ''}{shown}:\n" + "\n".join(lines)
