"""Schema in the prompt instead of discovered with tools: the baselines of TRUST-SQL's
comparison, as options of the SQL environment (env kwargs) and of its tasks' references.

- `schema_prompt="full"`: every table with its columns, one line each in the database's
  listing order, truncated to `schema_prompt_chars` characters at a line boundary (a
  schema too big for the context is cut, as a prompt-filling baseline must cut it).
- `schema_prompt="gold"`: only the gold tables, each with all its columns (the table
  subset prefilled, as if retrieval were perfect; ours: table level, columns not filtered).
- `propose_phase=False`: no Propose phase: `execute_sql` and `submit` need no proposal and
  are not limited to one (`SqlEnv`), and the oracle does not propose.

Identifiers written into the first observation count as shown (the hallucination rule's
"a tool had shown it"). `adapted_reference` rewrites a task's reference solution for these
options: it keeps the search/describe calls only for the gold tables whose gold columns the
prompt does not show, and drops `propose_schema` without the Propose phase, so the oracle's
demonstrations are the shortest correct behaviour under each option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from distillery.envs.sql.schema import DbMeta, TableInfo
from distillery.types import Task, ToolCall

SCHEMA_PROMPTS: tuple[str, ...] = ("none", "full", "gold")
DEFAULT_SCHEMA_CHARS = 2400
EXPLORE_CALLS = ("search_tables", "list_tables", "describe_table", "search_columns", "sample_rows")


@dataclass(frozen=True)
class PrefilledSchema:
    text: str
    tables: frozenset[str]                     # lower-case names written in full
    columns: frozenset[tuple[str, str]]        # (table, column), lower case
    omitted_tables: int                        # tables cut by the character budget


def table_line(t: TableInfo) -> str:
    return f"{t.name}({', '.join(c.name for c in t.columns)})"


def schema_prompt_text(meta: DbMeta, mode: str, gold_tables: Sequence[str] = (),
                       max_chars: int = DEFAULT_SCHEMA_CHARS) -> PrefilledSchema:
    """The schema text a prompt-filling baseline shows (see the module docstring)."""
    if mode not in SCHEMA_PROMPTS or mode == "none":
        raise ValueError(f"schema_prompt={mode!r}: use 'full' or 'gold' (or 'none' for no schema text)")
    if mode == "gold":
        chosen = [meta.table(t) for t in gold_tables]
        tables = [t for t in chosen if t is not None]
        head = f"Relevant tables ({len(tables)}):"
    else:
        tables = [meta.tables[n.lower()] for n in meta.names]
        head = f"Schema ({len(tables)} tables):"
    lines, used = [head], len(head)
    kept: list[TableInfo] = []
    for t in tables:
        line = table_line(t)
        if mode == "full" and used + 1 + len(line) > max_chars:
            break
        lines.append(line)
        used += 1 + len(line)
        kept.append(t)
    omitted = len(tables) - len(kept)
    if omitted:
        lines.append(f"... {omitted} more tables not shown")
    return PrefilledSchema("\n".join(lines), frozenset(t.name.lower() for t in kept),
                           frozenset((t.name.lower(), c.name.lower()) for t in kept for c in t.columns), omitted)


def adapted_reference(task: Task, meta: DbMeta, schema_prompt: str = "none", propose_phase: bool = True,
                      max_chars: int = DEFAULT_SCHEMA_CHARS) -> Task:
    """`task` with its reference solution rewritten for the options (unchanged for the
    defaults). Exploration calls stay for a gold table only when the prompt does not show
    it with every gold column of it; `propose_schema` goes without the Propose phase."""
    if schema_prompt == "none" and propose_phase:
        return task
    tables, columns = _gold(task)
    needed: set[str] = set()
    if schema_prompt == "none":
        needed = {t.lower() for t in tables}
    else:
        shown = schema_prompt_text(meta, schema_prompt, tables, max_chars)
        for t in tables:
            cols = {c.rpartition(".")[2].lower() for c in columns if c.rpartition(".")[0].lower() == t.lower()}
            if t.lower() not in shown.tables or any((t.lower(), c) not in shown.columns for c in cols):
                needed.add(t.lower())
    out: list[ToolCall] = []
    keep_table = ""
    for call in task.reference_solution:
        if call.tool in EXPLORE_CALLS:
            if call.tool == "describe_table":
                keep_table = str(call.args.get("table", "")).lower()
            elif call.tool == "search_tables":
                # the search belongs to the table described next
                keep_table = _next_described(task.reference_solution, call)
            if keep_table in needed:
                out.append(call)
            continue
        if call.tool == "propose_schema" and not propose_phase:
            continue
        out.append(call)
    return replace(task, reference_solution=out)


def _next_described(solution: Sequence[ToolCall], search: ToolCall) -> str:
    after = False
    for call in solution:
        if call is search:
            after = True
        elif after and call.tool == "describe_table":
            return str(call.args.get("table", "")).lower()
    return ""


def _gold(task: Task) -> tuple[list[str], list[str]]:
    for c in task.checks:
        if c.get("type") == "schema":
            return list(c["tables"]), list(c["columns"])
    raise ValueError(f"task {task.task_id}: no 'schema' check")


def task_db(task: Task, root: str | Path | None = None) -> Path:
    """The database file a task names (`db`, relative to `root` or the working directory)."""
    db = task.initial_state.get("db")
    if not isinstance(db, str):
        raise ValueError(f"task {task.task_id}: names no database file ('db')")
    p = Path(db)
    return p if p.is_absolute() or root is None else Path(root) / p
