"""The `table_qa` family: a random table (2-3 rows and columns) and a question of any program
kind; the reference solution is the gold chain. The vision track's data stage draws its own
splits (`vision.tables`); this family serves the registry (task drafting, the hostile-action
harness)."""

from __future__ import annotations

import random

from distillery.envs.base import Draft, Family
from distillery.envs.table.chains import ItemSpec, draw_item
from distillery.envs.table.env import state_of
from distillery.types import ToolCall


def draft(rng: random.Random, profile: str) -> Draft:
    table, item = draw_item(rng, ItemSpec())
    return Draft(instruction=item.question, state=state_of(table, item),
                 solution=[ToolCall("chain", {"steps": item.chain})],
                 checks=[{"type": "answer", "value": item.answer}, {"type": "process"}])


FAMILIES = (Family("table_qa", "table", "answer a question about a table image with a checked chain of steps", draft,
                   areas=("tables",)),)
