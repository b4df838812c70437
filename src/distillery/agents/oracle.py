"""The oracle replays a task's reference solution, one call per step."""

from __future__ import annotations

from collections.abc import Sequence

from distillery.envs.actions import format_call
from distillery.types import ActionOutput, Context, ToolCall


class OraclePolicy:
    name = "oracle"
    model = "-"

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]:
        out = []
        for ctx in contexts:
            ref = ctx.task.reference_solution
            # Past the end of the reference (only if the environment did not stop the
            # episode), finishing is the only sensible move.
            call = ref[ctx.t] if ctx.t < len(ref) else ToolCall("finish", {})
            out.append(ActionOutput(text=format_call(call)))
        return out
