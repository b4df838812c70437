"""Principle-level experience: an ExpeL-style rule pool (reference/algorithms.md 5a, 5b).

The pool and its operations are in `distillery.mining.pool`, the evidence summarisers read in
`distillery.mining.evidence`. A `Summariser` reads the evidence built from trajectories (for
each task group, its successful and failed episodes with their decisive calls) and proposes
operations on the pool:

- `distillery.mining.rules.RulesSummariser` (offline, deterministic): regularities of
  successful calls across tasks, contrasted with failures;
- `LLMSummariser` (here) sends the same evidence to any OpenAI-compatible endpoint and parses
  the reply into operations, one per line.

`update_pool` ties it together and never loses the pool: whatever goes wrong (no episodes,
nothing succeeded, no contrast, an endpoint down) ends with the old pool and a message.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from distillery.envs.base import env_spec
from distillery.llm import DEFAULT_KEY_ENV, ChatEndpoint, EndpointError
from distillery.mining.evidence import (
    EpisodeEvidence,
    Evidence,
    GroupEvidence,
    build_evidence,
    call_text,
)
from distillery.mining.pool import OPS, PrincipleOp, apply_ops, parse_ops
from distillery.types import Experience, Task


@dataclass
class Proposal:
    ops: list[PrincipleOp]
    messages: list[str] = field(default_factory=list)


class Summariser(Protocol):
    """Proposes ops for `pool` (indices into it) from evidence."""

    name: str

    def propose(self, pool: Sequence[Experience], evidence: Evidence) -> Proposal: ...


# ---------------------------------------------------------------------------------------
# The LLM summariser
# ---------------------------------------------------------------------------------------

SUMMARISER_SYSTEM = (
    "You keep a short list of rules for an assistant that operates one user's computer (files, mail, "
    "calendar, contacts) through tools. The user has standing preferences that task instructions never "
    "state; good rules capture them, and other reusable lessons, as one short sentence each, with names, "
    "ids, numbers and dates written as <slots>."
)
SUMMARISER_USER = (
    "Current rules:\n{rules}\n\n{evidence}\n\n"
    "Compare the successful and failed attempts and update the rules. Reply with operations only, one per "
    "line, using the rule numbers above:\n"
    "ADD: <new rule>\nEDIT <number>: <rewritten rule>\nAGREE <number>\nREMOVE <number>\n"
    "Use at most {max_ops} operations."
)
NO_RULES = "(none yet)"
RULE_LINE = "{n}. {text}"
CONTRAST_BLOCK = (
    "Task ({family}): {instruction}\nSuccessful attempt:\n{success}\n"
    "Failed attempt (failed checks: {failed}):\n{failure}"
)
SUCCESS_BLOCK = "Task ({family}): {instruction}\nSuccessful attempt:\n{success}"
NO_CALLS = "  (no changes made)"
NO_FAILED_CHECKS = "none recorded"
UNKNOWN_CHECK = "unknown"      # a failed check whose name the environment's phrasebook cannot read


def _calls_text(ep: EpisodeEvidence, env: str) -> str:
    return "\n".join("  " + call_text(c.tool, c.args, env=env) for c in ep.calls) or NO_CALLS


def _round_robin(groups: Sequence[GroupEvidence]) -> list[GroupEvidence]:
    """One group of each family in turn, so a few examples cover as many families as they can."""
    by_family: dict[str, list[GroupEvidence]] = defaultdict(list)
    for g in groups:
        by_family[g.task.family].append(g)
    out: list[GroupEvidence] = []
    queues = [by_family[f] for f in sorted(by_family)]
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


@dataclass
class LLMSummariser:
    """ExpeL's insight extraction through a chat endpoint: (a) a failure contrasted with a
    success of the same task, (b) successes of several tasks; one request per update, the
    reply parsed into ops (malformed lines are logged and ignored).

    `check_details` also shows the failed checks' full descriptions (which may name the
    expected values); by default only their types are shown (as the environment's phrasebook
    reads them from the names)."""

    endpoint: ChatEndpoint
    max_pairs: int = 4
    max_successes: int = 8
    max_ops: int = 8
    check_details: bool = False
    name: str = "llm"

    @classmethod
    def from_url(cls, base_url: str, model: str, api_key_env: str = DEFAULT_KEY_ENV, timeout: float = 60.0,
                 max_retries: int = 2, **kwargs: Any) -> LLMSummariser:
        return cls(ChatEndpoint(base_url, model, api_key_env, timeout, max_retries), **kwargs)

    def messages(self, pool: Sequence[Experience], evidence: Evidence) -> list[dict[str, str]]:
        rules = "\n".join(RULE_LINE.format(n=i + 1, text=e.text) for i, e in enumerate(pool)) or NO_RULES
        phrasebook = env_spec(evidence.env).phrasebook
        blocks = []
        for g in _round_robin([g for g in evidence.groups if g.has_contrast])[: self.max_pairs]:
            bad = g.failures[0]
            if self.check_details:
                failed = ", ".join(bad.failed_checks)
            else:
                failed = ", ".join(sorted({(phrasebook.check_type(c) if phrasebook else None) or UNKNOWN_CHECK
                                           for c in bad.failed_checks}))
            blocks.append(CONTRAST_BLOCK.format(family=g.task.family, instruction=g.task.instruction,
                                                success=_calls_text(g.successes[0], evidence.env),
                                                failed=failed or NO_FAILED_CHECKS,
                                                failure=_calls_text(bad, evidence.env)))
        for g in _round_robin([g for g in evidence.groups if g.successes and not g.failures])[: self.max_successes]:
            blocks.append(SUCCESS_BLOCK.format(family=g.task.family, instruction=g.task.instruction,
                                               success=_calls_text(g.successes[0], evidence.env)))
        user = SUMMARISER_USER.format(rules=rules, evidence="\n\n".join(blocks), max_ops=self.max_ops)
        return [{"role": "system", "content": SUMMARISER_SYSTEM}, {"role": "user", "content": user}]

    def propose(self, pool: Sequence[Experience], evidence: Evidence) -> Proposal:
        reply = self.endpoint.complete(self.messages(pool, evidence))
        ops, ignored = parse_ops(reply, len(pool))
        msgs = [f"llm summariser: {len(ops)} op(s) from {self.endpoint.model}"]
        msgs += [f"ignored reply line: {why}" for why in ignored]
        return Proposal(ops[: self.max_ops], msgs)


# ---------------------------------------------------------------------------------------
# One update of the pool
# ---------------------------------------------------------------------------------------


@dataclass
class PoolUpdate:
    pool: list[Experience]
    ops: list[PrincipleOp]
    messages: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.ops)


def update_pool(
    pool: Sequence[Experience],
    tasks: Mapping[str, Task],
    episodes: pl.DataFrame,
    steps: pl.DataFrame,
    summariser: Summariser,
    max_rules: int = 20,
) -> PoolUpdate:
    """One ExpeL update: evidence from the trajectories, ops from the summariser, the new
    pool. Never raises for bad luck in the data or the endpoint, and never drops the pool:
    with no episodes, nothing that succeeded, no regularity, or the summariser's endpoint
    down, the old pool comes back unchanged with messages saying why."""
    old = [copy.deepcopy(e) for e in pool]
    if episodes.height == 0:
        return PoolUpdate(old, [], ["no episodes to learn from: pool unchanged"])
    evidence = build_evidence(tasks, episodes, steps)
    messages = list(evidence.messages)
    if not evidence.groups:
        return PoolUpdate(old, [], messages + ["no episode of a known task: pool unchanged"])
    if evidence.n_successes == 0:
        return PoolUpdate(old, [], messages + [
            f"no successful episode among {evidence.n_failures}: nothing to learn from, pool unchanged"])
    try:
        proposal = summariser.propose(old, evidence)
    except EndpointError as exc:
        return PoolUpdate(old, [], messages + [f"summariser {summariser.name} unavailable: {exc}; pool unchanged"])
    messages += proposal.messages
    if not proposal.ops:
        return PoolUpdate(old, [], messages + [f"summariser {summariser.name} proposed no change: pool unchanged"])
    new = apply_ops(old, proposal.ops, max_rules=max_rules)
    counts = {k: sum(o.op == k for o in proposal.ops) for k in OPS}
    messages.append("applied " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                    + f": {len(old)} -> {len(new)} rules")
    return PoolUpdate(new, list(proposal.ops), messages)
