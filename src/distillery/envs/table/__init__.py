"""The `table` environment (the vision track's tables): questions about a table image answered
by a chain of steps that the environment verifies step by step. See chains.py (the grammar,
the programs and the rule critic), env.py and docs/tables.md.

`ENV` is what the `table` entry point of `distillery.envs` registers.
"""

from __future__ import annotations

from typing import Any

from distillery.envs.base import EnvSpec
from distillery.envs.table.chains import number_words, vocabulary_words
from distillery.envs.table.env import TOOL_SPECS, TableEnv

DESCRIPTION = ("You answer a question about a table shown as an image (columns A, B, ...; rows r1, r2, ...) "
               "by writing a chain of steps: look r3 B = 47 ; add 47 12 = 59 ; answer 59. Every step is checked.")


def state_texts(state: dict[str, Any]) -> list[str]:
    q = state.get("question")
    return [q] if isinstance(q, str) else []


def vocabulary() -> str:
    return " ".join([*vocabulary_words(), *number_words()])


ENV = EnvSpec(name="table", factory=TableEnv, tools=TOOL_SPECS, description=DESCRIPTION, state_texts=state_texts,
              vocabulary=vocabulary)

__all__ = ["ENV", "TOOL_SPECS", "TableEnv"]
