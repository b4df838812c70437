"""The SQL track's training stages in a scratch directory on micro parameters: the teachers'
gated trajectories, the warm-up student, Dual-Track RL, the schema-size sets, the evaluation
(metrics, report, claim rows) and the grid's report without a record."""

from __future__ import annotations

import json
from dataclasses import replace

import polars as pl
import pytest
import yaml

from distillery.envs.sql.config import SqlTasksConfig
from distillery.envs.sql.taskset import generate_sql_tasks
from distillery.io import write_parquet
from distillery.types import Claim, tasks_to_frame

PARAMS = {
    "policies": {"oracle": {"kind": "oracle"}, "random": {"kind": "random", "kwargs": {"seed": 0}}},
    "sql_track": {"validation_dbs": 1, "heldout_dbs": 1},
    "sql_collect": {"train_tasks": 8},
    "sql_warmup": {"principles_fraction": 0.0, "eval_fraction": 0.2, "tokenizer": {"vocab_size": 1500},
                   "model": {"hidden_size": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "intermediate_size": 64,
                             "max_position_embeddings": 1280},
                   "train": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "save_every": 0, "num_threads": 1,
                             "max_seq_len": 1280, "dvclive": False, "progress": False},
                   "prompt": {"max_prompt_tokens": 1024, "max_observation_tokens": 200, "max_history_turns": 14},
                   "induction_steps": 2},
    "sql_rl": {"iterations": 1, "tasks_per_iteration": 2, "k": 2, "max_new_tokens": 8, "validation_tasks": 2,
               "train": {"batch_size": 4, "num_threads": 1, "progress": False}},
    "sql_scale": {"sizes": [20], "dbs_per_size": 1, "questions_per_db": 2},
    # the micro task set has 4 train databases: learn from 2, validate on 1, hold out 1
    "sql_evaluate": {"heldout_tasks": 2, "test_tasks": 2, "real_tasks_per_db": 1, "max_steps": 12, "max_new_tokens": 8},
}


@pytest.mark.slow
def test_the_sql_training_stages_chain(tmp_path, monkeypatch):
    from stages import sql_collect, sql_evaluate, sql_grid, sql_rl, sql_scale, sql_warmup

    monkeypatch.chdir(tmp_path)
    cfg = SqlTasksConfig(n_train_dbs=4, n_test_dbs=1, questions_per_db=4, min_fillers=100, max_fillers=110,
                         random_probes=0, min_kept_fraction=0.5)
    tasks = generate_sql_tasks(cfg, "data/sql").tasks
    write_parquet(tasks_to_frame(tasks), "data/sql/tasks.parquet")
    # the real databases' task file, standing in with one generated test database
    real = [replace(t, task_id=f"real-{t.task_id}") for t in tasks if t.split == "test"][:2]
    write_parquet(tasks_to_frame(real), "data/sql/real/tasks.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))

    assert sql_collect.main(["oracle"]) == 0 and sql_collect.main(["random"]) == 0
    oracle = pl.read_parquet("data/sql/trajectories/oracle/outcomes.parquet")
    ids = sorted({t.initial_state["db_id"] for t in tasks if t.split == "train"})
    assert oracle["correct"].all() and not any(db in t for t in oracle["task_id"].to_list() for db in ids[-2:])
    with pytest.raises(SystemExit) as no_policy:
        sql_collect.main([])
    assert no_policy.value.code == 2
    assert sql_warmup.main() == 0
    card = json.loads((tmp_path / "models/sql_warmup/card.json").read_text())
    assert card["prompt"]["max_prompt_tokens"] == 1024 and card["teacher"] == "oracle"
    assert sql_rl.main() == 0
    rl = json.loads((tmp_path / "reports/details/sql_rl.json").read_text())
    assert rl["method"] == "dual" and len(rl["curve"]) == 2 and rl["label"] == "tools"
    assert sql_scale.main() == 0
    assert sql_evaluate.main() == 0
    m = json.loads((tmp_path / "reports/details/sql_evaluate.json").read_text())
    assert set(m["test"]) == set(m["heldout"]) == {"oracle", "random", "sql_warmup", "sql_rl"}
    assert m["test"]["oracle"]["accuracy"] == m["heldout"]["oracle"]["accuracy"] == 1.0
    assert set(m["real"]) == {"oracle", "random", "sql_rl"} and set(m["scale"]) == {"sql_rl"}
    head = json.loads((tmp_path / "metrics/sql_evaluate.json").read_text())
    assert head["success"] == m["test"]["sql_rl"]["accuracy"] and len(head) <= 12
    assert head["gain"] == pytest.approx(head["success"] - head["success_start"])
    assert "Held-out databases" in (tmp_path / "reports/sql.md").read_text()
    claims = [Claim.from_dict(d) for d in json.loads((tmp_path / "reports/claims/sql.json").read_text())]
    assert any(c.finding.startswith("RL after the warm-up") for c in claims)
    eps = pl.read_parquet("data/sql/eval/episodes.parquet")
    assert eps.height == pl.read_parquet("data/sql/eval/outcomes.parquet").height
    assert sql_grid.main() == 0
    assert "0 finished runs" in (tmp_path / "reports/sql_grid.md").read_text()
    assert (tmp_path / "reports/sql_grid.html").is_file() and (tmp_path / "reports/claims/sql_grid.json").is_file()
