"""SqlEnv: the four phases are enforced by the environment, every bad input is an observation
(never an exception, never a change to a database), observations are short, scoring reads
only what the policy wrote, and the state hash is deterministic."""

from __future__ import annotations

import hashlib
import json

import pytest
from tests.envs.sql.conftest import db_path, play

from distillery.envs.actions import format_call
from distillery.envs.sql.env import SqlEnv, task_checks
from distillery.types import Task, ToolCall


def first(small_set, *, min_tables: int = 1, split: str = "train") -> Task:
    return next(t for t in small_set.tasks if t.split == split and len(t.checks[1]["tables"]) >= min_tables)


def call(env: SqlEnv, tool: str, **args):
    return env.step(format_call(ToolCall(tool, args)))


def explore_and_propose(env: SqlEnv, task: Task):
    """The reference solution up to (and with) its proposal."""
    env.reset(task)
    for c in task.reference_solution:
        res = env.step(format_call(c))
        assert res.valid, res.observation
        if c.tool == "propose_schema":
            return res
    raise AssertionError("no proposal in the reference solution")


def digest(task: Task) -> list[str]:
    paths = [db_path(task), *map(type(db_path(task)), task.initial_state["siblings"])]
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


# ---- the oracle and the protocol -------------------------------------------------------


def test_the_reference_solution_scores_one_with_every_check_passed(small_set, env):
    for task in small_set.tasks[:12]:
        played = play(env, task, None)
        assert played.success and played.score == 1.0, task.task_id
        assert all(c.passed for c in env.verify().checks)
        out = env.outcome()
        assert out.proposal_step == [c.tool for c in task.reference_solution].index("propose_schema")
        assert out.schema is not None and out.schema.reward == 1.0 and out.execution_reward == 1.0


def test_explore_refuses_sql_and_counts_the_violation(small_set, env):
    task = first(small_set)
    gold, _, _ = task_checks(task)
    env.reset(task)
    for tool in ("execute_sql", "submit"):
        res = call(env, tool, sql=gold)
        assert not res.valid and not res.done and "EXPLORE" in res.observation
    assert call(env, "list_tables").valid and call(env, "search_tables", query="a").valid
    out = env.outcome()
    assert len(out.violations) == 2 and not out.submitted
    assert not env.verify().success


def test_a_proposal_is_required_and_its_identifiers_must_exist(small_set, env):
    task = first(small_set)
    env.reset(task)
    table = task.checks[1]["tables"][0]
    res = call(env, "propose_schema", tables=f"{table}, no_such_table", columns="")
    assert not res.valid and "no_such_table" in res.observation and env.phase == "explore"
    res = call(env, "propose_schema", tables=table, columns=f"{table}.no_such_column")
    assert not res.valid and env.phase == "explore"
    res = call(env, "propose_schema", tables=table, columns="other_table.x")
    assert not res.valid and "not among the proposed tables" in res.observation
    assert len(env.outcome().hallucinated) == 2
    res = call(env, "propose_schema", tables=table, columns=f"{table}.*")
    assert res.valid and env.phase == "generate"


def test_re_proposing_is_allowed_and_the_last_proposal_is_the_boundary(small_set, env):
    task = first(small_set)
    explore_and_propose(env, task)
    first_step = env.proposal_step
    tables, columns = task.checks[1]["tables"], task.checks[1]["columns"]
    own = next(c for c in columns if c.startswith(tables[0] + "."))
    assert call(env, "propose_schema", tables=tables[0], columns=own).valid
    assert env.proposal_step > first_step and env.proposal_tables == [tables[0]]
    assert env.outcome().schema.columns.recall == pytest.approx(1 / len(columns))


def test_sql_outside_the_proposal_is_an_error_and_a_violation(small_set, env):
    task = first(small_set, min_tables=2)
    gold, tables, columns = task_checks(task)
    explore_and_propose(env, task)
    call(env, "propose_schema", tables=tables[0], columns=", ".join(c for c in columns if c.startswith(tables[0] + ".")))
    res = call(env, "execute_sql", sql=gold)
    assert not res.valid and "outside the proposal" in res.observation
    assert len(env.outcome().violations) == 1


def test_submit_needs_a_query_run_under_the_current_proposal(small_set, env):
    task = first(small_set)
    gold, _, _ = task_checks(task)
    explore_and_propose(env, task)
    res = call(env, "submit", sql=gold)
    assert not res.valid and "execute_sql first" in res.observation
    assert call(env, "execute_sql", sql=gold).valid and env.phase == "confirm"
    res = call(env, "submit", sql=gold)
    assert res.valid and res.done
    again = call(env, "list_tables")
    assert again.done and not again.valid and "over" in again.observation
    assert env.verify().success


# ---- exploration tools --------------------------------------------------------------


def test_exploration_is_paginated_and_observations_are_short(small_set, env):
    task = first(small_set)
    env.reset(task)
    n = len(env.meta.tables)
    pages = -(-n // 30)
    assert f"page 1/{pages}" in call(env, "list_tables").observation
    assert call(env, "list_tables", page=pages).valid
    assert not call(env, "list_tables", page=pages + 1).valid
    assert not call(env, "list_tables", page=0).valid
    assert not call(env, "search_tables", query="a", page=10**30).valid
    obs = [call(env, "search_tables", query=q).observation for q in ("a", "id", "xyzzy")]
    obs += [call(env, "search_columns", query="id").observation,
            call(env, "describe_table", table=task.checks[1]["tables"][0]).observation,
            call(env, "sample_rows", table=task.checks[1]["tables"][0], n=5).observation]
    assert all(len(o) <= 1500 for o in obs) and "No table matches 'xyzzy'" in obs[2]
    assert not call(env, "sample_rows", table=task.checks[1]["tables"][0], n=10**9).valid
    assert not call(env, "describe_table", table="x" * 5000).valid


def test_the_catalogue_is_the_environments_own_and_not_a_table(small_set, env):
    env.reset(first(small_set))
    assert "data_dictionary" not in call(env, "list_tables").observation
    assert not call(env, "describe_table", table="data_dictionary").valid


# ---- bad input -------------------------------------------------------------------------


HOSTILE_SQL = [
    "DROP TABLE {t}", "DELETE FROM {t}", "UPDATE {t} SET {c} = 0", "INSERT INTO {t} DEFAULT VALUES",
    "CREATE TABLE z (a)", "ATTACH DATABASE '/tmp/evil.db' AS e", "PRAGMA writable_schema = 1", "VACUUM",
    "SELECT load_extension('/tmp/evil')", "SELECT random()", "SELECT {c} FROM {t}; DROP TABLE {t}",
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r",
    "SELECT COUNT(*) FROM " + ", ".join(f"{{t}} AS a{i}" for i in range(12)),
    "SELECT zeroblob(900000000)", "SELECT * FROM sqlite_master", "SELECT * FROM base.{t}",
    "SELECT * FROM pragma_table_info('{t}')", "SELEC {c} FROM {t}", "", "SELECT " + "(" * 400 + "1" + ")" * 400,
    "SELECT 1 " + "x" * 5000,
]


@pytest.mark.parametrize("i", range(len(HOSTILE_SQL) + 1))
def test_hostile_sql_is_an_observation_and_never_changes_a_database(small_set, env, i):
    task = first(small_set)
    before = digest(task)
    explore_and_propose(env, task)
    t, col = task.checks[1]["columns"][0].split(".")
    # widen the proposal to the whole table so that only the SQL itself is refused
    assert call(env, "propose_schema", tables=t, columns=f"{t}.*").valid
    for tool in ("execute_sql", "submit"):
        if i == len(HOSTILE_SQL):     # non-UTF-8 text inside valid JSON (a lone surrogate escape)
            res = env.step(json.dumps({"tool": tool, "args": {"sql": f"SELECT '\\udcff' FROM {t}"}}).replace("\\\\", "\\"))
        else:
            res = call(env, tool, sql=HOSTILE_SQL[i].format(t=t, c=col))
        # a lone surrogate is refused by the action parser, before any SQL runs
        prefix = "Invalid action:" if i == len(HOSTILE_SQL) else "Error:"
        assert not res.valid and res.observation.startswith(prefix), res.observation
        res.observation.encode("utf-8")
    assert env.phase in ("generate", "confirm") and env.submitted is None
    assert digest(task) == before


@pytest.mark.parametrize("text", [
    "", "   ", "drop_everything()", "search_tables(", "search_tables(query=1+1)", "search_tables(query='a', page='x')",
    'search_tables(query="' + "a" * 9000 + '")', "{\"tool\": \"list_tables\", \"args\": [1]}",
    "__import__('os').system('rm -rf /')", "list_tables(page=-3)", "describe_table(table=\"\\udcff\")",
    "sample_rows(table=\"x\", n=\"lots\")", "execute_sql(sql=\"SELECT '\udcff'\")", "propose_schema(tables=\"" + ",".join(["t"] * 50) + "\", columns=\"\")",
    "submit(sql=\"SELECT 1\", extra=1)", "finish()",
])
def test_malformed_actions_and_absurd_arguments_are_observations(small_set, env, text):
    task = first(small_set)
    before = digest(task)
    env.reset(task)
    res = env.step(text)
    assert not res.valid and res.error and not res.done
    res.observation.encode("utf-8")
    assert digest(task) == before


def test_step_before_reset_is_an_observation():
    e = SqlEnv()
    res = e.step("list_tables()")
    assert not res.valid and res.done
    e.close()


# ---- scoring -----------------------------------------------------------------------


def run_to_submit(env: SqlEnv, task: Task, sql: str):
    explore_and_propose(env, task)
    _, tables, _ = task_checks(task)
    # a proposal wide enough for any query over the gold tables
    assert call(env, "propose_schema", tables=", ".join(tables), columns=", ".join(f"{t}.*" for t in tables)).valid
    assert call(env, "execute_sql", sql=sql).valid
    assert call(env, "submit", sql=sql).valid
    return env.verify()


def test_a_decoy_using_answer_fails(small_set, env):
    from distillery.envs.sql.schema import swap_table

    task = first(small_set)
    gold, tables, _ = task_checks(task)
    explore_and_propose(env, task)
    _, _, columns = task_checks(task)
    need = {c.split(".")[1].lower() for c in columns if c.startswith(tables[0] + ".")}
    decoy = next(t.name for t in env.meta.tables.values() if t.name != tables[0]
                 and tables[0].lower() in t.name.lower() and any(x in t.name.lower() for x in ("bak", "old", "stg"))
                 and need <= {c.name.lower() for c in t.columns})
    wrong = swap_table(gold, tables[0], decoy)
    call(env, "describe_table", table=decoy)
    assert call(env, "propose_schema", tables=", ".join([*tables, decoy]),
                columns=", ".join(f"{t}.*" for t in [*tables, decoy])).valid
    assert call(env, "execute_sql", sql=wrong).valid and call(env, "submit", sql=wrong).valid
    v = env.verify()
    assert not v.success and v.score == 0.0 and not v.checks[0].passed
    assert env.outcome().execution_reward == 0.2           # ran, but wrong


def test_a_constant_answer_right_on_the_main_database_fails_on_the_siblings(small_set, env):
    task = next(t for t in small_set.tasks if t.family == "sql_count_cat")
    gold, _, _ = task_checks(task)
    from distillery.envs.sql.engine import ReadOnlyDb

    db = ReadOnlyDb(db_path(task))
    value = db.query(gold).rows[0][0]
    sib_values = [ReadOnlyDb(p, base=db_path(task)).query(gold).rows[0][0] for p in task.initial_state["siblings"]]
    db.close()
    v = run_to_submit(env, task, f"SELECT {value}")
    assert v.checks[0].passed                                 # right on the main database
    assert v.checks[1].passed == all(s == value for s in sib_values)
    assert v.success == all(s == value for s in sib_values)


def test_row_order_does_not_matter_and_column_order_does(small_set, env):
    task = next(t for t in small_set.tasks if t.family in ("sql_group_count", "sql_group_sum"))
    gold, _, _ = task_checks(task)
    assert run_to_submit(env, task, gold + " ORDER BY 2 DESC").success
    select, rest = gold[len("SELECT "):].split(" FROM ", 1)
    a, b = select.split(", ", 1)
    assert not run_to_submit(env, task, f"SELECT {b}, {a} FROM {rest}").success


def test_schema_f1_reads_the_last_proposal(small_set, env):
    task = first(small_set, min_tables=2)
    gold, tables, columns = task_checks(task)
    explore_and_propose(env, task)
    assert call(env, "propose_schema", tables=", ".join(tables), columns=columns[0]).valid
    sc = env.outcome().schema
    assert sc.tables.f1 == 1.0 and sc.columns.precision == 1.0
    assert sc.columns.recall == pytest.approx(1 / len(columns))
    assert not env.verify().checks[2].passed and "table_f1=1.000" in env.verify().checks[2].detail


def test_identifiers_no_tool_showed_count_as_hallucinated(small_set, env):
    task = first(small_set)
    gold, tables, columns = task_checks(task)
    env.reset(task)                                           # no exploration at all
    assert call(env, "propose_schema", tables=", ".join(tables), columns=", ".join(columns)).valid
    assert call(env, "execute_sql", sql=gold).valid and call(env, "submit", sql=gold).valid
    v = env.verify()
    assert v.success                                          # right answer ...
    hall = next(c for c in v.checks if c.type == "hallucination")
    assert not hall.passed and "no tool had shown" in hall.detail   # ... from names it never saw


def test_a_nonexistent_column_is_a_hallucination(small_set, env):
    task = first(small_set)
    explore_and_propose(env, task)
    t = task.checks[1]["tables"][0]
    res = call(env, "execute_sql", sql=f"SELECT made_up_column FROM {t}")
    assert not res.valid and "made_up_column" in res.observation
    assert any("made_up_column" in h for h in env.outcome().hallucinated)


def test_tool_output_is_not_an_answer(small_set, env):
    task = first(small_set)
    gold, _, _ = task_checks(task)
    explore_and_propose(env, task)
    assert call(env, "execute_sql", sql=gold).valid            # the right rows were shown ...
    v = env.verify()
    assert not v.success and v.checks[0].detail == "no SQL was submitted"   # ... but nothing was answered


# ---- determinism -----------------------------------------------------------------------


def test_state_hash_is_deterministic_and_follows_the_protocol(small_set):
    task = first(small_set)
    hashes = []
    for _ in range(2):
        e = SqlEnv()
        e.reset(task)
        h0 = e.state_hash()
        e.step("list_tables()")
        assert e.state_hash() == h0                             # looking changes nothing
        seq = [h0]
        for c in task.reference_solution:
            seq.append(e.step(format_call(c)).state_hash)
        hashes.append(seq)
        e.close()
    assert hashes[0] == hashes[1]
    assert len(set(hashes[0])) == 4                             # explore, generate, confirm, done


def test_a_task_is_data(small_set):
    task = first(small_set)
    row = task.to_row()
    assert Task.from_row(json.loads(json.dumps(row))).to_row() == row
    assert task.env == "sql" and "question" in task.initial_state and "db" in task.initial_state
