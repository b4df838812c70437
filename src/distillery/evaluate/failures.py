"""Failure patterns: why an episode did not succeed, as one label per episode.

The labels follow STAGE-Claw's reliability analysis, made precise so that they are
computable from the trajectory and the verification alone:

- ``none``: success.
- ``repetition_loop``: the agent repeated itself (the same action three times in a row, or
  any action four or more times).
- ``invalid_call``: at least half of the agent's actions were not valid tool calls.
- ``collateral_damage``: it changed something outside the task's allowed changes.
- ``step_limit``: it ran out of steps without changing anything.
- ``incomplete``: it ran out of steps having done part of the work (fewer state-changing
  calls than the reference solution needs).
- ``premature_finish``: it called ``finish`` having done less work than the reference.
- ``wrong_target``: it did as much work as the reference, but on the wrong things (a file
  in the wrong folder, a mail to the wrong address, a meeting at the wrong time).
- ``error``: the environment or the policy raised; the episode was recorded, not dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def is_repetition_loop(actions: Sequence[str]) -> bool:
    if any(actions[i] == actions[i + 1] == actions[i + 2] for i in range(len(actions) - 2)):
        return True
    return any(c >= 4 for c in Counter(actions).values())


def classify_failure(
    *,
    success: bool,
    failed_check_types: Sequence[str],
    actions: Sequence[str],
    valid: Sequence[bool],
    mutating: Sequence[bool],
    finished: bool,
    n_ref_mutations: int,
    errored: bool = False,
) -> str:
    """One failure label for an episode (see the module docstring for the definitions).

    `actions`, `valid` and `mutating` run over the episode's steps; `mutating[i]` says
    whether step i was a valid call of a state-changing tool. `finish` is not an action
    that counts towards the work done.
    """
    if errored:
        return "error"
    if success:
        return "none"
    if is_repetition_loop(actions):
        return "repetition_loop"
    if actions and sum(not v for v in valid) * 2 >= len(actions):
        return "invalid_call"
    if "unchanged_except" in failed_check_types:
        return "collateral_damage"
    n_mut = sum(mutating)
    if not finished:
        if n_mut == 0:
            return "step_limit"
        return "wrong_target" if n_mut >= n_ref_mutations else "incomplete"
    return "wrong_target" if n_mut >= n_ref_mutations else "premature_finish"
