"""TRUST-SQL's environment: answer questions over an unknown, noisy SQLite schema (hundreds
of tables, decoy copies, colliding column names, missing or misleading comments) by
exploring with tools, proposing the few relevant tables and columns, generating SQL and
submitting it. See env.py (the four phases), generator.py and questions.py (the data),
scoring.py (the rules) and docs/sql.md.

`ENV` is what the `sql` entry point of `distillery.envs` registers.
"""

from __future__ import annotations

from typing import Any

from distillery.envs.base import EnvSpec
from distillery.envs.sql.domains import domain_words
from distillery.envs.sql.env import SqlEnv
from distillery.envs.sql.naming import STYLES, style_words
from distillery.envs.sql.tools import TOOL_SPECS

DESCRIPTION = (
    "You answer a question about a large SQLite database whose schema you are not given: hundreds of "
    "tables, backup and staging copies, and comments that may be missing or wrong. Phases: explore "
    "(search_tables, list_tables, describe_table, search_columns, sample_rows), then propose_schema "
    "with the tables and columns you need, then execute_sql (only proposed names), then submit(sql)."
)

SQL_WORDS = ("SELECT DISTINCT FROM WHERE JOIN ON AS AND OR NOT IN EXISTS GROUP BY HAVING ORDER ASC DESC LIMIT "
             "OFFSET COUNT SUM AVG MIN MAX ROUND LIKE BETWEEN IS NULL CASE WHEN THEN ELSE END UNION strftime")


def state_texts(state: dict[str, Any]) -> list[str]:
    """What a model reads of a task's state: the question (table names are discovered with
    the tools, never shown up front)."""
    q = state.get("question")
    return [q] if isinstance(q, str) else []


def vocabulary() -> str:
    """Every word a generated schema, question or SQL can use, including the domains and
    naming styles no training task shows."""
    return " ".join([SQL_WORDS, *domain_words(), *style_words()])


def check_profile(name: str) -> None:
    """A SQL task's profile is its naming style ('default': any)."""
    if name != "default" and name not in STYLES:
        raise ValueError(f"unknown SQL profile {name!r}: a profile is a naming style, one of "
                         f"{', '.join(STYLES)} (or 'default')")


ENV = EnvSpec(
    name="sql", factory=SqlEnv, tools=tuple(TOOL_SPECS), description=DESCRIPTION,
    state_texts=state_texts, vocabulary=vocabulary, check_profile=check_profile,
)

__all__ = ["ENV", "TOOL_SPECS", "SqlEnv"]
