"""The import gate's contracts: every record read from a user's logs, and the tasks an import
derives from them.

`IMPORT_RECORDS` gates `records.parquet`, one row per record read (`IMPORT_RECORD_SCHEMA`, below).
The importer (`distillery.importers`) writes what it found against each rule of
`IMPORT_RULES` (below) into that rule's `rule_<kind>` column (an empty list: the rule holds); the
suite turns each into a derived `_ok_<kind>` column and expects it true, so every offending
record lands in the gate's quarantine with the rules it broke, and the GX report counts them
per rule. `verdict` must agree: `rejected` exactly when a rule other than `truncated_success`
is broken, `kept_as_failure` when only that one is.

`IMPORTED_TASKS` is the `tasks` contract for tasks known only from logs: such a task may have
no reference solution (none of its imported episodes succeeded), so `n_ref_steps` may be 0;
everything else is the tasks suite's.

Modules of their own, not entries of `suites.SUITES`, as `sql_suites.py` is: adding them there
would change a file every gated stage depends on.
"""

from __future__ import annotations

import polars as pl

from distillery.quality.suites import (
    Refs,
    Suite,
    _derive_tasks,
    a_at_least_b,
    at_least,
    holds,
    not_null,
    one_of,
    unique,
)
from distillery.types import SPLITS, TASK_SCHEMA

# ---------------------------------------------------------------------------------------
# Imported logs: every record read, judged, and why one was rejected. Here rather than in
# types.py, beside the suite that gates them: types.py is a dependency of every DVC stage, and
# no stage reads imports (adding these there would rerun the whole pipeline for nothing).
# ---------------------------------------------------------------------------------------

IMPORT_FORMATS: tuple[str, ...] = ("openai", "inspect")

# What the import gate checks, one rule per kind: (kind, what a record must satisfy). A record
# that breaks any rule but the last is rejected; one that breaks only the last is kept with its
# outcome turned into a failure. `quality.import_suites` checks them; `importers` finds them.
IMPORT_RULES: tuple[tuple[str, str], ...] = (
    ("malformed", "the record reads as its format says: valid JSON with the documented fields and types"),
    ("first_role", "the first message is a system (or developer) or user message"),
    ("unknown_role", "every role is system, developer, user, assistant or tool"),
    ("unanswered_call", "every tool call has a tool message answering it"),
    ("duplicate_call_id", "no two tool calls share an id"),
    ("unknown_call_id", "every tool message answers a call made before it"),
    ("non_text", "text where text is required: no image, audio or file parts"),
    ("errored", "the run did not end in an error"),
    ("no_outcome", "the record has an outcome (a score or success), or the import assumes success"),
    ("bad_outcome", "the outcome is one number in [0, 1] and agrees with the success label"),
    ("low_score", "the score reaches the import's reward filter (--min-score; off by default)"),
    ("task_conflict", "a known task id comes with that task's instruction"),
    ("test_task", "neither the task nor its instruction belongs to a test split"),
    ("too_long", "the episode fits the student's context"),
    ("secret", "no content looks like a secret or an API key"),
    ("duplicate", "no record kept before has the same instruction and actions (or the same id)"),
    ("conflict", "a record imported before is not imported again with different content"),
    ("truncated_success", "a run that hit a limit or was cut short is not labelled a success "
                          "(such a run is kept as a failure)"),
)
IMPORT_RULE_KINDS: tuple[str, ...] = tuple(kind for kind, _ in IMPORT_RULES)
KEPT_AS_FAILURE_KINDS: tuple[str, ...] = ("truncated_success",)
IMPORT_VERDICTS: tuple[str, ...] = ("kept", "kept_as_failure", "rejected")

# One row per record an import has read (records.parquet), kept or not: where it came from,
# what it logged, and per rule the problems found (empty: the rule holds). Outcome columns are
# as logged, before the gate; the kept episode's own outcome is in episodes.parquet.
IMPORT_RECORD_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.String,     # deterministic: (source, sample, epoch)
    "format": pl.String,         # openai | inspect
    "source": pl.String,         # the file, as given (relative to where the import ran)
    "record": pl.String,         # "line 7" | "sample add_contact-0001 epoch 2"
    "position": pl.Int64,        # the record's place in its file, from 0 (the output's order)
    "line": pl.Int64,            # JSONL line number (null for eval logs)
    "sample": pl.String,
    "epoch": pl.Int64,
    "sha256": pl.String,         # of the record's content as read
    "task_id": pl.String,
    "env": pl.String,
    "model": pl.String,
    "toolset": pl.String,        # key into tools.json ("" when the record declares no tools)
    "n_steps": pl.Int64,
    "n_tokens": pl.Int64,        # the episode's length as the context check measured it
    "logged_success": pl.Boolean,
    "logged_score": pl.Float64,
    "scorer": pl.String,
    "limit": pl.String,          # the limit the run hit or why it was cut short ("" if none)
    "answer": pl.String,         # the final text reply, if any
    "dup_key": pl.String,        # hash of (instruction, actions): what duplicates share
    "verdict": pl.String,
    **{f"rule_{kind}": pl.List(pl.String) for kind in IMPORT_RULE_KINDS},
}

# One row per (record, broken rule): rejects.parquet. `reason` names file and record.
IMPORT_REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,
    "record": pl.String,
    "position": pl.Int64,
    "line": pl.Int64,
    "episode_id": pl.String,
    "sha256": pl.String,
    "kind": pl.String,
    "reason": pl.String,
    "verdict": pl.String,        # rejected | kept_as_failure
}

# ---------------------------------------------------------------------------------------
# records.parquet
# ---------------------------------------------------------------------------------------


def _record_expectations(refs: Refs) -> list:
    checks = [
        *not_null("episode_id", "format", "source", "record", "position", "sha256", "verdict"),
        *unique("episode_id", "sha256"),
        *one_of("format", IMPORT_FORMATS),
        *one_of("verdict", IMPORT_VERDICTS),
        *at_least(0, "position", "n_steps", "n_tokens"),
    ]
    for kind, rule in IMPORT_RULES:
        checks += holds(f"_ok_{kind}", rule, show=(f"rule_{kind}",))
    checks += holds("_verdict_consistent", "verdict is 'rejected' when a rule other than "
                    "truncated_success is broken, 'kept_as_failure' when only that one is, else 'kept'",
                    show=("verdict",))
    return checks


def expected_verdict(broken: list[str]) -> str:
    """The verdict a record's broken rules (kinds) call for."""
    if any(k not in KEPT_AS_FAILURE_KINDS for k in broken):
        return "rejected"
    return "kept_as_failure" if broken else "kept"


def _derive_records(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    kinds = [kind for kind, _ in IMPORT_RULES]
    frame = frame.with_columns(
        (pl.col(f"rule_{k}").list.len() == 0).alias(f"_ok_{k}") for k in kinds)
    consistent = []
    for row in frame.select("verdict", *[f"rule_{k}" for k in kinds]).iter_rows():
        verdict, lists = row[0], row[1:]
        if verdict is None or any(x is None for x in lists):
            consistent.append(None)          # null columns are not_null's to report
            continue
        broken = [k for k, problems in zip(kinds, lists, strict=True) if problems]
        consistent.append(verdict == expected_verdict(broken))
    return frame.with_columns(pl.Series("_verdict_consistent", consistent, dtype=pl.Boolean))


IMPORT_RECORDS = Suite(
    name="import_records",
    id_columns=("source", "record"),
    schema=IMPORT_RECORD_SCHEMA,
    expectations=_record_expectations,
    derive=_derive_records,
    description="Every record read from imported logs, judged against the import rules: a record "
                "that breaks one is quarantined with the rule, and its verdict says so.",
)


# ---------------------------------------------------------------------------------------
# tasks derived from imported logs
# ---------------------------------------------------------------------------------------


def _imported_task_expectations(refs: Refs) -> list:
    return [
        *not_null("task_id", "env", "family", "split", "profile", "instruction",
                  "initial_state", "reference_solution", "checks", "seed", "max_steps",
                  "n_ref_steps"),
        *unique("task_id"),
        *one_of("split", SPLITS),
        *at_least(0, "n_ref_steps", "seed"),
        *at_least(1, "max_steps"),
        *a_at_least_b("max_steps", "n_ref_steps"),
        *holds("_json_ok", "initial_state is a JSON object; reference_solution and checks "
                           "are JSON lists",
               show=("initial_state", "reference_solution", "checks")),
    ]


IMPORTED_TASKS = Suite(
    name="imported_tasks",
    id_columns=("task_id",),
    schema=TASK_SCHEMA,
    expectations=_imported_task_expectations,
    derive=_derive_tasks,
    description="Tasks of imported logs: the tasks contract, except that a task no imported episode "
                "solved has no reference solution (n_ref_steps 0).",
)
