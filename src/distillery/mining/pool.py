"""The ExpeL principle pool and its edits (reference/algorithms.md 5a, 5b).

A pool is a list of `Experience` records of kind ``principle``. It changes only through
operations (`PrincipleOp`): ADD a rule, EDIT rule i, AGREE with rule i, REMOVE rule i. Each
rule keeps ExpeL's counter (ADD starts at 2, AGREE and EDIT +1, REMOVE -1 or -3 when the list
is full); rules whose counter reaches 0 are dropped, the rest are sorted by counter and the
highest `max_rules` kept (`apply_ops`, a pure function). `parse_ops` reads operations from a
summariser's reply, one per line.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from distillery.types import Experience

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Operations and ExpeL's counters
# ---------------------------------------------------------------------------------------

OPS: tuple[str, ...] = ("ADD", "EDIT", "AGREE", "REMOVE")
APPLY_ORDER: dict[str, int] = {"REMOVE": 0, "AGREE": 1, "EDIT": 2, "ADD": 3}
ADD_COUNTER = 2          # a new rule starts here
FULL_MARGIN = 5          # the list is "full" at max_rules + 5 rules: REMOVE then costs 3
FULL_REMOVE = 3
MAX_PROVENANCE = 32      # episode ids kept per rule (enough to trace it, small on disk)


@dataclass(frozen=True)
class PrincipleOp:
    """One edit of a pool. `index` is the 0-based position, in the pool the op was
    proposed against, of the rule it acts on (unused by ADD). `family` and `condition`
    describe the rule an ADD creates (an EDIT may update them); `condition` is the
    dimension a rule speaks about, e.g. ``send_mail.body last_line``."""

    op: str
    index: int = -1
    text: str = ""
    family: str = ""
    condition: str = ""
    provenance: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"principle op must be one of {OPS}, not {self.op!r}")
        if self.op in ("ADD", "EDIT") and not self.text.strip():
            raise ValueError(f"{self.op} needs a rule text")
        if self.op != "ADD" and self.index < 0:
            raise ValueError(f"{self.op} needs the index of an existing rule, got {self.index}")

    def render(self) -> str:
        """The op as a reply line, numbering rules from 1 as the prompt does."""
        if self.op == "ADD":
            return f"ADD: {self.text}"
        if self.op == "EDIT":
            return f"EDIT {self.index + 1}: {self.text}"
        return f"{self.op} {self.index + 1}"


def principle_id(text: str, family: str = "", condition: str = "") -> str:
    """Deterministic id of a rule: a hash of what it says and where it applies."""
    h = hashlib.sha1(f"{family}\x1f{condition}\x1f{normalise_rule(text)}".encode()).hexdigest()
    return f"p-{h[:12]}"


def normalise_rule(text: str) -> str:
    """What two rule texts must share to be the same rule: their words, case ignored."""
    return " ".join(text.split()).strip().lower()


def _merge_ids(old: Sequence[str], new: Iterable[str]) -> list[str]:
    out = list(old)
    seen = set(out)
    for i in new:
        if i not in seen:
            out.append(i)
            seen.add(i)
    return out[-MAX_PROVENANCE:]


def apply_ops(pool: Sequence[Experience], ops: Sequence[PrincipleOp], max_rules: int = 20) -> list[Experience]:
    """The pool after `ops`, ExpeL's way. Pure: `pool` and its records are not touched.

    Ops are applied in the order REMOVE, AGREE, EDIT, ADD (stable within a kind) and their
    indices refer to `pool` as given. REMOVE costs 1, or 3 when the pool holds at least
    `max_rules + 5` rules; AGREE and EDIT add 1 (EDIT also replaces the text, and with it
    the id); ADD appends a rule at 2 unless the same text is already there. A rule whose
    counter reaches 0 is dropped at once (later ops on it are ignored). The survivors are
    sorted by counter, highest first (ties keep their order), and the top `max_rules` kept.
    """
    if max_rules < 1:
        raise ValueError(f"max_rules must be >= 1, not {max_rules}")
    items: list[Experience | None] = [copy.deepcopy(e) for e in pool]
    full = len(pool) >= max_rules + FULL_MARGIN
    for op in sorted(ops, key=lambda o: APPLY_ORDER[o.op]):
        if op.op == "ADD":
            live = {normalise_rule(e.text) for e in items if e is not None}
            if normalise_rule(op.text) in live:
                log.info("ADD ignored: the pool already holds %r", op.text)
                continue
            items.append(Experience(
                exp_id=principle_id(op.text, op.family, op.condition), kind="principle", text=op.text.strip(),
                condition=op.condition, family=op.family, provenance=_merge_ids([], op.provenance),
                counter=ADD_COUNTER, status="active"))
            continue
        if not 0 <= op.index < len(pool):
            log.warning("%s ignored: no rule %d in a pool of %d", op.op, op.index + 1, len(pool))
            continue
        item = items[op.index]
        if item is None:
            log.info("%s %d ignored: that rule was already dropped", op.op, op.index + 1)
            continue
        if op.op == "REMOVE":
            item.counter -= FULL_REMOVE if full else 1
        elif op.op == "AGREE":
            item.counter += 1
            item.provenance = _merge_ids(item.provenance, op.provenance)
        else:  # EDIT
            item.counter += 1
            item.text = op.text.strip()
            item.family = op.family or item.family
            item.condition = op.condition or item.condition
            item.exp_id = principle_id(item.text, item.family, item.condition)
            item.provenance = _merge_ids(item.provenance, op.provenance)
        if item.counter <= 0:
            items[op.index] = None
    live_items = [e for e in items if e is not None]
    live_items.sort(key=lambda e: -e.counter)   # list.sort is stable
    return live_items[:max_rules]


# ---------------------------------------------------------------------------------------
# Reply lines -> ops (the LLM summariser's output format)
# ---------------------------------------------------------------------------------------

_OP_LINE = re.compile(
    r"^(?:[-*•]\s*|\d+[.)]\s+)?(?P<op>ADD|EDIT|AGREE|REMOVE)\b\s*(?P<num>\d+)?\s*[:.\-]?\s*(?P<text>.*)$",
    re.IGNORECASE)


def parse_ops(reply: str, n_rules: int) -> tuple[list[PrincipleOp], list[str]]:
    """Ops from a reply, one per line (`ADD: text`, `EDIT 3: text`, `AGREE 2`, `REMOVE 1`;
    rules numbered from 1). Returns the ops and, for every line ignored, why."""
    ops: list[PrincipleOp] = []
    ignored: list[str] = []
    for raw in reply.splitlines():
        line = raw.strip().strip("`").strip()
        if not line:
            continue
        m = _OP_LINE.match(line.replace("**", ""))
        if m is None:
            ignored.append(f"not an operation: {line[:120]!r}")
            continue
        op, num, text = m["op"].upper(), m["num"], m["text"].strip().strip('"').strip()
        if op == "ADD":
            if num is not None:
                text = f"{num} {text}".strip() if text else ""
            if not text:
                ignored.append(f"ADD without a rule: {line[:120]!r}")
                continue
            ops.append(PrincipleOp("ADD", text=text))
            continue
        if num is None:
            ignored.append(f"{op} without a rule number: {line[:120]!r}")
            continue
        i = int(num)
        if not 1 <= i <= n_rules:
            ignored.append(f"{op} {i}: there are {n_rules} rules: {line[:120]!r}")
            continue
        if op == "EDIT":
            if not text:
                ignored.append(f"EDIT {i} without the new text: {line[:120]!r}")
                continue
            ops.append(PrincipleOp("EDIT", i - 1, text=text))
        else:
            ops.append(PrincipleOp(op, i - 1))
    for why in ignored:
        log.warning("summariser reply line ignored: %s", why)
    return ops, ignored
