"""SqlEnv: answer a question over an unknown, noisy SQLite schema in four phases.

The phases are enforced here, not only by the prompt:

- EXPLORE: only metadata tools (search_tables, list_tables, describe_table,
  search_columns, sample_rows). execute_sql and submit are refused (a violation).
- PROPOSE: propose_schema(tables, columns) commits to the tables and columns the answer
  needs; every named identifier must exist. Re-proposing is allowed; the last proposal is
  the boundary (its step index is `SqlOutcome.proposal_step`).
- GENERATE: execute_sql runs one SELECT. A query touching a table or column outside the
  proposal comes back as an error and counts as a violation. Metadata tools stay allowed.
- CONFIRM: once a query ran under the current proposal, submit(sql) ends the episode.

Every database is opened read-only (engine.ReadOnlyDb); a bad action — malformed text, an
unknown tool, SQL that writes, attaches, loads extensions, recurses without end or runs
long, non-UTF-8 text, absurd arguments — is an observation saying so (`valid=False`),
never an exception and never a change to a database.

Scoring (`verify`) reads only what the policy wrote: its proposal and its SQL. See
scoring.py for the rules; `success` is test-suite execution accuracy and `score` is 1.0 or
0.0; schema F1, hallucinated identifiers and protocol violations are reported as checks
(and as numbers by `outcome()`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from distillery.envs.actions import parse_action
from distillery.envs.sql.engine import Limits, QueryError, ReadOnlyDb, format_rows, same_result
from distillery.envs.sql.generator import DbSpec, build_database
from distillery.envs.sql.prefill import DEFAULT_SCHEMA_CHARS, SCHEMA_PROMPTS, schema_prompt_text
from distillery.envs.sql.schema import (
    DbMeta,
    SqlRefError,
    SqlRefs,
    TableInfo,
    analyse,
    load_meta,
    query_words,
    search_columns,
    search_tables,
)
from distillery.envs.sql.scoring import SqlOutcome, schema_score
from distillery.envs.sql.tools import TOOL_SPECS
from distillery.types import CheckResult, StepResult, Task, Verification

PAGE_SEARCH = 8
PAGE_LIST = 30
PAGE_COLUMNS = 10
PAGE_DESCRIBE = 25
MAX_SAMPLE_ROWS = 5
MAX_PROPOSED_TABLES = 10
MAX_PROPOSED_COLUMNS = 80
MAX_QUERY_CHARS = 100
MAX_SQL_CHARS = 4000
MAX_COMMENT = 60
SHOWN_RESULT_ROWS = 5
OBS_ROWS_FETCHED = 200

EXPLORE, GENERATE, CONFIRM, DONE = "explore", "generate", "confirm", "done"

# Gold results by (database, overlay, gold SQL): K samples of one task run the same gold.
_GOLD_CACHE: dict[tuple[str, str, str], list[tuple[Any, ...]] | None] = {}
_GOLD_CACHE_MAX = 20_000


class ToolError(Exception):
    """A tool call that cannot be carried out; the message is the observation."""


def _clean(text: str) -> str:
    """Observations are valid UTF-8 whatever the agent sent (lone surrogates replaced)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def default_cache_dir() -> Path:
    env = os.environ.get("DISTILLERY_SQL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "distillery" / "sql"


def task_checks(task: Task) -> tuple[str, list[str], list[str]]:
    """The gold SQL, tables and columns a task's checks carry."""
    gold_sql, tables, columns = "", [], []
    for c in task.checks:
        if c.get("type") == "execution":
            gold_sql = str(c["gold_sql"])
        elif c.get("type") == "schema":
            tables, columns = list(c["tables"]), list(c["columns"])
    if not gold_sql:
        raise ValueError(f"task {task.task_id}: no 'execution' check with a gold_sql")
    return gold_sql, tables, columns


class SqlEnv:
    name = "sql"

    def __init__(self, root: str | None = None, cache_dir: str | None = None,
                 max_vm_steps: int | None = None, time_limit_s: float | None = None,
                 schema_prompt: str = "none", schema_prompt_chars: int = DEFAULT_SCHEMA_CHARS,
                 propose_phase: bool = True) -> None:
        """`schema_prompt` ("none" | "full" | "gold"), `schema_prompt_chars` and
        `propose_phase` are the baselines' options (prefill.py); the defaults are the
        unknown-schema setting with its four phases."""
        if schema_prompt not in SCHEMA_PROMPTS:
            raise ValueError(f"schema_prompt={schema_prompt!r}: one of {', '.join(SCHEMA_PROMPTS)}")
        self.schema_prompt = schema_prompt
        self.schema_prompt_chars = int(schema_prompt_chars)
        self.propose_phase = bool(propose_phase)
        self.root = Path(root or os.environ.get("DISTILLERY_SQL_ROOT") or os.getcwd())
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        base = Limits()
        self.limits = Limits(max_vm_steps=max_vm_steps or base.max_vm_steps,
                             time_limit_s=time_limit_s or base.time_limit_s)
        self.task: Task | None = None
        self.db_path: Path | None = None
        self.sibling_paths: list[Path] = []
        self.meta: DbMeta | None = None
        self._main: ReadOnlyDb | None = None
        self._siblings: dict[str, ReadOnlyDb] = {}
        self._reset_episode()

    # ---- protocol -------------------------------------------------------------------

    def _reset_episode(self) -> None:
        self.phase = EXPLORE
        self.t = 0
        self.proposal_tables: list[str] = []
        self.proposal_columns: set[tuple[str, str]] = set()
        self.proposal_step = -1
        self.submitted: str | None = None
        self.shown_tables: set[str] = set()
        self.shown_columns: set[tuple[str, str]] = set()
        self.hallucinated: list[str] = []
        self.violations: list[str] = []

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def _database(self, state: dict[str, Any]) -> tuple[Path, list[Path]]:
        if "db" in state:
            main = self.resolve(str(state["db"]))
            sibs = [self.resolve(str(s)) for s in state.get("siblings", [])]
        elif "db_spec" in state:
            spec = DbSpec.from_dict(state["db_spec"])
            main = self.cache_dir / f"{spec.domain}-{spec.style}-{spec.digest()}.sqlite"
            built = build_database(spec, main) if not main.exists() else None
            sibs = built.siblings if built else [main.with_name(f"{main.stem}.sib{i}{main.suffix}")
                                                 for i in range(1, spec.n_siblings + 1)]
            if any(not s.exists() for s in sibs):
                sibs = build_database(spec, main).siblings
        else:
            raise ValueError("a SQL task's initial_state names its database as 'db' (a path) or 'db_spec'")
        for p in [main, *sibs]:
            if not p.is_file():
                raise FileNotFoundError(f"database {p} not found: generate it first (the sql_tasks or sql_real "
                                        "stage), or run from the directory the task paths are relative to")
        return main, sibs

    def reset(self, task: Task) -> str:
        main, sibs = self._database(task.initial_state)
        task_checks(task)            # fail loudly on a task without gold now, not at verify
        self.task = task
        if main != self.db_path or self._main is None:
            self._close_dbs()
            self._main = ReadOnlyDb(main, limits=self.limits)
            self.db_path = main
        self.sibling_paths = sibs
        self.meta = load_meta(main)
        self._reset_episode()
        if self.schema_prompt == "none" and self.propose_phase:
            return (f"A SQLite database with {len(self.meta.tables)} tables; their names are not given. "
                    "Phase: EXPLORE. Find the tables and columns the question needs with the metadata tools, "
                    "then propose_schema(tables, columns); execute_sql works only after a proposal; "
                    "submit(sql) answers.")
        return self._baseline_observation(task)

    def _baseline_observation(self, task: Task) -> str:
        """The first observation under the baselines' options (prefill.py)."""
        assert self.meta is not None
        steps = ("then propose_schema(tables, columns); execute_sql works only after a proposal; "
                 if self.propose_phase else "then execute_sql to try a query; ")
        if self.schema_prompt == "none":
            return (f"A SQLite database with {len(self.meta.tables)} tables; their names are not given. "
                    f"Find the tables and columns the question needs with the metadata tools, {steps}"
                    "submit(sql) answers.")
        _, gold_tables, _ = task_checks(task)
        pre = schema_prompt_text(self.meta, self.schema_prompt, gold_tables, self.schema_prompt_chars)
        self.shown_tables |= set(pre.tables)
        self.shown_columns |= set(pre.columns)
        return (f"A SQLite database with {len(self.meta.tables)} tables. The metadata tools can look further; "
                f"{steps}submit(sql) answers.\n{pre.text}")

    def step(self, action_text: str) -> StepResult:
        if self.task is None:
            return StepResult("No task: call reset first.", 0.0, True, valid=False, error="no task")
        if self.phase == DONE:
            msg = "The answer was already submitted; the episode is over."
            return StepResult(msg, 0.0, True, valid=False, error=msg, state_hash=self.state_hash())
        step_index = self.t
        self.t += 1
        parsed = parse_action(action_text, TOOL_SPECS)     # total: any input is an observation
        if not parsed.valid or parsed.call is None:
            err = _clean(parsed.error)
            return StepResult(f"Invalid action: {err}", 0.0, False, valid=False, error=err,
                              state_hash=self.state_hash())
        call = parsed.call
        try:
            args_json = json.dumps(call.args, ensure_ascii=False, sort_keys=True)
            args_json.encode("utf-8")
        except UnicodeEncodeError:
            args_json = json.dumps(call.args, ensure_ascii=True, sort_keys=True)
        try:
            obs = getattr(self, f"_t_{call.tool}")(step_index, **call.args)
            valid, error = True, ""
        except ToolError as e:
            obs, valid, error = f"Error: {_clean(str(e))}", False, _clean(str(e))
        return StepResult(_clean(obs), 0.0, self.phase == DONE, tool=call.tool, args_json=args_json,
                          valid=valid, error=error, state_hash=self.state_hash())

    def verify(self) -> Verification:
        assert self.task is not None, "verify before reset"
        out = self.outcome()
        n_sib = len(out.siblings_agree)
        if not out.submitted:
            exec_detail = "no SQL was submitted"
        elif not out.ran:
            exec_detail = "the submitted SQL did not run"
        else:
            exec_detail = "" if out.correct_main else "the result differs from the gold result (as sets of rows)"
        wrong = [str(i + 1) for i, ok in enumerate(out.siblings_agree) if not ok]
        sib_detail = "" if out.submitted and not wrong else (
            f"differs on sibling(s) {', '.join(wrong)}" if out.submitted else "no SQL was submitted")
        sc = out.schema
        schema_detail = ("no proposal" if sc is None else
                         f"table_f1={sc.tables.f1:.3f} column_f1={sc.columns.f1:.3f} reward={sc.reward:.3f}")
        checks = [
            CheckResult("execution", "execution", out.submitted and out.correct_main, exec_detail),
            CheckResult(f"test_suite({n_sib} siblings)", "test_suite",
                        out.submitted and all(out.siblings_agree), sib_detail),
            CheckResult("schema", "schema", sc is not None and sc.exact, schema_detail),
            CheckResult("no_hallucination", "hallucination", not out.hallucinated,
                        "; ".join(out.hallucinated[:5])),
            CheckResult("protocol", "protocol", not out.violations, "; ".join(out.violations[:5])),
        ]
        success = out.submitted and out.correct
        return Verification(1.0 if success else 0.0, success, checks)

    def outcome(self) -> SqlOutcome:
        """The episode's scores as numbers (see scoring.SqlOutcome)."""
        assert self.task is not None and self._main is not None and self.db_path is not None, "outcome before reset"
        gold_sql, gold_tables, gold_columns = task_checks(self.task)
        schema = None
        if self.proposal_step >= 0:
            schema = schema_score(self.proposal_tables, [f"{t}.{c}" for t, c in self.proposal_columns],
                                  gold_tables, gold_columns)
        ran = correct_main = False
        siblings: list[bool] = [False] * len(self.sibling_paths)
        if self.submitted is not None:
            pred = self._rows(self._main, self.submitted)
            ran = pred is not None
            gold = self._gold(self._main, "", gold_sql)
            correct_main = pred is not None and gold is not None and same_result(pred, gold)
            for i, sp in enumerate(self.sibling_paths):
                db = self._sibling(sp)
                p, g = self._rows(db, self.submitted), self._gold(db, str(sp), gold_sql)
                siblings[i] = p is not None and g is not None and same_result(p, g)
        return SqlOutcome(self.submitted is not None, ran, correct_main, siblings, schema, self.proposal_step,
                          list(self.hallucinated), list(self.violations))

    def state_hash(self) -> str:
        if self.task is None:
            return ""
        state = self.task.initial_state
        blob = json.dumps([state.get("db", state.get("db_spec")), state.get("question"), self.phase,
                           sorted(self.proposal_tables), sorted(self.proposal_columns), self.submitted],
                          sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def close(self) -> None:
        self._close_dbs()

    def __del__(self) -> None:  # a forgotten env must not keep file handles
        try:
            self._close_dbs()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to do
            pass

    # ---- databases ------------------------------------------------------------------

    def _close_dbs(self) -> None:
        if getattr(self, "_main", None) is not None:
            self._main.close()
        for db in getattr(self, "_siblings", {}).values():
            db.close()
        self._main, self._siblings, self.db_path = None, {}, None

    def _sibling(self, path: Path) -> ReadOnlyDb:
        key = str(path)
        if key not in self._siblings:
            assert self.db_path is not None
            self._siblings[key] = ReadOnlyDb(path, base=self.db_path, limits=self.limits)
        return self._siblings[key]

    def _rows(self, db: ReadOnlyDb, sql: str) -> list[tuple[Any, ...]] | None:
        try:
            res = db.query(sql)
        except QueryError:
            return None
        return None if res.truncated else res.rows

    def _gold(self, db: ReadOnlyDb, overlay: str, sql: str) -> list[tuple[Any, ...]] | None:
        key = (str(self.db_path), overlay, sql)
        if key not in _GOLD_CACHE:
            if len(_GOLD_CACHE) >= _GOLD_CACHE_MAX:
                _GOLD_CACHE.clear()
            _GOLD_CACHE[key] = self._rows(db, sql)
        return _GOLD_CACHE[key]

    # ---- argument checks ------------------------------------------------------------

    @staticmethod
    def _page(page: int, n_items: int, per_page: int) -> tuple[int, int]:
        last = max(1, -(-n_items // per_page))
        if not isinstance(page, int) or page < 1:
            raise ToolError(f"page must be a whole number from 1 to {last}")
        if page > last:
            raise ToolError(f"page {page} is past the last page ({last})")
        return page, last

    @staticmethod
    def _query(query: str) -> str:
        if len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        words = query_words(query)
        if not words:
            raise ToolError("empty query; give a word such as customer")
        if len(words) > 8:
            raise ToolError("at most 8 words per query")
        return " ".join(words)

    def _table(self, name: str) -> TableInfo:
        assert self.meta is not None
        if len(name) > 200:
            raise ToolError("a table name is at most 200 characters")
        t = self.meta.table(name)
        if t is None:
            raise ToolError(f"no table named '{name.strip()[:80]}'; search_tables or list_tables finds tables")
        return t

    def _show_table(self, t: TableInfo, columns: bool = False) -> None:
        self.shown_tables.add(t.name.lower())
        if columns:
            self.shown_columns |= {(t.name.lower(), c.name.lower()) for c in t.columns}

    # ---- explore --------------------------------------------------------------------

    def _t_search_tables(self, step: int, query: str, page: int = 1) -> str:
        assert self.meta is not None
        q = self._query(query)
        hits = search_tables(self.meta, q)
        if not hits:
            return f"No table matches '{q}'."
        page, last = self._page(page, len(hits), PAGE_SEARCH)
        shown = hits[(page - 1) * PAGE_SEARCH: page * PAGE_SEARCH]
        lines = []
        for t in shown:
            self._show_table(t)
            comment = t.comment if len(t.comment) <= MAX_COMMENT else t.comment[: MAX_COMMENT - 1] + "…"
            lines.append(f"{t.name}" + (f" — {comment}" if comment else ""))
        return f"{len(hits)} table{'s' if len(hits) != 1 else ''} match '{q}' (page {page}/{last}):\n" + "\n".join(lines)

    def _t_list_tables(self, step: int, page: int = 1) -> str:
        assert self.meta is not None
        names = self.meta.names
        page, last = self._page(page, len(names), PAGE_LIST)
        shown = names[(page - 1) * PAGE_LIST: page * PAGE_LIST]
        self.shown_tables |= {n.lower() for n in shown}
        return f"Tables {(page - 1) * PAGE_LIST + 1}-{(page - 1) * PAGE_LIST + len(shown)} of {len(names)} " \
               f"(page {page}/{last}): " + ", ".join(shown)

    def _t_describe_table(self, step: int, table: str, page: int = 1) -> str:
        t = self._table(table)
        page, last = self._page(page, len(t.columns), PAGE_DESCRIBE)
        cols = t.columns[(page - 1) * PAGE_DESCRIBE: page * PAGE_DESCRIBE]
        self.shown_tables.add(t.name.lower())
        head = f"{t.name} ({t.rows} rows)" + (f": {t.comment}" if t.comment else "")
        if last > 1:
            head += f" [columns page {page}/{last}]"
        lines = [head]
        for c in cols:
            self.shown_columns.add((t.name.lower(), c.name.lower()))
            line = f"- {c.name} {c.type or 'ANY'}" + (" PK" if c.pk else "")
            if c.ref is not None:
                line += f" -> {c.ref[0]}" + (f".{c.ref[1]}" if c.ref[1] else "")
                self.shown_tables.add(c.ref[0].lower())
                if c.ref[1]:
                    self.shown_columns.add((c.ref[0].lower(), c.ref[1].lower()))
            if c.comment:
                line += " — " + (c.comment if len(c.comment) <= MAX_COMMENT else c.comment[: MAX_COMMENT - 1] + "…")
            lines.append(line)
        return "\n".join(lines)

    def _t_search_columns(self, step: int, query: str, page: int = 1) -> str:
        assert self.meta is not None
        q = self._query(query)
        hits = search_columns(self.meta, q)
        if not hits:
            return f"No column matches '{q}'."
        page, last = self._page(page, len(hits), PAGE_COLUMNS)
        lines = []
        for t, c in hits[(page - 1) * PAGE_COLUMNS: page * PAGE_COLUMNS]:
            self.shown_tables.add(t.name.lower())
            self.shown_columns.add((t.name.lower(), c.name.lower()))
            comment = c.comment if len(c.comment) <= MAX_COMMENT else c.comment[: MAX_COMMENT - 1] + "…"
            lines.append(f"{t.name}.{c.name} {c.type or 'ANY'}" + (f" — {comment}" if comment else ""))
        return f"{len(hits)} column{'s' if len(hits) != 1 else ''} match '{q}' (page {page}/{last}):\n" + "\n".join(lines)

    def _t_sample_rows(self, step: int, table: str, n: int = 3) -> str:
        assert self._main is not None
        t = self._table(table)
        if not isinstance(n, int) or not 1 <= n <= MAX_SAMPLE_ROWS:
            raise ToolError(f"n must be a whole number from 1 to {MAX_SAMPLE_ROWS}")
        name = '"' + t.name.replace('"', '""') + '"'
        try:
            res = self._main.query(f"SELECT * FROM {name} LIMIT {n}", max_rows=n)
        except QueryError as e:
            raise ToolError(str(e)) from None
        self._show_table(t, columns=True)
        return f"{t.name}: " + format_rows(res, max_rows=n)

    # ---- propose --------------------------------------------------------------------

    def _t_propose_schema(self, step: int, tables: str, columns: str) -> str:
        assert self.meta is not None
        names = [x.strip().strip('"`[]') for x in re.split(r"[,\s]+", tables) if x.strip()]
        if not names:
            raise ToolError("name at least one table")
        if len(names) > MAX_PROPOSED_TABLES or len(tables) > 2000 or len(columns) > 8000:
            raise ToolError(f"a proposal names at most {MAX_PROPOSED_TABLES} tables and {MAX_PROPOSED_COLUMNS} "
                            "columns: commit to the few the question needs")
        chosen: dict[str, TableInfo] = {}
        for n in names:
            t = self.meta.table(n)
            if t is None:
                self.hallucinated.append(f"step {step}: proposed table '{n[:80]}' does not exist")
                raise ToolError(f"no table named '{n[:80]}'; the proposal was not recorded")
            chosen[t.name.lower()] = t
        cols: set[tuple[str, str]] = set()
        for item in (x.strip() for x in columns.split(",")):
            if not item:
                continue
            tname, dot, cname = item.rpartition(".")
            tname, cname = tname.strip().strip('"`[]'), cname.strip().strip('"`[]')
            if not dot:
                owners = [t for t in chosen.values() if t.column(cname) is not None]
                if len(owners) != 1:
                    raise ToolError(f"write '{cname[:80]}' as table.column "
                                    f"({'no' if not owners else 'more than one'} proposed table has it)")
                tname = owners[0].name
            t = chosen.get(tname.lower())
            if t is None:
                raise ToolError(f"column '{item[:80]}': its table is not among the proposed tables")
            if cname == "*":
                cols |= {(t.name, c.name) for c in t.columns}
                continue
            info = t.column(cname)
            if info is None:
                self.hallucinated.append(f"step {step}: proposed column '{t.name}.{cname[:80]}' does not exist")
                raise ToolError(f"{t.name} has no column '{cname[:80]}'; the proposal was not recorded")
            cols.add((t.name, info.name))
        if len(cols) > MAX_PROPOSED_COLUMNS:
            raise ToolError(f"a proposal names at most {MAX_PROPOSED_COLUMNS} columns")
        unseen = [t.name for k, t in chosen.items() if k not in self.shown_tables]
        unseen += [f"{t}.{c}" for t, c in sorted(cols) if (t.lower(), c.lower()) not in self.shown_columns]
        if unseen:
            self.hallucinated.append(f"step {step}: proposed identifiers no tool had shown: {', '.join(unseen[:10])}")
        self.proposal_tables = sorted(t.name for t in chosen.values())
        self.proposal_columns = cols
        self.proposal_step = step
        self.phase = GENERATE
        return (f"Proposal recorded: {len(chosen)} table{'s' if len(chosen) != 1 else ''}, {len(cols)} "
                f"column{'s' if len(cols) != 1 else ''}. Phase: GENERATE. execute_sql may use only these.")

    # ---- generate and confirm -------------------------------------------------------

    def _check_sql(self, step: int, tool: str, sql: str) -> SqlRefs:
        assert self.meta is not None
        if self.phase == EXPLORE and self.propose_phase:
            self.violations.append(f"step {step}: {tool} before any proposal")
            raise ToolError(f"{tool} is refused in the EXPLORE phase: propose_schema(tables, columns) first")
        if not sql.strip():
            raise ToolError("empty SQL")
        if len(sql) > MAX_SQL_CHARS:
            raise ToolError(f"the SQL is longer than {MAX_SQL_CHARS} characters")
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolError("the SQL is not valid UTF-8 text") from None
        try:
            refs = analyse(sql, self.meta)
        except SqlRefError as e:
            if e.unknown:
                self.hallucinated.append(f"step {step}: {tool} names identifiers that do not exist: "
                                         f"{', '.join(u[:80] for u in e.unknown)}")
            raise ToolError(str(e)) from None
        unseen = [t for t in sorted(refs.tables) if t.lower() not in self.shown_tables]
        unseen += [f"{t}.{c}" for t, c in sorted(refs.columns) if (t.lower(), c.lower()) not in self.shown_columns]
        if unseen:
            self.hallucinated.append(f"step {step}: {tool} uses identifiers no tool had shown: {', '.join(unseen[:10])}")
        if not self.propose_phase:
            return refs                  # no Propose phase: nothing limits the query
        allowed_t = {t.lower() for t in self.proposal_tables}
        allowed_c = {(t.lower(), c.lower()) for t, c in self.proposal_columns}
        outside = [t for t in sorted(refs.tables) if t.lower() not in allowed_t]
        outside += [f"{t}.{c}" for t, c in sorted(refs.columns)
                    if t.lower() in allowed_t and (t.lower(), c.lower()) not in allowed_c]
        if outside:
            self.violations.append(f"step {step}: {tool} outside the proposal: {', '.join(outside[:10])}")
            raise ToolError(f"the query uses identifiers outside the proposal: {', '.join(outside[:10])}; "
                            "propose_schema again to include them")
        return refs

    def _t_execute_sql(self, step: int, sql: str) -> str:
        assert self._main is not None
        self._check_sql(step, "execute_sql", sql)
        try:
            res = self._main.query(sql, max_rows=OBS_ROWS_FETCHED)
        except QueryError as e:
            raise ToolError(str(e)) from None
        self.phase = CONFIRM
        return format_rows(res, max_rows=SHOWN_RESULT_ROWS)

    def _t_submit(self, step: int, sql: str) -> str:
        assert self._main is not None
        if self.phase == GENERATE or (self.phase == EXPLORE and not self.propose_phase):
            self.violations.append(f"step {step}: submit before any query ran under the proposal")
            raise ToolError("submit is refused before a query has run under the current proposal: execute_sql first")
        self._check_sql(step, "submit", sql)
        try:
            res = self._main.query(sql, max_rows=OBS_ROWS_FETCHED)
        except QueryError as e:
            raise ToolError(f"{e}; nothing was submitted") from None
        self.submitted = sql
        self.phase = DONE
        n = len(res.rows)
        return f"Submitted ({n}{'+' if res.truncated else ''} row{'s' if n != 1 else ''}). The episode is over."
