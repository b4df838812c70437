"""Question templates: English questions with gold SQL over a generated database.

Each template is a function of a `Ctx` (the domain's logical schema, the database's
physical names, its main data and a seeded generator) that yields `Candidate`s. The
question names tables and columns in English ("customers", "city"), never by their
physical names, so the agent has to find them. Constants (a city, a threshold, a year)
come from the main database's data. A candidate records the gold tables and columns as it
renders the SQL; `validate.py` checks that record against sqlglot and executes everything.

The templates cover filters, aggregates, GROUP BY / HAVING, top-k, subqueries, 2- to
4-way joins and NOT EXISTS.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.envs.sql.domains import MEASURES, ColumnDef, Domain, TableDef
from distillery.envs.sql.generator import Layout, Row


@dataclass(frozen=True)
class Candidate:
    template: str
    question: str
    sql: str
    tables: tuple[str, ...]              # physical table names the gold SQL reads
    columns: tuple[str, ...]             # "table.column", sorted
    baseline_sql: str = ""               # a query the gold result must differ from (the filter filters)
    tie_sql: str = ""                    # one count that must equal `tie_expected` on every database
    tie_expected: int = 0


def lit(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, float):
        return repr(round(v, 2))
    return str(v)


@dataclass
class Ctx:
    dom: Domain
    layout: Layout
    data: dict[str, list[Row]]
    rng: random.Random

    def values(self, t: TableDef, c: ColumnDef) -> list[Any]:
        return [r[c.key] for r in self.data[t.key] if r[c.key] is not None]

    def cat_value(self, t: TableDef, c: ColumnDef) -> Any | None:
        """A value of a categorical column that neither almost every row nor a single one has."""
        counts = Counter(self.values(t, c))
        n = sum(counts.values())
        good = sorted(v for v, k in counts.items() if 2 <= k <= 0.7 * n) or sorted(counts)
        return self.rng.choice(good) if good else None

    def threshold(self, t: TableDef, c: ColumnDef, lo: float, hi: float) -> Any | None:
        vals = sorted(self.values(t, c))
        if len(vals) < 4:
            return None
        v = vals[int(len(vals) * self.rng.uniform(lo, hi))]
        if c.kind == "int" or abs(v) >= 100:
            return int(v)
        return round(v, 1)

    def year(self, t: TableDef, c: ColumnDef) -> str | None:
        counts = Counter(str(v)[:4] for v in self.values(t, c))
        n = sum(counts.values())
        good = sorted(y for y, k in counts.items() if 2 <= k <= 0.6 * n)
        return self.rng.choice(good) if good else None

    def label_value(self, t: TableDef) -> Any | None:
        lab = t.label
        return self.rng.choice(self.values(t, lab)) if lab else None


@dataclass
class B:
    """Renders physical names and records every table and column it renders."""

    ctx: Ctx
    tables: list[str] = field(default_factory=list)
    cols: set[str] = field(default_factory=set)

    def T(self, t: TableDef, alias: str = "") -> str:
        name = self.ctx.layout.tables[t.key]
        if name not in self.tables:
            self.tables.append(name)
        return f"{name} AS {alias}" if alias else name

    def C(self, t: TableDef, c: ColumnDef, alias: str = "") -> str:
        tname = self.ctx.layout.tables[t.key]
        name = self.ctx.layout.columns[(t.key, c.key)]
        self.cols.add(f"{tname}.{name}")
        return f"{alias}.{name}" if alias else name

    def join(self, child: TableDef, fk: ColumnDef, parent: TableDef, ca: str, pa: str) -> str:
        return f"{self.C(child, fk, ca)} = {self.C(parent, parent.pk, pa)}"

    def done(self, template: str, question: str, sql: str, baseline: str = "", tie: str = "",
             tie_expected: int = 0) -> Candidate:
        return Candidate(template, question, sql, tuple(self.tables), tuple(sorted(self.cols)), baseline, tie,
                         tie_expected)


Template = Callable[[Ctx], Iterator[Candidate]]
TEMPLATES: dict[str, tuple[Template, str]] = {}


def template(name: str, hint: str) -> Callable[[Template], Template]:
    def register(fn: Template) -> Template:
        TEMPLATES[name] = (fn, hint)
        return fn
    return register


# ---------------------------------------------------------------------------------------
# Shapes of the logical schema the templates draw from
# ---------------------------------------------------------------------------------------


def _tables(ctx: Ctx, *need: str) -> list[TableDef]:
    out = []
    for t in ctx.dom.tables:
        if "label" in need and t.label is None:
            continue
        if "cat" in need and not t.of_kind("cat"):
            continue
        if "measure" in need and not t.of_kind(*MEASURES):
            continue
        if "date" in need and not t.of_kind("date"):
            continue
        out.append(t)
    ctx.rng.shuffle(out)
    return out


def _edges(ctx: Ctx) -> list[tuple[TableDef, ColumnDef, TableDef]]:
    """(child, foreign key, parent) for every foreign key."""
    out = [(t, fk, ctx.dom.table(fk.ref)) for t in ctx.dom.tables for fk in t.fks]
    ctx.rng.shuffle(out)
    return out


def _chains(ctx: Ctx, length: int) -> list[list[tuple[TableDef, ColumnDef, TableDef]]]:
    """Paths of `length` foreign-key hops, child first: [(a, fk, b), (b, fk2, c), ...]."""
    paths = [[e] for e in _edges(ctx)]
    for _ in range(length - 1):
        paths = [p + [e] for p in paths for e in _edges(ctx) if e[0].key == p[-1][2].key
                 and e[2].key not in {x[0].key for x in p}]
    ctx.rng.shuffle(paths)
    return paths


def _pick(rng: random.Random, items: list[Any]) -> Any:
    return rng.choice(items)


def _say(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


def _total(m: ColumnDef) -> str:
    return m.english if m.english.startswith("total") else f"total {m.english}"


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


# ---------------------------------------------------------------------------------------
# Single-table templates
# ---------------------------------------------------------------------------------------


@template("filter_cat", "list rows of one table matching a category")
def filter_cat(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "cat"):
        c = _pick(ctx.rng, t.of_kind("cat"))
        v = ctx.cat_value(t, c)
        if v is None:
            continue
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)}"
        q = _say(ctx.rng, f"List the {t.label.english} of every {t.english} whose {c.english} is '{v}'.",
                 f"Which {t.plural} have {c.english} '{v}'? Give their {t.label.english}.")
        yield b.done("filter_cat", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("filter_num_gt", "list rows of one table with a measure above a threshold")
def filter_num_gt(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "measure"):
        m = _pick(ctx.rng, t.of_kind(*MEASURES))
        x = ctx.threshold(t, m, 0.6, 0.9)
        if x is None:
            continue
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, m)} > {lit(x)}"
        q = _say(ctx.rng, f"Which {t.plural} have {m.english} above {x}? List their {t.label.english}.",
                 f"List the {t.label.english} of the {t.plural} whose {m.english} is greater than {x}.")
        yield b.done("filter_num_gt", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("filter_num_lt", "list rows of one table with a measure below a threshold")
def filter_num_lt(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "measure"):
        m = _pick(ctx.rng, t.of_kind(*MEASURES))
        x = ctx.threshold(t, m, 0.1, 0.4)
        if x is None:
            continue
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, m)} < {lit(x)}"
        q = f"List the {t.label.english} of the {t.plural} with {m.english} below {x}."
        yield b.done("filter_num_lt", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("filter_between", "list rows of one table with a measure in a range")
def filter_between(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "measure"):
        m = _pick(ctx.rng, t.of_kind(*MEASURES))
        lo, hi = ctx.threshold(t, m, 0.2, 0.45), ctx.threshold(t, m, 0.55, 0.8)
        if lo is None or hi is None or lo >= hi:
            continue
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, m)} BETWEEN {lit(lo)} AND {lit(hi)}"
        q = f"Which {t.plural} have {m.english} between {lo} and {hi} (inclusive)? Give their {t.label.english}."
        yield b.done("filter_between", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("filter_cat_and_num", "list rows matching a category and a threshold")
def filter_cat_and_num(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        v, x = ctx.cat_value(t, c), ctx.threshold(t, m, 0.3, 0.6)
        if v is None or x is None:
            continue
        b = B(ctx)
        sql = (f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)} "
               f"AND {b.C(t, m)} > {lit(x)}")
        q = f"List the {t.label.english} of the {t.plural} with {c.english} '{v}' and {m.english} above {x}."
        yield b.done("filter_cat_and_num", q, sql,
                     baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)}")


@template("filter_cat_in", "list rows whose category is one of two values")
def filter_cat_in(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "cat"):
        c = _pick(ctx.rng, t.of_kind("cat"))
        vals = sorted(set(ctx.values(t, c)))
        if len(vals) < 4:
            continue
        v1, v2 = ctx.rng.sample(vals, 2)
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, c)} IN ({lit(v1)}, {lit(v2)})"
        q = f"Which {t.plural} have {c.english} '{v1}' or '{v2}'? List their {t.label.english}."
        yield b.done("filter_cat_in", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("filter_year", "list rows of one table dated in a given year")
def filter_year(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "date"):
        d = _pick(ctx.rng, t.of_kind("date"))
        y = ctx.year(t, d)
        if y is None:
            continue
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE strftime('%Y', {b.C(t, d)}) = '{y}'"
        q = _say(ctx.rng, f"List the {t.label.english} of the {t.plural} whose {d.english} falls in {y}.",
                 f"Which {t.plural} have a {d.english} in the year {y}? Give their {t.label.english}.")
        yield b.done("filter_year", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("filter_prefix", "list rows whose name starts with given letters")
def filter_prefix(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label"):
        labels = [str(v) for v in ctx.values(t, t.label)]
        starts = Counter(v[:1] for v in labels)
        good = sorted(s for s, k in starts.items() if 2 <= k <= 0.5 * len(labels) and s.isalpha())
        if not good:
            continue
        p = ctx.rng.choice(good)
        b = B(ctx)
        sql = f"SELECT {b.C(t, t.label)} FROM {b.T(t)} WHERE {b.C(t, t.label)} LIKE '{p}%'"
        q = f"List the {t.plural} whose {t.label.english} starts with '{p}'."
        yield b.done("filter_prefix", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {b.T(t)}")


@template("count_cat", "count the rows of one table matching a category")
def count_cat(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat"):
        c = _pick(ctx.rng, t.of_kind("cat"))
        v = ctx.cat_value(t, c)
        if v is None:
            continue
        b = B(ctx)
        sql = f"SELECT COUNT(*) FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)}"
        q = _say(ctx.rng, f"How many {t.plural} have {c.english} '{v}'?",
                 f"Count the {t.plural} whose {c.english} is '{v}'.")
        yield b.done("count_cat", q, sql)


@template("count_distinct", "count the distinct values of a column among filtered rows")
def count_distinct(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        x = ctx.threshold(t, m, 0.7, 0.92)
        if x is None:
            continue
        b = B(ctx)
        sql = f"SELECT COUNT(DISTINCT {b.C(t, c)}) FROM {b.T(t)} WHERE {b.C(t, m)} > {lit(x)}"
        q = f"How many different {c.english} values do the {t.plural} with {m.english} above {x} have?"
        yield b.done("count_distinct", q, sql)


@template("sum_cat", "total a measure over rows matching a category")
def sum_cat(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        v = ctx.cat_value(t, c)
        if v is None:
            continue
        b = B(ctx)
        sql = f"SELECT SUM({b.C(t, m)}) FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)}"
        q = f"What is the {_total(m)} of the {t.plural} with {c.english} '{v}'?"
        yield b.done("sum_cat", q, sql)


@template("avg_cat", "average a measure over rows matching a category")
def avg_cat(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        v = ctx.cat_value(t, c)
        if v is None:
            continue
        b = B(ctx)
        sql = f"SELECT ROUND(AVG({b.C(t, m)}), 2) FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)}"
        q = f"What is the average {m.english} of the {t.plural} with {c.english} '{v}', rounded to 2 decimals?"
        yield b.done("avg_cat", q, sql)


@template("max_cat", "the largest value of a measure among rows matching a category")
def max_cat(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        v = ctx.cat_value(t, c)
        if v is None:
            continue
        hi = ctx.rng.random() < 0.6
        b = B(ctx)
        sql = f"SELECT {'MAX' if hi else 'MIN'}({b.C(t, m)}) FROM {b.T(t)} WHERE {b.C(t, c)} = {lit(v)}"
        q = f"What is the {'highest' if hi else 'lowest'} {m.english} among the {t.plural} with {c.english} '{v}'?"
        yield b.done("max_cat", q, sql)


@template("group_count", "count rows per category")
def group_count(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat"):
        c = _pick(ctx.rng, t.of_kind("cat"))
        b = B(ctx)
        sql = f"SELECT {b.C(t, c)}, COUNT(*) FROM {b.T(t)} GROUP BY {b.C(t, c)}"
        q = _say(ctx.rng, f"For each {c.english}, how many {t.plural} are there?",
                 f"Count the {t.plural} per {c.english}. Give the {c.english} and the count.")
        yield b.done("group_count", q, sql)


@template("group_sum", "total a measure per category")
def group_sum(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        b = B(ctx)
        sql = f"SELECT {b.C(t, c)}, SUM({b.C(t, m)}) FROM {b.T(t)} GROUP BY {b.C(t, c)}"
        q = f"What is the {_total(m)} of the {t.plural} for each {c.english}? Give the {c.english} and the total."
        yield b.done("group_sum", q, sql)


@template("group_avg", "average a measure per category")
def group_avg(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat", "measure"):
        c, m = _pick(ctx.rng, t.of_kind("cat")), _pick(ctx.rng, t.of_kind(*MEASURES))
        b = B(ctx)
        sql = f"SELECT {b.C(t, c)}, ROUND(AVG({b.C(t, m)}), 2) FROM {b.T(t)} GROUP BY {b.C(t, c)}"
        q = (f"For each {c.english}, what is the average {m.english} of the {t.plural}, rounded to 2 decimals? "
             f"Give the {c.english} and the average.")
        yield b.done("group_avg", q, sql)


@template("group_having", "categories with more than a number of rows")
def group_having(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "cat"):
        c = _pick(ctx.rng, t.of_kind("cat"))
        counts = sorted(Counter(ctx.values(t, c)).values())
        if len(counts) < 3:
            continue
        n = counts[len(counts) // 2]
        b = B(ctx)
        sql = f"SELECT {b.C(t, c)} FROM {b.T(t)} GROUP BY {b.C(t, c)} HAVING COUNT(*) > {n}"
        q = f"Which {c.english} values are shared by more than {n} {t.plural}?"
        yield b.done("group_having", q, sql, baseline=f"SELECT DISTINCT {b.C(t, c)} FROM {b.T(t)}")


@template("top_k", "the rows with the highest values of a measure")
def top_k(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "measure"):
        m = _pick(ctx.rng, t.of_kind(*MEASURES))
        k = ctx.rng.randint(2, 5)
        b = B(ctx)
        tn, mn = b.T(t), b.C(t, m)
        sql = f"SELECT {b.C(t, t.label)} FROM {tn} ORDER BY {mn} DESC LIMIT {k}"
        q = _say(ctx.rng, f"Which {k} {t.plural} have the highest {m.english}? Give their {t.label.english}.",
                 f"List the {t.label.english} of the top {k} {t.plural} by {m.english}.")
        tie = f"SELECT COUNT(*) FROM {tn} WHERE {mn} >= (SELECT {mn} FROM {tn} ORDER BY {mn} DESC LIMIT 1 OFFSET {k - 1})"
        yield b.done("top_k", q, sql, tie=tie, tie_expected=k)


@template("bottom_1", "the row with the lowest value of a measure")
def bottom_1(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "measure"):
        m = _pick(ctx.rng, t.of_kind(*MEASURES))
        b = B(ctx)
        tn, mn = b.T(t), b.C(t, m)
        sql = f"SELECT {b.C(t, t.label)} FROM {tn} ORDER BY {mn} ASC LIMIT 1"
        q = f"Which {t.english} has the lowest {m.english}? Give its {t.label.english}."
        tie = f"SELECT COUNT(*) FROM {tn} WHERE {mn} = (SELECT MIN({mn}) FROM {tn})"
        yield b.done("bottom_1", q, sql, tie=tie, tie_expected=1)


@template("above_average", "rows whose measure is above the table's average")
def above_average(ctx: Ctx) -> Iterator[Candidate]:
    for t in _tables(ctx, "label", "measure"):
        m = _pick(ctx.rng, t.of_kind(*MEASURES))
        b = B(ctx)
        tn, mn = b.T(t), b.C(t, m)
        sql = f"SELECT {b.C(t, t.label)} FROM {tn} WHERE {mn} > (SELECT AVG({mn}) FROM {tn})"
        q = f"Which {t.plural} have {m.english} above the average {m.english} of all {t.plural}? List their {t.label.english}."
        yield b.done("above_average", q, sql, baseline=f"SELECT {b.C(t, t.label)} FROM {tn}")


# ---------------------------------------------------------------------------------------
# Two-table joins
# ---------------------------------------------------------------------------------------


@template("join_filter_parent", "list child rows whose parent matches a category")
def join_filter_parent(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if child.label is None or not parent.of_kind("cat"):
            continue
        c = _pick(ctx.rng, parent.of_kind("cat"))
        v = ctx.cat_value(parent, c)
        if v is None:
            continue
        b = B(ctx)
        sql = (f"SELECT {b.C(child, child.label, 'T1')} FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} WHERE {b.C(parent, c, 'T2')} = {lit(v)}")
        q = (f"List the {child.label.english} of the {child.plural} whose {parent.english} has "
             f"{c.english} '{v}'.")
        yield b.done("join_filter_parent", q, sql)


@template("join_parent_label", "list child rows of one named parent")
def join_parent_label(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if child.label is None or parent.label is None:
            continue
        counts = Counter(r[fk.key] for r in ctx.data[child.key])
        pk = parent.pk.key
        good = [r for r in ctx.data[parent.key] if 2 <= counts.get(r[pk], 0) <= 0.5 * len(ctx.data[child.key])]
        if not good:
            continue
        name = ctx.rng.choice(good)[parent.label.key]
        b = B(ctx)
        sql = (f"SELECT {b.C(child, child.label, 'T1')} FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} WHERE {b.C(parent, parent.label, 'T2')} = {lit(name)}")
        q = f"List the {child.label.english} of the {child.plural} of the {parent.english} '{name}'."
        yield b.done("join_parent_label", q, sql)


@template("join_count_per_parent", "count child rows per parent")
def join_count_per_parent(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if parent.label is None:
            continue
        b = B(ctx)
        sql = (f"SELECT {b.C(parent, parent.label, 'T2')}, COUNT(*) FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} GROUP BY {b.C(parent, parent.pk, 'T2')}, "
               f"{b.C(parent, parent.label, 'T2')}")
        q = (f"For each {parent.english} that has {child.plural}, give its {parent.label.english} and how many "
             f"{child.plural} it has.")
        yield b.done("join_count_per_parent", q, sql)


@template("join_sum_by_parent_cat", "total a child measure per parent category")
def join_sum_by_parent_cat(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if not child.of_kind(*MEASURES) or not parent.of_kind("cat"):
            continue
        m, c = _pick(ctx.rng, child.of_kind(*MEASURES)), _pick(ctx.rng, parent.of_kind("cat"))
        b = B(ctx)
        sql = (f"SELECT {b.C(parent, c, 'T2')}, SUM({b.C(child, m, 'T1')}) FROM {b.T(child, 'T1')} "
               f"JOIN {b.T(parent, 'T2')} ON {b.join(child, fk, parent, 'T1', 'T2')} GROUP BY {b.C(parent, c, 'T2')}")
        q = (f"What is the {_total(m)} of the {child.plural} for each {c.english} of their {parent.english}? "
             f"Give the {c.english} and the total.")
        yield b.done("join_sum_by_parent_cat", q, sql)


@template("join_top_parent", "the parent with the most child rows")
def join_top_parent(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if parent.label is None:
            continue
        b = B(ctx)
        tn, fkn = b.T(child), b.C(child, fk)
        sql = (f"SELECT {b.C(parent, parent.label, 'T2')} FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} GROUP BY {b.C(parent, parent.pk, 'T2')}, "
               f"{b.C(parent, parent.label, 'T2')} ORDER BY COUNT(*) DESC LIMIT 1")
        q = f"Which {parent.english} has the most {child.plural}? Give its {parent.label.english}."
        per = f"SELECT COUNT(*) AS n FROM {tn} GROUP BY {fkn}"
        tie = f"SELECT COUNT(*) FROM ({per}) WHERE n = (SELECT MAX(n) FROM ({per}))"
        yield b.done("join_top_parent", q, sql, tie=tie, tie_expected=1)


@template("join_having", "parents with at least a number of child rows")
def join_having(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if parent.label is None:
            continue
        counts = sorted(Counter(r[fk.key] for r in ctx.data[child.key]).values())
        if len(counts) < 3:
            continue
        n = counts[int(len(counts) * ctx.rng.uniform(0.5, 0.8))]
        b = B(ctx)
        sql = (f"SELECT {b.C(parent, parent.label, 'T2')} FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} GROUP BY {b.C(parent, parent.pk, 'T2')}, "
               f"{b.C(parent, parent.label, 'T2')} HAVING COUNT(*) >= {n}")
        q = f"Which {parent.plural} have at least {n} {child.plural}? List their {parent.label.english}."
        yield b.done("join_having", q, sql)


@template("join_avg_parent_cat", "average a child measure for one parent category")
def join_avg_parent_cat(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if not child.of_kind(*MEASURES) or not parent.of_kind("cat"):
            continue
        m, c = _pick(ctx.rng, child.of_kind(*MEASURES)), _pick(ctx.rng, parent.of_kind("cat"))
        v = ctx.cat_value(parent, c)
        if v is None:
            continue
        b = B(ctx)
        sql = (f"SELECT ROUND(AVG({b.C(child, m, 'T1')}), 2) FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} WHERE {b.C(parent, c, 'T2')} = {lit(v)}")
        q = (f"What is the average {m.english} of the {child.plural} whose {parent.english} has {c.english} '{v}', "
             "rounded to 2 decimals?")
        yield b.done("join_avg_parent_cat", q, sql)


@template("join_distinct_parent", "parents having a child row that matches a category")
def join_distinct_parent(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if parent.label is None or not child.of_kind("cat"):
            continue
        c = _pick(ctx.rng, child.of_kind("cat"))
        v = ctx.cat_value(child, c)
        if v is None:
            continue
        b = B(ctx)
        sql = (f"SELECT DISTINCT {b.C(parent, parent.label, 'T2')} FROM {b.T(child, 'T1')} JOIN {b.T(parent, 'T2')} "
               f"ON {b.join(child, fk, parent, 'T1', 'T2')} WHERE {b.C(child, c, 'T1')} = {lit(v)}")
        q = (f"Which {parent.plural} have at least one {child.english} with {c.english} '{v}'? "
             f"List their {parent.label.english}.")
        yield b.done("join_distinct_parent", q, sql)


# ---------------------------------------------------------------------------------------
# Three- and four-table joins
# ---------------------------------------------------------------------------------------


def _chain_sql(b: B, chain: list[tuple[TableDef, ColumnDef, TableDef]]) -> str:
    """FROM a AS T1 JOIN b AS T2 ON T1.fk = T2.pk JOIN c AS T3 ON ..."""
    parts = [f"FROM {b.T(chain[0][0], 'T1')}"]
    for i, (child, fk, parent) in enumerate(chain, 1):
        parts.append(f"JOIN {b.T(parent, f'T{i + 1}')} ON {b.join(child, fk, parent, f'T{i}', f'T{i + 1}')}")
    return " ".join(parts)


@template("join3_count", "count rows two foreign-key hops from a category")
def join3_count(ctx: Ctx) -> Iterator[Candidate]:
    for chain in _chains(ctx, 2):
        top = chain[-1][2]
        if not top.of_kind("cat"):
            continue
        c = _pick(ctx.rng, top.of_kind("cat"))
        v = ctx.cat_value(top, c)
        if v is None:
            continue
        b = B(ctx)
        sql = f"SELECT COUNT(*) {_chain_sql(b, chain)} WHERE {b.C(top, c, 'T3')} = {lit(v)}"
        q = (f"How many {chain[0][0].plural} belong to {_a(chain[0][2].english)} whose {top.english} "
             f"has {c.english} '{v}'?")
        yield b.done("join3_count", q, sql)


@template("join3_list", "list rows two foreign-key hops from a named row")
def join3_list(ctx: Ctx) -> Iterator[Candidate]:
    for chain in _chains(ctx, 2):
        low, top = chain[0][0], chain[-1][2]
        if low.label is None or top.label is None:
            continue
        row = ctx.rng.choice(ctx.data[low.key])         # walk up from a row that exists
        for _child, fk, parent in chain:
            row = _row_of(ctx, parent, row[fk.key])
        name = row[top.label.key]
        b = B(ctx)
        sql = f"SELECT DISTINCT {b.C(low, low.label, 'T1')} {_chain_sql(b, chain)} WHERE {b.C(top, top.label, 'T3')} = {lit(name)}"
        q = (f"List the {low.label.english} of the {low.plural} whose {chain[0][2].english} belongs to the "
             f"{top.english} '{name}'.")
        yield b.done("join3_list", q, sql)


@template("join3_group", "total a measure per category two foreign-key hops away")
def join3_group(ctx: Ctx) -> Iterator[Candidate]:
    for chain in _chains(ctx, 2):
        low, top = chain[0][0], chain[-1][2]
        if not low.of_kind(*MEASURES) or not top.of_kind("cat"):
            continue
        m, c = _pick(ctx.rng, low.of_kind(*MEASURES)), _pick(ctx.rng, top.of_kind("cat"))
        b = B(ctx)
        sql = f"SELECT {b.C(top, c, 'T3')}, SUM({b.C(low, m, 'T1')}) {_chain_sql(b, chain)} GROUP BY {b.C(top, c, 'T3')}"
        q = (f"For each {c.english} of the {top.english}, what is the {_total(m)} of the "
             f"{low.plural}? (Each {low.english} belongs to {_a(chain[0][2].english)}, which belongs to "
             f"{_a(top.english)}.)")
        yield b.done("join3_group", q, sql)


@template("two_parents", "rows filtered on two different parents")
def two_parents(ctx: Ctx) -> Iterator[Candidate]:
    tables = [t for t in ctx.dom.tables if len(t.fks) >= 2]
    ctx.rng.shuffle(tables)
    for t in tables:
        fk1, fk2 = ctx.rng.sample(t.fks, 2)
        p1, p2 = ctx.dom.table(fk1.ref), ctx.dom.table(fk2.ref)
        if p1.key == p2.key or not p1.of_kind("cat") or p2.label is None:
            continue
        c = _pick(ctx.rng, p1.of_kind("cat"))
        row = ctx.rng.choice(ctx.data[t.key])          # a row that exists: the count is not zero
        v = _row_of(ctx, p1, row[fk1.key])[c.key]
        name = _row_of(ctx, p2, row[fk2.key])[p2.label.key]
        b = B(ctx)
        sql = (f"SELECT COUNT(*) FROM {b.T(t, 'T1')} JOIN {b.T(p1, 'T2')} ON {b.join(t, fk1, p1, 'T1', 'T2')} "
               f"JOIN {b.T(p2, 'T3')} ON {b.join(t, fk2, p2, 'T1', 'T3')} "
               f"WHERE {b.C(p1, c, 'T2')} = {lit(v)} AND {b.C(p2, p2.label, 'T3')} = {lit(name)}")
        q = (f"How many {t.plural} have {_a(p1.english)} with {c.english} '{v}' and the {p2.english} "
             f"'{name}'?")
        yield b.done("two_parents", q, sql)


def _row_of(ctx: Ctx, t: TableDef, pk: Any) -> Row:
    for r in ctx.data[t.key]:
        if r[t.pk.key] == pk:
            return r
    raise KeyError(f"{t.key} has no row {pk!r}")


@template("join4_group", "count rows per category three foreign-key hops away")
def join4_group(ctx: Ctx) -> Iterator[Candidate]:
    for chain in _chains(ctx, 3):
        low, top = chain[0][0], chain[-1][2]
        cats = top.of_kind("cat", "label")
        if not cats:
            continue
        c = _pick(ctx.rng, cats)
        b = B(ctx)
        sql = f"SELECT {b.C(top, c, 'T4')}, COUNT(*) {_chain_sql(b, chain)} GROUP BY {b.C(top, c, 'T4')}"
        path = " -> ".join([low.english] + [e[2].english for e in chain])
        q = (f"How many {low.plural} are there for each {c.english} of the {top.english} they belong to "
             f"(through {path})?")
        yield b.done("join4_group", q, sql)


@template("join4_filter", "list rows filtered on a category three foreign-key hops away")
def join4_filter(ctx: Ctx) -> Iterator[Candidate]:
    for chain in _chains(ctx, 3):
        low, top = chain[0][0], chain[-1][2]
        if not top.of_kind("cat"):
            continue
        c = _pick(ctx.rng, top.of_kind("cat"))
        v = ctx.cat_value(top, c)
        if v is None:
            continue
        b = B(ctx)
        what = b.C(low, low.label, "T1") if low.label else "COUNT(*)"
        sql = f"SELECT {'DISTINCT ' if low.label else ''}{what} {_chain_sql(b, chain)} WHERE {b.C(top, c, 'T4')} = {lit(v)}"
        path = " -> ".join([low.english] + [e[2].english for e in chain])
        ask = f"List the {low.label.english} of the {low.plural}" if low.label else f"How many {low.plural} are there"
        q = f"{ask} whose {top.english} (through {path}) has {c.english} '{v}'{'.' if low.label else '?'}"
        yield b.done("join4_filter", q, sql)


# ---------------------------------------------------------------------------------------
# Anti-joins
# ---------------------------------------------------------------------------------------


@template("not_exists", "parents without any child row")
def not_exists(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if parent.label is None:
            continue
        b = B(ctx)
        sql = (f"SELECT {b.C(parent, parent.label, 'T1')} FROM {b.T(parent, 'T1')} WHERE NOT EXISTS "
               f"(SELECT 1 FROM {b.T(child, 'T2')} WHERE {b.join(child, fk, parent, 'T2', 'T1')})")
        q = _say(ctx.rng, f"Which {parent.plural} have no {child.plural}? List their {parent.label.english}.",
                 f"List the {parent.label.english} of every {parent.english} that no {child.english} refers to.")
        yield b.done("not_exists", q, sql, baseline=f"SELECT {b.C(parent, parent.label)} FROM {b.T(parent)}")


@template("not_exists_cat", "parents without a child row of a given category")
def not_exists_cat(ctx: Ctx) -> Iterator[Candidate]:
    for child, fk, parent in _edges(ctx):
        if parent.label is None or not child.of_kind("cat"):
            continue
        c = _pick(ctx.rng, child.of_kind("cat"))
        v = ctx.cat_value(child, c)
        if v is None:
            continue
        b = B(ctx)
        sql = (f"SELECT {b.C(parent, parent.label, 'T1')} FROM {b.T(parent, 'T1')} WHERE NOT EXISTS "
               f"(SELECT 1 FROM {b.T(child, 'T2')} WHERE {b.join(child, fk, parent, 'T2', 'T1')} "
               f"AND {b.C(child, c, 'T2')} = {lit(v)})")
        q = (f"Which {parent.plural} have no {child.english} with {c.english} '{v}'? "
             f"List their {parent.label.english}.")
        yield b.done("not_exists_cat", q, sql, baseline=f"SELECT {b.C(parent, parent.label)} FROM {b.T(parent)}")


def template_names() -> list[str]:
    return list(TEMPLATES)


def candidates(template_name: str, ctx: Ctx) -> list[Candidate]:
    fn, _hint = TEMPLATES[template_name]
    return list(fn(ctx))
