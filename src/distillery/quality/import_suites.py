"""The import gate's contracts: every record read from a user's logs, and the tasks an import
derives from them.

`IMPORT_RECORDS` gates `records.parquet`, one row per record read (`types.IMPORT_RECORD_SCHEMA`).
The importer (`distillery.importers`) writes what it found against each rule of
`types.IMPORT_RULES` into that rule's `rule_<kind>` column (an empty list: the rule holds); the
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
from distillery.types import (
    IMPORT_FORMATS,
    IMPORT_RECORD_SCHEMA,
    IMPORT_RULES,
    IMPORT_VERDICTS,
    KEPT_AS_FAILURE_KINDS,
    SPLITS,
    TASK_SCHEMA,
)

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
