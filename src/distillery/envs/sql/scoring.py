"""Scoring rules, as pure functions (the environment's `verify` and any trainer share them).

- Execution accuracy (BIRD, TRUST-SQL): the predicted and gold results are equal as sets
  of rows (`engine.same_result`); test-suite accuracy (Spider) additionally requires the
  same agreement on every sibling database. Our readings: floats are compared at 6
  decimals, and the sibling comparison uses the same set rule as the main one.
- Schema score (TRUST-SQL): F1 of the proposed tables and of the proposed columns against
  the gold ones; reward = 0.4 * table F1 + 0.6 * column F1.
- TRUST-SQL's execution reward: 1.0 correct, 0.2 runs but wrong, 0.0 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

TABLE_WEIGHT, COLUMN_WEIGHT = 0.4, 0.6


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float


def prf(pred: Iterable[str], gold: Iterable[str]) -> PRF:
    """Precision, recall and F1 of two sets of identifiers, case-insensitively."""
    p, g = {x.lower() for x in pred}, {x.lower() for x in gold}
    if not p and not g:
        return PRF(1.0, 1.0, 1.0)
    hit = len(p & g)
    precision = hit / len(p) if p else 0.0
    recall = hit / len(g) if g else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF(precision, recall, f1)


@dataclass(frozen=True)
class SchemaScore:
    tables: PRF
    columns: PRF

    @property
    def reward(self) -> float:
        return TABLE_WEIGHT * self.tables.f1 + COLUMN_WEIGHT * self.columns.f1

    @property
    def exact(self) -> bool:
        return self.tables.f1 == 1.0 and self.columns.f1 == 1.0


def schema_score(pred_tables: Iterable[str], pred_columns: Iterable[str], gold_tables: Iterable[str],
                 gold_columns: Iterable[str]) -> SchemaScore:
    """Columns are "table.column" strings."""
    return SchemaScore(prf(pred_tables, gold_tables), prf(pred_columns, gold_columns))


def execution_reward(correct: bool, ran: bool) -> float:
    """TRUST-SQL's execution reward."""
    return 1.0 if correct else 0.2 if ran else 0.0


@dataclass
class SqlOutcome:
    """Everything `verify` measured about one episode, as numbers (for trainers and benches)."""

    submitted: bool
    ran: bool                       # the submitted SQL executed on the main database
    correct_main: bool              # set equality on the main database
    siblings_agree: list[bool]      # the same on each sibling
    schema: SchemaScore | None      # the last proposal against the gold schema (None: no proposal)
    proposal_step: int              # step index of the last accepted proposal (-1: none)
    hallucinated: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        """Test-suite execution accuracy: right on the main database and every sibling."""
        return self.correct_main and all(self.siblings_agree)

    @property
    def execution_reward(self) -> float:
        return execution_reward(self.correct, self.ran)

    @property
    def schema_reward(self) -> float:
        return self.schema.reward if self.schema is not None else 0.0
