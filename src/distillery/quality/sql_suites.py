"""The SQL track's task contract: the `tasks` suite's expectations plus what a SQL task must
carry (a question and a database, one gold SELECT with its schema, a reference solution that
proposes exactly that schema, no question twice on one database).

A module of its own, not an entry of `suites.SUITES`: adding it there would change a file
every gated stage depends on. `gate(frame, SQL_TASKS, ...)` takes it like any suite.
"""

from __future__ import annotations

import json

import polars as pl

from distillery.quality.suites import (
    Refs,
    Suite,
    _derive_tasks,
    _task_expectations,
    holds,
    one_of,
    unique,
)
from distillery.types import TASK_SCHEMA


def _sql_task_expectations(refs: Refs) -> list:
    return [
        *_task_expectations(refs),
        *one_of("env", ("sql",)),
        *one_of("split", ("train", "test")),
        *holds("_sql_state_ok", "initial_state has a non-empty question and names its database "
                                "(db with siblings, or db_spec)", show=("task_id", "initial_state")),
        *holds("_sql_gold_ok", "checks hold one execution check whose gold_sql is one SELECT and one "
                               "schema check with tables and table.column columns", show=("task_id", "checks")),
        *holds("_sql_reference_ok", "the reference solution proposes exactly the gold schema, then "
                                    "executes and submits the gold SQL", show=("task_id", "reference_solution")),
        *unique("_sql_question_key"),
    ]


def _sql_row_facts(state_text: str | None, checks_text: str | None,
                   solution_text: str | None) -> tuple[bool | None, bool | None, bool | None, str | None]:
    import sqlglot
    from sqlglot import exp

    try:
        state, checks, solution = json.loads(state_text), json.loads(checks_text), json.loads(solution_text)
    except (TypeError, ValueError):
        return None, None, None, None          # unparseable JSON is _json_ok's business
    if not (isinstance(state, dict) and isinstance(checks, list) and isinstance(solution, list)):
        return None, None, None, None
    question = state.get("question")
    db = state.get("db")
    state_ok = isinstance(question, str) and bool(question.strip()) and (
        (isinstance(db, str) and bool(db) and isinstance(state.get("siblings"), list))
        or isinstance(state.get("db_spec"), dict))
    execs = [c for c in checks if isinstance(c, dict) and c.get("type") == "execution"]
    schemas = [c for c in checks if isinstance(c, dict) and c.get("type") == "schema"]
    gold_ok, gold = False, ""
    if len(execs) == 1 and len(schemas) == 1:
        gold = str(execs[0].get("gold_sql", ""))
        try:
            parsed = [e for e in sqlglot.parse(gold, read="sqlite") if e is not None]
            one_select = len(parsed) == 1 and isinstance(parsed[0], exp.Query)
        except Exception:  # noqa: BLE001 - any parser failure means "not one SELECT"
            one_select = False
        tables, columns = schemas[0].get("tables"), schemas[0].get("columns")
        gold_ok = one_select and isinstance(tables, list) and bool(tables) and isinstance(columns, list) \
            and all(isinstance(c, str) and "." in c for c in columns)
    ref_ok = False
    if gold_ok and len(solution) >= 3:
        tools = [c.get("tool") for c in solution if isinstance(c, dict)]
        props = [c.get("args", {}) for c in solution if isinstance(c, dict) and c.get("tool") == "propose_schema"]
        split = lambda text: sorted(x.strip().lower() for x in str(text).split(",") if x.strip())  # noqa: E731
        ref_ok = (tools[-2:] == ["execute_sql", "submit"] and len(props) == 1
                  and solution[-1].get("args", {}).get("sql") == gold
                  and split(props[0].get("tables", "")) == sorted(t.lower() for t in schemas[0]["tables"])
                  and split(props[0].get("columns", "")) == sorted(c.lower() for c in schemas[0]["columns"]))
    key = None
    if state_ok:
        where = json.dumps(db if isinstance(db, str) and db else state.get("db_spec"), sort_keys=True)
        key = f"{where}|{question.strip()}"
    return state_ok, gold_ok if execs or schemas else False, ref_ok, key


def _derive_sql_tasks(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    frame = _derive_tasks(frame, refs)
    facts = [_sql_row_facts(s, c, r) for s, c, r in
             frame.select("initial_state", "checks", "reference_solution").iter_rows()]
    return frame.with_columns(
        pl.Series("_sql_state_ok", [f[0] for f in facts], dtype=pl.Boolean),
        pl.Series("_sql_gold_ok", [f[1] for f in facts], dtype=pl.Boolean),
        pl.Series("_sql_reference_ok", [f[2] for f in facts], dtype=pl.Boolean),
        pl.Series("_sql_question_key", [f[3] for f in facts], dtype=pl.String),
    )


SQL_TASKS = Suite(
    name="sql_tasks",
    id_columns=("task_id",),
    schema=TASK_SCHEMA,
    expectations=_sql_task_expectations,
    derive=_derive_sql_tasks,
    description="SQL tasks: the tasks contract, a question and a database, one gold SELECT with its schema, "
                "a reference solution that proposes that schema, no question twice on one database.",
)

