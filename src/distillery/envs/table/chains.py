"""Tables, the questions asked of them, and the chain-of-thought grammar that answers them.

A table has R rows labelled ``r1..rR`` and C columns headed ``A, B, ...``; every value is an
integer 0-99. A question is backed by a small executable program; the program's *gold chain*
writes every step out in the grammar below, and the rule critic (`verify_chain`) checks any
chain step by step against the table and the gold program.

Grammar (steps separated by ``;``)::

    look r3 B = 47          read the cell at row r3, column B
    best A = r2             the row where column A is largest (after reading all of column A)
    add 47 12 = 59          arithmetic on numbers the chain has already produced
    sub 47 12 = 35          (results are never negative)
    answer 59               the final answer (a number the chain has produced)

Program kinds (`KINDS`): ``lookup`` (one cell), ``argmax`` (the largest value of one column,
then another column of that row), ``filtered_sum`` (sum of one column over the rows where
another is above a threshold), ``difference`` (one cell minus another), ``two_hop`` (find the
row where a column holds a value, then read another column of that row).

**Shortcut-prone items.** An ``argmax`` item is *aligned* when the column asked about is
largest in the same row as the key column: then "answer the largest value of the asked
column" gives the right answer without reading the key column at all. The data generator
makes most training ``argmax`` items aligned (`vision.tables`), so an outcome-only reward
pays for that shortcut; the rule critic does not (the key column's cells are never read).

The rule critic's verdict per step (`StepVerdict.reason`, "" when valid):

- *visual hallucination*: a look-up whose value is not the table's (``misread``);
- *arithmetic*: a wrong sum or difference, an operand no earlier step produced;
- *relevance*: a look-up of a cell the gold program does not touch (``irrelevant``);
- *malformed*: unknown operations, cells outside the table, numbers that overflow
  (`MAX_NUMBER`), empty answers, steps after the answer. Nothing here raises on any text.

A chain is *valid* when every step is, it ends with an answer, and it read every cell the
gold program reads (``coverage`` 1); the outcome is *correct* when the answer equals the
gold answer, whatever the process.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS: tuple[str, ...] = ("lookup", "argmax", "filtered_sum", "difference", "two_hop")
OPS: tuple[str, ...] = ("look", "best", "add", "sub", "answer")
MAX_VALUE = 99                  # table values are 0..MAX_VALUE
MAX_NUMBER = 999                # any number a chain writes above this overflows
MAX_STEPS = 24                  # a longer chain is cut: its extra steps are invalid
MAX_ROWS = 9
MAX_COLS = 9
_NUM = re.compile(r"^[0-9]+$")


def col_name(c: int) -> str:
    return string.ascii_uppercase[c]


def row_name(r: int) -> str:
    return f"r{r + 1}"


def number_words() -> list[str]:
    """Every number a gold chain can write (values, sums of up to MAX_ROWS values)."""
    return [str(i) for i in range(MAX_VALUE * 5 + 1)]


def vocabulary_words(max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS) -> list[str]:
    """The chain grammar's and the questions' words (numbers excluded)."""
    return [*OPS, "=", ";", *(col_name(c) for c in range(max_cols)), *(row_name(r) for r in range(max_rows)),
            *QUESTION_WORDS]


QUESTION_WORDS = ("what", "is", "in", "the", "row", "with", "largest", "sum", "of", "where", "over", "minus",
                  "?", "equals")


@dataclass(frozen=True)
class Table:
    """Values [row][col], 0..MAX_VALUE."""

    values: tuple[tuple[int, ...], ...]

    @property
    def n_rows(self) -> int:
        return len(self.values)

    @property
    def n_cols(self) -> int:
        return len(self.values[0]) if self.values else 0

    def get(self, r: int, c: int) -> int:
        return self.values[r][c]

    def column(self, c: int) -> list[int]:
        return [row[c] for row in self.values]

    def to_json(self) -> list[list[int]]:
        return [list(r) for r in self.values]

    @classmethod
    def from_json(cls, rows: Any) -> Table:
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
            raise ValueError("a table is a non-empty list of non-empty rows")
        width = len(rows[0])
        if len(rows) > MAX_ROWS or width > MAX_COLS or any(len(r) != width for r in rows):
            raise ValueError(f"a table has at most {MAX_ROWS} rows of the same width (at most {MAX_COLS})")
        for r in rows:
            for v in r:
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_VALUE:
                    raise ValueError(f"table value {v!r} is not an integer 0..{MAX_VALUE}")
        return cls(tuple(tuple(r) for r in rows))


@dataclass(frozen=True)
class Item:
    """One question about one table: its program kind, the words asked, the gold chain,
    the cells the gold program reads, the answer, and whether it is shortcut-prone."""

    kind: str
    question: str
    chain: str
    cells: tuple[tuple[int, int], ...]
    answer: int
    shortcut: bool = False

    @property
    def n_steps(self) -> int:
        return len(split_steps(self.chain))


def split_steps(chain: str) -> list[str]:
    return [s.strip() for s in chain.split(";") if s.strip()]


def _look(r: int, c: int, t: Table) -> str:
    return f"look {row_name(r)} {col_name(c)} = {t.get(r, c)}"


def _chain_sum(vals: Sequence[int]) -> tuple[list[str], int]:
    steps, acc = [], vals[0]
    for v in vals[1:]:
        steps.append(f"add {acc} {v} = {acc + v}")
        acc += v
    return steps, acc


def make_item(kind: str, table: Table, rng: random.Random) -> Item | None:
    """One item of `kind` on `table` (None when the table cannot host it, e.g. a tie in the
    argmax column). Pure in (kind, table, rng state)."""
    R, C = table.n_rows, table.n_cols
    if kind == "lookup":
        r, c = rng.randrange(R), rng.randrange(C)
        v = table.get(r, c)
        return Item(kind, f"what is {col_name(c)} in {row_name(r)} ?", f"{_look(r, c, table)} ; answer {v}",
                    ((r, c),), v)
    if C < 2:
        return None
    a, b = rng.sample(range(C), 2)
    if kind == "argmax":
        col = table.column(a)
        if col.count(max(col)) > 1:
            return None
        best = col.index(max(col))
        target = table.column(b)
        aligned = target.count(max(target)) == 1 and target.index(max(target)) == best
        steps = [_look(r, a, table) for r in range(R)]
        steps += [f"best {col_name(a)} = {row_name(best)}", _look(best, b, table), f"answer {table.get(best, b)}"]
        cells = tuple((r, a) for r in range(R)) + ((best, b),)
        return Item(kind, f"what is {col_name(b)} in the row with the largest {col_name(a)} ?", " ; ".join(steps),
                    cells, table.get(best, b), shortcut=aligned)
    if kind == "filtered_sum":
        col = table.column(a)
        threshold = rng.choice(sorted(set(col)))
        rows = [r for r in range(R) if col[r] > threshold]
        if not rows:
            return None
        vals = [table.get(r, b) for r in rows]
        adds, total = _chain_sum(vals)
        steps = [_look(r, a, table) for r in range(R)] + [_look(r, b, table) for r in rows] + adds
        steps.append(f"answer {total}")
        cells = tuple((r, a) for r in range(R)) + tuple((r, b) for r in rows)
        return Item(kind, f"what is the sum of {col_name(b)} where {col_name(a)} is over {threshold} ?",
                    " ; ".join(steps), cells, total)
    if kind == "difference":
        if R < 2:
            return None
        r1, r2 = rng.sample(range(R), 2)
        x, y = table.get(r1, a), table.get(r2, a)
        if x < y:
            r1, r2, x, y = r2, r1, y, x
        steps = [_look(r1, a, table), _look(r2, a, table), f"sub {x} {y} = {x - y}", f"answer {x - y}"]
        return Item(kind, f"what is {col_name(a)} in {row_name(r1)} minus {col_name(a)} in {row_name(r2)} ?",
                    " ; ".join(steps), ((r1, a), (r2, a)), x - y)
    if kind == "two_hop":
        col = table.column(a)
        unique = [r for r in range(R) if col.count(col[r]) == 1]
        if not unique:
            return None
        hit = rng.choice(unique)
        steps = [_look(r, a, table) for r in range(hit + 1)] + [_look(hit, b, table), f"answer {table.get(hit, b)}"]
        cells = tuple((r, a) for r in range(hit + 1)) + ((hit, b),)
        return Item(kind, f"what is {col_name(b)} in the row where {col_name(a)} equals {col[hit]} ?",
                    " ; ".join(steps), cells, table.get(hit, b))
    raise ValueError(f"unknown program kind {kind!r}; choose from {KINDS}")


# ---------------------------------------------------------------------------------------
# The rule critic
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepVerdict:
    text: str
    op: str                 # the operation read ('' when none could be)
    valid: bool
    reason: str = ""        # why not ('' when valid)
    cell: tuple[int, int] | None = None   # the cell a look-up read, when it named one in the table


@dataclass(frozen=True)
class ChainVerdict:
    steps: tuple[StepVerdict, ...]
    answer: int | None
    correct: bool           # the answer equals the gold answer (outcome, whatever the process)
    coverage: float         # share of the gold program's cells the chain read
    has_answer: bool

    @property
    def valid(self) -> bool:
        """Every step valid, an answer, every gold cell read."""
        return bool(self.steps) and all(s.valid for s in self.steps) and self.has_answer and self.coverage >= 1.0

    @property
    def right_answer_wrong_process(self) -> bool:
        return self.correct and not self.valid

    @property
    def step_scores(self) -> list[float]:
        return [1.0 if s.valid else 0.0 for s in self.steps]

    @property
    def n_looks(self) -> int:
        return sum(s.op == "look" for s in self.steps)

    @property
    def n_misread(self) -> int:
        return sum(s.reason.startswith("misread") for s in self.steps)

    def reasons(self) -> list[str]:
        out = [f"step {i + 1} ({s.text[:40]!r}): {s.reason}" for i, s in enumerate(self.steps) if not s.valid]
        if not self.has_answer:
            out.append("no answer step")
        if self.coverage < 1.0:
            out.append(f"read {self.coverage:.0%} of the cells the question needs")
        return out


def _number(tok: str) -> tuple[int | None, str]:
    if not _NUM.match(tok):
        return None, f"{tok[:12]!r} is not a number"
    if len(tok) > len(str(MAX_NUMBER)) or int(tok) > MAX_NUMBER:
        return None, f"number {tok[:12]}{'...' if len(tok) > 12 else ''} overflows (the largest is {MAX_NUMBER})"
    return int(tok), ""


def _cell(row: str, col: str, table: Table) -> tuple[tuple[int, int] | None, str]:
    if not (len(row) >= 2 and row[0] == "r" and row[1:].isdigit() and len(row) <= 3):
        return None, f"{row[:12]!r} is not a row label"
    if not (len(col) == 1 and col in string.ascii_uppercase):
        return None, f"{col[:12]!r} is not a column letter"
    r, c = int(row[1:]) - 1, string.ascii_uppercase.index(col)
    if not (0 <= r < table.n_rows and 0 <= c < table.n_cols):
        return None, f"cell {row} {col} is outside the table ({table.n_rows} rows, {table.n_cols} columns)"
    return (r, c), ""


def verify_chain(table: Table, gold: Item, text: Any) -> ChainVerdict:
    """The rule critic: every step of `text` checked against `table` and the gold program.
    Total: any input (not a string, empty, huge) gives a verdict, never an exception."""
    if not isinstance(text, str):
        text = ""
    text = text[: 64 * MAX_STEPS]
    raw = split_steps(text)
    if not raw:
        return ChainVerdict((StepVerdict(text[:40], "", False, "empty chain: no step"),), None, False, 0.0, False)
    gold_cells = set(gold.cells)
    produced: list[int] = []          # every number the chain has produced so far, in order
    read: dict[tuple[int, int], int] = {}
    steps: list[StepVerdict] = []
    answer: int | None = None
    has_answer = False
    for i, s in enumerate(raw):
        toks = s.split()
        op = toks[0] if toks else ""
        if i >= MAX_STEPS:
            steps.append(StepVerdict(s, op, False, f"more than {MAX_STEPS} steps"))
            continue
        if has_answer:
            steps.append(StepVerdict(s, op, False, "step after the answer"))
            continue
        if op not in OPS:
            steps.append(StepVerdict(s, "", False, f"unknown operation {op[:16]!r} (known: {', '.join(OPS)})"))
            continue
        verdict = _check_step(op, toks, s, table, gold_cells, produced, read)
        if op == "answer":
            has_answer = True
            if len(toks) == 2:
                answer, _ = _number(toks[1])
        steps.append(verdict)
    covered = len(gold_cells & set(read)) / len(gold_cells) if gold_cells else 1.0
    correct = answer is not None and answer == gold.answer
    return ChainVerdict(tuple(steps), answer, correct, covered, has_answer)


def _check_step(op: str, toks: list[str], s: str, table: Table, gold_cells: set[tuple[int, int]],
                produced: list[int], read: dict[tuple[int, int], int]) -> StepVerdict:
    def bad(reason: str, cell: tuple[int, int] | None = None) -> StepVerdict:
        return StepVerdict(s, op, False, reason, cell)

    if op == "look":
        if len(toks) != 5 or toks[3] != "=":
            return bad("malformed look-up: write 'look r<row> <column> = <value>'")
        cell, why = _cell(toks[1], toks[2], table)
        if cell is None:
            return bad(why)
        v, why = _number(toks[4])
        if v is None:
            return bad(why, cell)
        true = table.get(*cell)
        if v != true:
            # the chain now holds what it wrote: later steps are checked against that, so the
            # error stays on this step
            produced.append(v)
            return bad(f"misread {toks[1]} {toks[2]}: the table has {true}, not {v}", cell)
        read[cell] = true
        produced.append(true)
        if cell not in gold_cells:
            return bad(f"irrelevant cell {toks[1]} {toks[2]}: the question does not need it", cell)
        return StepVerdict(s, op, True, "", cell)
    if op == "best":
        if len(toks) != 4 or toks[2] != "=":
            return bad("malformed best: write 'best <column> = r<row>'")
        cell, why = _cell(toks[3], toks[1], table)
        if cell is None:
            return bad(why)
        r, c = cell
        missing = [row_name(x) for x in range(table.n_rows) if (x, c) not in read]
        if missing:
            return bad(f"best {toks[1]} before reading {', '.join(missing)} of column {toks[1]}")
        col = table.column(c)
        if col[r] != max(col):
            return bad(f"wrong row: column {toks[1]} is largest in {row_name(col.index(max(col)))}")
        return StepVerdict(s, op, True)
    if op in ("add", "sub"):
        if len(toks) != 5 or toks[3] != "=":
            return bad(f"malformed {op}: write '{op} <a> <b> = <result>'")
        nums = []
        for t in (toks[1], toks[2], toks[4]):
            v, why = _number(t)
            if v is None:
                return bad(why)
            nums.append(v)
        a, b, res = nums
        pool = list(produced)
        for x in (a, b):
            if x not in pool:
                return bad(f"operand {x} was not produced by an earlier step")
            pool.remove(x)
        true = a + b if op == "add" else a - b
        if true < 0:
            return bad(f"{a} - {b} is negative (subtract the smaller from the larger)")
        if true > MAX_NUMBER:
            return bad(f"result {true} overflows (the largest is {MAX_NUMBER})")
        if res != true:
            return bad(f"arithmetic: {a} {'+' if op == 'add' else '-'} {b} is {true}, not {res}")
        produced.append(res)
        return StepVerdict(s, op, True)
    # answer
    if len(toks) == 1:
        return bad("empty answer")
    if len(toks) != 2:
        return bad("malformed answer: write 'answer <number>'")
    v, why = _number(toks[1])
    if v is None:
        return bad(why)
    if v not in produced:
        return bad(f"answer {v} was not produced by an earlier step")
    return StepVerdict(s, op, True)


# ---------------------------------------------------------------------------------------
# Perturbations (the learned critic's negatives) and random chains (a floor)
# ---------------------------------------------------------------------------------------

PERTURBATIONS: tuple[str, ...] = ("misread", "arithmetic", "irrelevant", "skip", "unknown")


def perturb_chain(table: Table, item: Item, rng: random.Random, how: str) -> str | None:
    """The gold chain with one error of kind `how` (None when the chain has no step to
    perturb that way): a misread look-up, a wrong sum or difference, a look-up of a cell the
    program does not need, a skipped look-up, an unknown operation."""
    steps = split_steps(item.chain)
    looks = [i for i, s in enumerate(steps) if s.startswith("look ")]
    if how == "misread" and looks:
        i = rng.choice(looks)
        toks = steps[i].split()
        v = int(toks[4])
        toks[4] = str((v + rng.randint(1, MAX_VALUE)) % (MAX_VALUE + 1))
        steps[i] = " ".join(toks)
        return " ; ".join(steps)
    if how == "arithmetic":
        ar = [i for i, s in enumerate(steps) if s.split()[0] in ("add", "sub")]
        if not ar:
            return None
        i = rng.choice(ar)
        toks = steps[i].split()
        toks[4] = str(int(toks[4]) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
        if int(toks[4]) < 0:
            toks[4] = str(int(toks[4]) + 20)
        steps[i] = " ".join(toks)
        return " ; ".join(steps)
    if how == "irrelevant":
        free = [(r, c) for r in range(table.n_rows) for c in range(table.n_cols) if (r, c) not in item.cells]
        if not free:
            return None
        r, c = rng.choice(free)
        steps.insert(rng.randrange(len(steps)), _look(r, c, table))
        return " ; ".join(steps)
    if how == "skip" and len(looks) > 1:
        del steps[rng.choice(looks)]
        return " ; ".join(steps)
    if how == "unknown":
        i = rng.randrange(len(steps))
        toks = steps[i].split()
        toks[0] = rng.choice(["get", "max", "mul", "read"])
        steps[i] = " ".join(toks)
        return " ; ".join(steps)
    return None


def random_chain(table: Table, rng: random.Random, max_steps: int = 6) -> str:
    """A chain of random well-formed steps over the table's labels and random numbers."""
    steps = []
    for _ in range(rng.randint(1, max_steps)):
        op = rng.choice(["look", "look", "add", "sub", "best"])
        r, c = rng.randrange(table.n_rows), rng.randrange(table.n_cols)
        if op == "look":
            steps.append(f"look {row_name(r)} {col_name(c)} = {rng.randint(0, MAX_VALUE)}")
        elif op == "best":
            steps.append(f"best {col_name(c)} = {row_name(r)}")
        else:
            a, b = rng.randint(0, MAX_VALUE), rng.randint(0, MAX_VALUE)
            steps.append(f"{op} {a} {b} = {rng.randint(0, 2 * MAX_VALUE)}")
    steps.append(f"answer {rng.randint(0, MAX_VALUE)}")
    return " ; ".join(steps)


@dataclass
class ItemSpec:
    """What a family draws: the table shape range and the program kinds."""

    rows: tuple[int, int] = (2, 3)
    cols: tuple[int, int] = (2, 3)
    kinds: tuple[str, ...] = KINDS
    extra: dict[str, Any] = field(default_factory=dict)


def random_table(rng: random.Random, n_rows: int, n_cols: int) -> Table:
    return Table(tuple(tuple(rng.randint(0, MAX_VALUE) for _ in range(n_cols)) for _ in range(n_rows)))


def draw_item(rng: random.Random, spec: ItemSpec, tries: int = 50) -> tuple[Table, Item]:
    """A table and an item on it, redrawn until the table can host the drawn kind."""
    for _ in range(tries):
        table = random_table(rng, rng.randint(*spec.rows), rng.randint(*spec.cols))
        item = make_item(rng.choice(spec.kinds), table, rng)
        if item is not None:
            return table, item
    raise ValueError(f"no item of kinds {spec.kinds} fits tables of {spec.rows} rows x {spec.cols} columns")
