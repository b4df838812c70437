"""The question templates as task families, for the environment-independent task generator
(`distillery.tasks.generate`, `tasks.env: sql`).

A family `sql_<template>` drafts one task: it draws a database spec from the generator it
is given (a domain, the profile's naming style, a seed), builds that database into the
content-addressed cache (`SqlEnv`'s `cache_dir`, where the environment will find it again:
the task names it by `db_spec`, not by path, so it stays pure data), and keeps the first
candidate of its template that validates (`validate.py`). The generic validator then runs
its own checks (determinism, the oracle, random probes). When no candidate of the template
validates on `ATTEMPTS` databases, the family raises `NoDraft` and the generator rejects the
attempt with that reason ("no two_parents question validated on 4 generated databases"). The `sql_tasks` stage does not go through families: it generates many
questions per database, which is far cheaper.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from distillery.envs.base import Draft, Family, NoDraft
from distillery.envs.sql.domains import DOMAINS
from distillery.envs.sql.env import default_cache_dir
from distillery.envs.sql.generator import DbSpec, build_database
from distillery.envs.sql.naming import STYLES
from distillery.envs.sql.questions import TEMPLATES
from distillery.envs.sql.schema import load_meta
from distillery.envs.sql.taskset import reference_solution, select_questions

DEFAULT_STYLES = ("snake", "snake_abbr", "camel", "upper")
ATTEMPTS = 4


def _drafter(template: str) -> Callable[[random.Random, str], Draft]:
    def draft(rng: random.Random, profile: str) -> Draft:
        style = profile if profile in STYLES else rng.choice(DEFAULT_STYLES)
        for _ in range(ATTEMPTS):
            spec = DbSpec(seed=rng.getrandbits(40), domain=rng.choice(sorted(DOMAINS)), style=style,
                          n_fillers=rng.randint(100, 300), n_siblings=2)
            path = default_cache_dir() / f"{spec.domain}-{spec.style}-{spec.digest()}.sqlite"
            built = build_database(spec, path)
            kept, _rejected = select_questions(built, random.Random(rng.getrandbits(40)), 1, 1, 50, [template])
            if kept:
                cand = kept[0]
                meta = load_meta(built.path)
                hints = {built.layout.tables[t.key]: [t.english.split()[-1], *t.words]
                         for t in DOMAINS[spec.domain].tables}
                return Draft(
                    instruction=cand.question,
                    state={"question": cand.question, "db_spec": spec.to_dict(), "domain": spec.domain,
                           "style": spec.style},
                    solution=reference_solution(meta, cand.sql, cand.tables, cand.columns, hints),
                    checks=[{"type": "execution", "gold_sql": cand.sql, "rule": "set"},
                            {"type": "schema", "tables": list(cand.tables), "columns": list(cand.columns)}],
                )
        raise NoDraft(f"no {template} question validated on {ATTEMPTS} generated databases")
    return draft


FAMILIES: tuple[Family, ...] = tuple(
    Family(name=f"sql_{name}", env="sql", hint=hint, draft=_drafter(name), areas=("sql",))
    for name, (_fn, hint) in TEMPLATES.items()
)
