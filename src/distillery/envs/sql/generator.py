"""Enterprise-like SQLite databases from a seed.

One database (`DbSpec`): a domain's core tables in one naming style, filled with seeded
data; decoy copies of every core table (`_bak`, `_old`, `_stg`: the same columns, or one
fewer, holding different data); `n_fillers` filler tables whose column names collide with
the core ones; and a catalogue of comments (`data_dictionary`, since SQLite keeps none) in
which some comments are missing and some decoys falsely claim to be the system of record.

Sibling databases (same schema, different data) are written as *overlays*: a file holding
only the core and decoy tables with data drawn from another seed. `engine.open_db` opens
an overlay with the main file attached behind it, so the fillers and the catalogue are
shared and every sibling costs a few kilobytes instead of a full copy.

Files use 512-byte pages (every table costs at least one page; 300 tables in 4 KiB pages
would be over a megabyte of empty space) and are written to a temporary name, then renamed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery.envs.sql.domains import (
    FILLER_COLUMNS,
    FILLER_SUFFIXES,
    FILLER_WORDS,
    MEASURES,
    ColumnDef,
    Domain,
    TableDef,
    domain,
    draw_value,
)
from distillery.envs.sql.naming import Namer

CATALOG = "data_dictionary"
DECOY_TAGS = ("bak", "old", "stg")
PAGE_SIZE = 512

Row = dict[str, Any]


@dataclass(frozen=True)
class DbSpec:
    """Everything a generated database is a function of."""

    seed: int
    domain: str
    style: str
    n_fillers: int = 200
    n_siblings: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DbSpec:
        return cls(int(d["seed"]), str(d["domain"]), str(d["style"]), int(d.get("n_fillers", 200)),
                   int(d.get("n_siblings", 2)))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class PhysTable:
    """One table as written: its physical name and columns, its rows, its comments."""

    name: str
    role: str                                   # core | decoy | filler
    columns: list[str]                          # physical column names
    types: list[str]
    rows: list[tuple[Any, ...]]
    key: str = ""                               # the logical table (core and decoys)
    col_keys: list[str] = field(default_factory=list)   # logical column of each column (core and decoys)
    pk: str = ""
    fks: list[tuple[str, str, str]] = field(default_factory=list)   # (column, parent table, parent column)
    comment: str | None = None
    col_comments: dict[str, str] = field(default_factory=dict)
    of: str = ""                                # decoys: the real table's name
    tag: str = ""                               # decoys: bak | old | stg


@dataclass
class Layout:
    """What a question generator needs to know about one generated database."""

    spec: DbSpec
    tables: dict[str, str]                       # logical table -> physical name
    columns: dict[tuple[str, str], str]          # (logical table, logical column) -> physical name
    decoys: dict[str, list[str]]                 # logical table -> its decoys' names
    decoy_columns: dict[str, list[str]]          # decoy name -> its columns (a subset of the real ones)
    n_tables: int = 0


@dataclass
class BuiltDb:
    spec: DbSpec
    path: Path
    siblings: list[Path]
    layout: Layout
    data: dict[str, list[Row]]                   # the main database's core rows, by logical table
    size_bytes: int = 0


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def _label_like(c: ColumnDef) -> bool:
    return c.kind == "label"


def core_data(dom: Domain, rng: random.Random) -> dict[str, list[Row]]:
    """Rows of every core table, parents before children; foreign keys point at a skewed
    subset of the parents (some parents have no children, a few have many)."""
    data: dict[str, list[Row]] = {}
    for t in dom.tables:
        n = rng.randint(*t.rows)
        start = rng.choice((1, 1, 101, 1001))
        parent_pick: dict[str, tuple[list[int], list[float]]] = {}
        for c in t.fks:
            ids = [r[dom.table(c.ref).pk.key] for r in data[c.ref]]
            active = rng.sample(ids, max(1, math.ceil(len(ids) * rng.uniform(0.7, 0.9))))
            parent_pick[c.key] = (active, [0.2 + rng.random() ** 2 for _ in active])
        rows: list[Row] = []
        seen: dict[str, set[Any]] = {c.key: set() for c in t.columns if _label_like(c)}
        for i in range(n):
            row: Row = {}
            for c in t.columns:
                if c.kind == "pk":
                    row[c.key] = start + i
                elif c.kind == "fk":
                    ids, weights = parent_pick[c.key]
                    row[c.key] = rng.choices(ids, weights)[0]
                else:
                    v = draw_value(c.gen, rng, i)
                    if c.key in seen:
                        for _ in range(200):
                            if v not in seen[c.key]:
                                break
                            v = draw_value(c.gen, rng, i)
                        else:
                            raise RuntimeError(f"{dom.name}.{t.key}.{c.key}: cannot draw {n} distinct values "
                                               f"from {c.gen!r}; lower the table's row range")
                        seen[c.key].add(v)
                    row[c.key] = v
            rows.append(row)
        data[t.key] = rows
    return data


def perturb(rows: list[Row], t: TableDef, data: dict[str, list[Row]], dom: Domain, rng: random.Random,
            tag: str) -> list[Row]:
    """A decoy's rows: some dropped, some values changed, and (staging copies) some added."""
    out = [dict(r) for r in rows if rng.random() > 0.25] or [dict(rows[0])]
    editable = [c for c in t.columns if c.kind not in ("pk", "fk")]
    fks = t.fks
    for r in out:
        if rng.random() < 0.5 and editable:
            c = rng.choice(editable)
            if c.kind in MEASURES and r[c.key] is not None:
                v = r[c.key] * rng.uniform(0.55, 1.45)
                r[c.key] = int(round(v)) if c.kind == "int" else round(v, 2)
            else:
                r[c.key] = draw_value(c.gen, rng, 0)
        if fks and rng.random() < 0.25:
            c = rng.choice(fks)
            r[c.key] = rng.choice([p[dom.table(c.ref).pk.key] for p in data[c.ref]])
    if tag == "stg" or rng.random() < 0.3:
        top = max(r[t.pk.key] for r in rows)
        for j in range(max(1, len(rows) // rng.randint(6, 10))):
            new: Row = {}
            for c in t.columns:
                if c.kind == "pk":
                    new[c.key] = top + 1 + j
                elif c.kind == "fk":
                    new[c.key] = rng.choice([p[dom.table(c.ref).pk.key] for p in data[c.ref]])
                else:
                    new[c.key] = draw_value(c.gen, rng, j)
            out.append(new)
    return out


# ---------------------------------------------------------------------------------------
# Layout: names, decoys, fillers, comments
# ---------------------------------------------------------------------------------------


@dataclass
class _Plan:
    namer: Namer
    tables: dict[str, str]
    columns: dict[tuple[str, str], str]
    decoys: list[tuple[str, str, str, bool]]       # (logical table, decoy name, tag, drops its last column)
    fillers: list[PhysTable]
    comments: random.Random


def _unique_columns(names: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for n in names:
        base, i = n, 2
        while n.lower() in seen:
            n = f"{base}{i}"
            i += 1
        seen.add(n.lower())
        out.append(n)
    return out


def _plan(spec: DbSpec) -> _Plan:
    dom = domain(spec.domain)
    namer = Namer.draw(spec.style, random.Random(f"sqldb:{spec.seed}:names"))
    taken: set[str] = {CATALOG}
    tables: dict[str, str] = {}
    columns: dict[tuple[str, str], str] = {}
    for t in dom.tables:
        name = namer.table(t.words)
        while name.lower() in taken:
            name = namer.table([*t.words, "main"])
        taken.add(name.lower())
        tables[t.key] = name
        phys = _unique_columns([namer.column(c.words, t.key, t.words) for c in t.columns])
        for c, p in zip(t.columns, phys, strict=True):
            columns[(t.key, c.key)] = p
    rng = random.Random(f"sqldb:{spec.seed}:decoys")
    decoys: list[tuple[str, str, str, bool]] = []
    for t in dom.tables:
        tags = rng.sample(DECOY_TAGS, 2 if rng.random() < 0.35 else 1)
        for tag in tags:
            name = namer.decoy(tables[t.key], tag, in_front=tag == "stg" and rng.random() < 0.4)
            if name.lower() in taken:
                continue
            taken.add(name.lower())
            decoys.append((t.key, name, tag, tag == "old" and rng.random() < 0.5))
    fillers = _fillers(spec, dom, namer, taken)
    return _Plan(namer, tables, columns, decoys, fillers, random.Random(f"sqldb:{spec.seed}:comments"))


def _fillers(spec: DbSpec, dom: Domain, namer: Namer, taken: set[str]) -> list[PhysTable]:
    rng = random.Random(f"sqldb:{spec.seed}:fillers")
    core_words = sorted({w for t in dom.tables for w in t.words})
    bases = core_words * 3 + list(dom.words) * 2 + list(FILLER_WORDS)
    seconds = list(dom.words) + list(FILLER_WORDS)
    core_cols = [(t, c) for t in dom.tables for c in t.columns if c.kind != "pk"]
    out: list[PhysTable] = []
    attempts = 0
    while len(out) < spec.n_fillers and attempts < spec.n_fillers * 20:
        attempts += 1
        words = [rng.choice(bases)]
        if rng.random() < 0.5:
            words.append(rng.choice(seconds))
        if rng.random() < 0.75:
            words.append(rng.choice(FILLER_SUFFIXES))
        if len(set(words)) < len(words):
            continue
        key = "filler_" + "_".join(words)
        name = namer.table(words, plural_ok=False)
        if name.lower() in taken:
            continue
        taken.add(name.lower())
        cols: list[ColumnDef] = [ColumnDef(f"{words[0]}_id" if rng.random() < 0.5 else "id", "pk", "seq")]
        for _t, c in rng.sample(core_cols, rng.randint(2, 4)):
            cols.append(c if c.kind != "fk" else ColumnDef(c.key, "int", "int:1:60", c.english, c.comment))
        cols += rng.sample(FILLER_COLUMNS, rng.randint(0, 2))
        keys: list[str] = []
        uniq: list[ColumnDef] = []
        for c in cols:
            if c.key not in keys:
                keys.append(c.key)
                uniq.append(c)
        phys = _unique_columns([namer.column(c.words, key, words) for c in uniq])
        n = rng.randint(1, 4)
        rows = [tuple(i + 1 if c.kind == "pk" else draw_value(c.gen, rng, i) for c in uniq) for i in range(n)]
        table = PhysTable(name, "filler", phys, [c.sql_type for c in uniq], rows, key=key, pk=phys[0])
        if rng.random() < 0.5:
            w = " ".join(words[:-1] if len(words) > 1 else words)
            table.comment = rng.choice((f"Audit trail of {w}.", f"Snapshot of {w} data.",
                                        f"Temporary table used by the {w} import.", f"Mapping of {w} codes.",
                                        f"Reporting extract: {w}.", f"{w.capitalize()} ({words[-1]})."))
        for c, p in zip(uniq, phys, strict=True):
            if c.kind != "pk" and rng.random() < 0.3:
                table.col_comments[p] = c.comment
        out.append(table)
    return out


def _core_tables(dom: Domain, plan: _Plan, data: dict[str, list[Row]], spec: DbSpec, data_seed: str,
                 with_comments: bool) -> list[PhysTable]:
    """The core tables and their decoys, holding `data` (and decoy data derived from it)."""
    out: list[PhysTable] = []
    crng = plan.comments if with_comments else random.Random(0)
    for t in dom.tables:
        cols = [plan.columns[(t.key, c.key)] for c in t.columns]
        table = PhysTable(plan.tables[t.key], "core", cols, [c.sql_type for c in t.columns],
                          [tuple(r[c.key] for c in t.columns) for r in data[t.key]], key=t.key,
                          col_keys=[c.key for c in t.columns], pk=plan.columns[(t.key, t.pk.key)],
                          fks=[(plan.columns[(t.key, c.key)], plan.tables[c.ref],
                                plan.columns[(c.ref, dom.table(c.ref).pk.key)]) for c in t.fks])
        if with_comments:
            if crng.random() < 0.75:
                table.comment = t.comment + (" System of record." if crng.random() < 0.3 else "")
            for c, p in zip(t.columns, cols, strict=True):
                if crng.random() < (0.3 if c.kind == "pk" else 0.6):
                    table.col_comments[p] = c.comment
        out.append(table)
    for i, (tkey, name, tag, drop_last) in enumerate(plan.decoys):
        t = dom.table(tkey)
        keep = list(t.columns)
        if drop_last:
            droppable = [c for c in keep if c.kind in (*MEASURES, "date", "cat")]
            if droppable:
                keep.remove(droppable[-1])
        drng = random.Random(f"sqldb:{spec.seed}:{data_seed}:decoy:{i}")
        rows = perturb(data[tkey], t, data, dom, drng, tag)
        cols = [plan.columns[(tkey, c.key)] for c in keep]
        table = PhysTable(name, "decoy", cols, [c.sql_type for c in keep],
                          [tuple(r[c.key] for c in keep) for r in rows], key=tkey,
                          col_keys=[c.key for c in keep], pk=plan.columns[(tkey, t.pk.key)],
                          of=plan.tables[tkey], tag=tag)
        if with_comments:
            roll = crng.random()
            if roll < 0.3:      # a decoy that claims to be the real thing
                table.comment = crng.choice((f"{t.comment} System of record.",
                                             f"Authoritative {t.plural} table. Use this one.", t.comment))
            elif roll < 0.75:
                table.comment = {
                    "bak": f"Backup of {t.plural} taken {crng.randint(2018, 2023)}-{crng.randint(1, 12):02d}. "
                           "Not maintained.",
                    "old": f"Old {t.english} table, replaced in {crng.randint(2017, 2023)}.",
                    "stg": f"Staging copy of {t.plural} for nightly loads; may hold unvalidated rows.",
                }[tag]
            for c, p in zip(keep, cols, strict=True):
                if crng.random() < 0.3:
                    table.col_comments[p] = c.comment
        out.append(table)
    return out


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ddl(t: PhysTable) -> str:
    parts = [f"{_q(c)} {ty}{' PRIMARY KEY' if c == t.pk else ''}" for c, ty in zip(t.columns, t.types, strict=True)]
    parts += [f"FOREIGN KEY ({_q(c)}) REFERENCES {_q(p)} ({_q(pc)})" for c, p, pc in t.fks]
    return f"CREATE TABLE {_q(t.name)} ({', '.join(parts)})"


def write_tables(path: Path, tables: list[PhysTable], catalog: bool, page_size: int = PAGE_SIZE) -> int:
    """Write `tables` (and, if `catalog`, their comments) into a new SQLite file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size = {int(page_size)}")
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("BEGIN")
            for t in tables:
                conn.execute(ddl(t))
                if t.rows:
                    marks = ", ".join("?" for _ in t.columns)
                    conn.executemany(f"INSERT INTO {_q(t.name)} VALUES ({marks})", t.rows)
            if catalog:
                conn.execute(f"CREATE TABLE {CATALOG} (table_name TEXT, column_name TEXT, comment TEXT)")
                rows = []
                for t in sorted(tables, key=lambda t: t.name):
                    if t.comment:
                        rows.append((t.name, "", t.comment))
                    rows += [(t.name, c, t.col_comments[c]) for c in t.columns if c in t.col_comments]
                conn.executemany(f"INSERT INTO {CATALOG} VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


def sibling_paths(path: Path, n: int) -> list[Path]:
    return [path.with_name(f"{path.stem}.sib{i}{path.suffix}") for i in range(1, n + 1)]


def build_database(spec: DbSpec, path: str | Path) -> BuiltDb:
    """Write the database `spec` describes to `path`, and its siblings beside it."""
    path = Path(path)
    dom = domain(spec.domain)
    plan = _plan(spec)
    data = core_data(dom, random.Random(f"sqldb:{spec.seed}:data:0"))
    core = _core_tables(dom, plan, data, spec, "data:0", with_comments=True)
    everything = core + plan.fillers
    random.Random(f"sqldb:{spec.seed}:order").shuffle(everything)
    size = write_tables(path, everything, catalog=True)
    sibs = sibling_paths(path, spec.n_siblings)
    for i, sp in enumerate(sibs, 1):
        sdata = core_data(dom, random.Random(f"sqldb:{spec.seed}:data:{i}"))
        size += write_tables(sp, _core_tables(dom, plan, sdata, spec, f"data:{i}", with_comments=False),
                             catalog=False)
    decoys: dict[str, list[str]] = {}
    decoy_columns: dict[str, list[str]] = {}
    for t in core:
        if t.role == "decoy":
            decoys.setdefault(t.key, []).append(t.name)
            decoy_columns[t.name] = list(t.columns)
    layout = Layout(spec, dict(plan.tables), dict(plan.columns), decoys, decoy_columns,
                    n_tables=len(everything))
    return BuiltDb(spec, path, sibs, layout, data, size)
