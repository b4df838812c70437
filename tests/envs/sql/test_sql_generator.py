"""Generated databases: deterministic from their seed, enterprise-like (core tables joined by
foreign keys, decoys holding different data, fillers with colliding column names, a
catalogue with missing and misleading comments), per-database naming, sibling overlays."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from distillery.envs.sql.domains import DOMAINS
from distillery.envs.sql.engine import ReadOnlyDb
from distillery.envs.sql.generator import CATALOG, DbSpec, build_database
from distillery.envs.sql.naming import STYLES, Namer, split_words
from distillery.envs.sql.schema import load_meta


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables_of(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        conn.close()


def test_the_same_spec_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    spec = DbSpec(7, "retail", "snake_abbr", n_fillers=120, n_siblings=2)
    a, b = build_database(spec, tmp_path / "a.sqlite"), build_database(spec, tmp_path / "b.sqlite")
    assert sha(a.path) == sha(b.path)
    assert [sha(p) for p in a.siblings] == [sha(p) for p in b.siblings]
    assert a.layout.tables == b.layout.tables and a.data == b.data
    c = build_database(DbSpec(8, "retail", "snake_abbr", n_fillers=120), tmp_path / "c.sqlite")
    assert sha(c.path) != sha(a.path)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_every_domain_builds_an_enterprise_like_database(tmp_path, name):
    built = build_database(DbSpec(3, name, "snake", n_fillers=100), tmp_path / f"{name}.sqlite")
    dom = DOMAINS[name]
    assert 4 <= len(dom.tables) <= 8
    meta = load_meta(built.path)
    core = [meta.table(built.layout.tables[t.key]) for t in dom.tables]
    assert all(t is not None and t.rows > 0 for t in core)
    # core tables are joined by declared foreign keys that point at core tables
    refs = {c.ref[0] for t in core for c in t.columns if c.ref}
    assert refs and refs <= {t.name for t in core}
    # every core table has a decoy, named like it, with the same columns or one fewer
    for t in dom.tables:
        real = built.layout.tables[t.key]
        decoys = built.layout.decoys[t.key]
        assert decoys and all(real in d and re.search(r"bak|old|stg", d, re.I) for d in decoys)
        for d in decoys:
            info = meta.table(d)
            assert info is not None
            assert len(meta.table(real).columns) - len(info.columns) in (0, 1)
    # 100 fillers, and the catalogue is not one of the listed tables
    assert built.layout.n_tables == len(meta.tables) == len(dom.tables) + sum(map(len, built.layout.decoys.values())) + 100
    assert meta.table(CATALOG) is None


def test_decoys_hold_different_data_from_the_real_table(tmp_path):
    built = build_database(DbSpec(11, "finance", "upper", n_fillers=100), tmp_path / "f.sqlite")
    data = tables_of(built.path)
    for key, decoys in built.layout.decoys.items():
        real = data[built.layout.tables[key]]
        for d in decoys:
            assert data[d] != real, (key, d)


def test_filler_column_names_collide_with_the_core_ones(tmp_path):
    built = build_database(DbSpec(5, "hr", "snake", n_fillers=150), tmp_path / "h.sqlite")
    meta = load_meta(built.path)
    core_names = set(built.layout.tables.values()) | {d for ds in built.layout.decoys.values() for d in ds}
    core_cols = {c.name.lower() for n in built.layout.tables.values() for c in meta.table(n).columns}
    fillers = [t for t in meta.tables.values() if t.name not in core_names]
    colliding = [t for t in fillers if {c.name.lower() for c in t.columns[1:]} & core_cols]
    assert len(fillers) == 150 and len(colliding) >= 0.8 * len(fillers)


def test_the_catalogue_misses_some_comments_and_some_decoys_claim_authority(tmp_path):
    missing = false_claims = 0
    for seed in range(8):
        built = build_database(DbSpec(seed, "retail", "camel", n_fillers=100), tmp_path / f"r{seed}.sqlite")
        meta = load_meta(built.path)
        missing += sum(meta.table(n).comment == "" for n in built.layout.tables.values())
        for ds in built.layout.decoys.values():
            false_claims += sum(bool(re.search(r"System of record|Authoritative|master|one row per",
                                               meta.table(d).comment)) for d in ds)
    assert missing > 0 and false_claims > 0


def test_names_differ_between_databases_of_one_domain_and_style(tmp_path):
    names = [set(build_database(DbSpec(s, "logistics", "snake_abbr", n_fillers=100), tmp_path / f"l{s}.sqlite")
                 .layout.tables.values()) for s in range(6)]
    assert len({frozenset(n) for n in names}) > 1


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_naming_style_spells_names_its_own_way(style):
    import random

    namer = Namer.draw(style, random.Random(1))
    table = namer.table(("customer", "order"))
    column = namer.column(("customer", "id"), "customer_order", ("customer", "order"))
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", table) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", column)
    if style in ("upper", "legacy"):
        assert table == table.upper() and column == column.upper()
    if style in ("snake", "snake_abbr", "prefixed"):
        assert table == table.lower() and "_" in column
    if style == "camel":
        assert table[0].isupper() and column[0].islower()
    if style == "prefixed":
        assert table.startswith("t_")
    assert split_words(table)


def test_sibling_overlays_share_the_schema_and_hold_other_data(tmp_path):
    built = build_database(DbSpec(2, "education", "prefixed", n_fillers=100, n_siblings=2), tmp_path / "e.sqlite")
    main = tables_of(built.path)
    core = set(built.layout.tables.values()) | {d for ds in built.layout.decoys.values() for d in ds}
    for sib in built.siblings:
        over = tables_of(sib)
        assert set(over) == core                              # only the tables whose data differs
        assert any(over[t] != main[t] for t in built.layout.tables.values())
        db = ReadOnlyDb(sib, base=built.path)                 # fillers resolve through the attached main file
        filler = next(t for t in main if t not in core and t != CATALOG)
        assert db.query(f'SELECT COUNT(*) FROM "{filler}"').rows[0][0] == len(main[filler])
        for t in built.layout.tables.values():
            a = sqlite3.connect(built.path).execute(f'PRAGMA table_info("{t}")').fetchall()
            b = sqlite3.connect(sib).execute(f'PRAGMA table_info("{t}")').fetchall()
            assert a == b
        db.close()
