"""The real databases: hand-written questions are data that parses; (slow, downloads the two
package files once into a cache) Chinook and Lahman convert, every gold query executes and
returns rows, and every reference solution scores 1.0, on the enterprise Chinook too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distillery.envs.sql.real import build_real_databases, download, load_questions, real_tasks
from distillery.envs.sql.schema import parse_select

CACHE = Path(os.environ.get("DISTILLERY_TEST_CACHE", Path.home() / ".cache" / "distillery-test")) / "sql_pkgs"


def test_the_questions_are_data_and_each_gold_is_one_select():
    qs = load_questions()
    chinook = [q for q in qs if q.db == "chinook"]
    lahman = [q for q in qs if q.db == "lahman"]
    assert len(chinook) >= 55 and len(lahman) >= 38
    assert len({(q.db, q.question) for q in qs}) == len(qs)
    for q in qs:
        parse_select(q.sql)
        assert q.question.endswith(("?", "."))


@pytest.fixture(scope="module")
def real_dbs(tmp_path_factory):
    from distillery.envs.sql.config import SqlRealConfig

    cfg = SqlRealConfig()
    chinook = download(cfg.chinook, CACHE, cfg.chinook_sha256)
    lahman = download(cfg.lahman, CACHE, cfg.lahman_sha256)
    return build_real_databases(chinook, lahman, tmp_path_factory.mktemp("real"))


@pytest.mark.slow
def test_every_real_question_executes_returns_rows_and_its_reference_scores_one(real_dbs):
    tasks, report = real_tasks({k: str(v) for k, v in real_dbs.items()})
    assert report["problems"] == []
    by_db = report["by_database"]
    qs = load_questions()
    assert by_db["chinook"] == by_db["chinook_enterprise"] == sum(q.db == "chinook" for q in qs)
    assert by_db["lahman"] == sum(q.db == "lahman" for q in qs)
    assert all(t.split == "test" and t.env == "sql" for t in tasks)


@pytest.mark.slow
def test_the_conversions_keep_the_published_shape(real_dbs):
    from distillery.envs.sql.schema import load_meta

    chinook = load_meta(real_dbs["chinook"])
    assert len(chinook.tables) == 11 and sum(t.rows for t in chinook.tables.values()) == 15607
    assert chinook.table("album").column("artist_id").ref == ("artist", "id")
    lahman = load_meta(real_dbs["lahman"])
    assert len(lahman.tables) == 27 and lahman.table("Batting").column("2B") is not None
    enterprise = load_meta(real_dbs["chinook_enterprise"])
    assert len(enterprise.tables) > 200
    assert all(enterprise.table(t) is not None for t in chinook.tables)
    assert enterprise.table("album_bak") or enterprise.table("album_old") or enterprise.table("album_stg") \
        or enterprise.table("stg_album")
