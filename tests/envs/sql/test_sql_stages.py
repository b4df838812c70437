"""The stages run in a scratch directory on micro parameters: `sql_tasks` writes its
databases, a gated task file and a validation report; (slow) `sql_real` converts the cached
package files and writes its tasks."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml
from tests.envs.sql.test_sql_real import CACHE

from distillery.types import tasks_from_frame


def test_sql_tasks_stage_writes_gated_tasks_and_a_report(tmp_path, monkeypatch):
    from stages import sql_tasks

    params = {"sql_tasks": {"n_train_dbs": 2, "n_test_dbs": 1, "questions_per_db": 4, "min_fillers": 100,
                            "max_fillers": 110, "random_probes": 0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stale = tmp_path / "data/sql/databases/old.sqlite"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    monkeypatch.chdir(tmp_path)
    assert sql_tasks.main() == 0
    tasks = tasks_from_frame(pl.read_parquet(tmp_path / sql_tasks.OUT))
    report = json.loads((tmp_path / sql_tasks.VALIDATION).read_text())
    assert len(tasks) == report["kept"]["train"] + report["kept"]["test"] >= 9
    assert not stale.exists()
    for t in tasks:
        assert t.initial_state["db"].startswith("data/sql/databases/")       # relative: the repository moves
        assert (tmp_path / t.initial_state["db"]).is_file()
    assert report["database_bytes"] > 0 and report["seconds"] > 0 and "rejected" in report
    assert (tmp_path / "reports/quality/sql_tasks/sql_tasks.json").exists()


@pytest.mark.slow
def test_sql_real_stage_converts_the_cached_packages(tmp_path, monkeypatch):
    from distillery.envs.sql.config import SqlRealConfig
    from distillery.envs.sql.real import download
    from stages import sql_real

    cfg = SqlRealConfig()
    packages = tmp_path / sql_real.PACKAGES
    packages.mkdir(parents=True)
    for req, sha in ((cfg.chinook, cfg.chinook_sha256), (cfg.lahman, cfg.lahman_sha256)):
        shutil.copy(download(req, CACHE, sha), packages)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sql_real": {"enterprise_fillers": 120}}))
    monkeypatch.chdir(tmp_path)
    assert sql_real.main(["download"]) == 0                # present and hashed: nothing fetched
    assert sql_real.main([]) == 0
    tasks = tasks_from_frame(pl.read_parquet(tmp_path / sql_real.OUT))
    assert {t.initial_state["db_id"] for t in tasks} == {"chinook", "lahman", "chinook_enterprise"}
    report = json.loads((tmp_path / sql_real.VALIDATION).read_text())
    assert report["problems"] == [] and report["kept"] == len(tasks)
