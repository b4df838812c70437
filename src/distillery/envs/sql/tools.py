"""The SQL environment's tools: one declaration each (the JSON schema for function-calling
LLMs, the compact signature for small models, the random policy's argument kinds).
Implementations live in env.py; the phase each tool belongs to is enforced there."""

from __future__ import annotations

from distillery.envs.base import ToolParam as P
from distillery.envs.base import ToolSpec

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec("search_tables", "Find tables whose name or comment contains every word of the query.",
             (P("query", description="words to look for, e.g. customer", kind="text"),
              P("page", type="integer", description="result page, from 1", required=False))),
    ToolSpec("list_tables", "List every table name, 30 per page.",
             (P("page", type="integer", description="page, from 1", required=False),)),
    ToolSpec("describe_table", "Show a table's columns: type, key, foreign key and comment.",
             (P("table", description="table name", kind="name"),
              P("page", type="integer", description="column page, from 1", required=False))),
    ToolSpec("search_columns", "Find columns whose name or comment contains every word of the query.",
             (P("query", description="words to look for, e.g. city", kind="text"),
              P("page", type="integer", description="result page, from 1", required=False))),
    ToolSpec("sample_rows", "Show a few rows of a table.",
             (P("table", description="table name", kind="name"),
              P("n", type="integer", description="rows, 1 to 5", required=False))),
    ToolSpec("propose_schema", "Commit to the tables and columns the answer needs; required before "
             "execute_sql. Columns are written table.column; both lists are comma-separated.",
             (P("tables", description="table names, comma-separated", kind="text"),
              P("columns", description="table.column names, comma-separated", kind="text")), mutates=True),
    ToolSpec("execute_sql", "Run one SELECT that uses only the proposed tables and columns; shows the first rows.",
             (P("sql", description="one SQLite SELECT statement", kind="text"),), mutates=True),
    ToolSpec("submit", "Submit the final SELECT as the answer; the episode ends.",
             (P("sql", description="one SQLite SELECT statement", kind="text"),), mutates=True),
)

TOOLS_BY_NAME = {s.name: s for s in TOOL_SPECS}
EXPLORE_TOOLS = ("search_tables", "list_tables", "describe_table", "search_columns", "sample_rows")
