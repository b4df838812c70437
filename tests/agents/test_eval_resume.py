"""An interrupted `distillery eval` resumes: the episodes it finished are kept, only the rest
are played, and the tables are those an uninterrupted run writes.

The interrupted command runs as its own process and is stopped the way a user does it: the
OpenAI-compatible server on 127.0.0.1 sends it a real SIGINT as the third request arrives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from tests.conftest import REPO
from tests.json_server import JsonServer
from typer.testing import CliRunner

from distillery.agents.base import PolicySpec
from distillery.agents.evaluate_policy import JOURNAL, eval_tasks, run_eval
from distillery.cli import app
from distillery.io import write_parquet
from distillery.journal import JournalMismatch
from distillery.types import tasks_to_frame


@pytest.fixture(scope="module")
def tasks():
    return eval_tasks("stage", families=["save_note"], generate_per_family=3, seed=0)


def assert_same_tables(folder: Path, reference: Path) -> None:
    # wall_s is the one column a replay cannot reproduce
    for name in ("episodes", "steps", "tasks"):
        assert_frame_equal(pl.read_parquet(folder / f"{name}.parquet").drop("wall_s", strict=False),
                           pl.read_parquet(reference / f"{name}.parquet").drop("wall_s", strict=False))


class Interrupt:
    """An `on_episode` that stops the run as Ctrl-C would, after `after` episodes."""

    def __init__(self, after: int) -> None:
        self.after, self.seen = after, 0

    def __call__(self, _: object) -> None:
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


def test_a_resumed_run_plays_only_what_is_missing_and_writes_what_an_uninterrupted_one_does(tasks, tmp_path):
    spec = PolicySpec("random", {"seed": 3}, label="random")
    whole = run_eval(tasks, spec, tmp_path / "whole", k=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(tasks, spec, tmp_path / "cut", k=2, on_episode=Interrupt(after=4))
    journaled = (tmp_path / "cut" / JOURNAL).read_text().splitlines()
    assert len(journaled) == 1 + 4 and not (tmp_path / "cut" / "episodes.parquet").exists()
    before = {e: w for e, w in pl.read_ndjson((tmp_path / "cut" / JOURNAL), infer_schema_length=None)
              .drop_nulls("episode").select(pl.col("episode").struct.field("episode_id", "wall_s")).iter_rows()}

    told: list[int] = []
    seen: list[str] = []
    resumed = run_eval(tasks, spec, tmp_path / "cut", k=2, batch_size=2,     # a smaller batch may resume
                       on_resume=told.append, on_episode=lambda e: seen.append(e.episode_id))
    assert len(told) == 1 and "resuming: 4 episodes" in told[0] and len(seen) == 6 and set(seen[:4]) == set(before)
    assert_same_tables(tmp_path / "cut", tmp_path / "whole")
    # The four journaled episodes were read back, not played again: their recorded times stand.
    assert dict(resumed.episodes.filter(pl.col("episode_id").is_in(list(before)))
                .select("episode_id", "wall_s").iter_rows()) == before
    assert not (tmp_path / "cut" / JOURNAL).exists()
    differing = {k for k, v in resumed.details["random"]["all"].items() if whole.details["random"]["all"][k] != v}
    assert differing <= {"mean_wall_s"}, differing


def test_other_settings_refuse_the_journal_and_no_resume_discards_it(tasks, tmp_path):
    spec = PolicySpec("random", {"seed": 3}, label="random")
    with pytest.raises(KeyboardInterrupt):
        run_eval(tasks, spec, tmp_path, k=2, on_episode=Interrupt(after=2))
    with pytest.raises(JournalMismatch, match=r"holds 2 episodes .*policy's seed 3 there, 4 here"):
        run_eval(tasks, PolicySpec("random", {"seed": 4}, label="random"), tmp_path, k=2)
    with pytest.raises(JournalMismatch, match=r"tasks 3 there, 2 here"):
        run_eval(tasks[:2], spec, tmp_path, k=2)
    seen: list[str] = []
    run_eval(tasks, PolicySpec("random", {"seed": 4}, label="random"), tmp_path, k=2, resume=False,
             on_episode=lambda e: seen.append(e.episode_id))
    assert len(seen) == 6 and not (tmp_path / JOURNAL).exists()


def chat_reply(content: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def eval_args(base_url: str, table: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--env", "stage", "--policy", "openai", "--base-url", base_url, "--model", "m", "--tasks",
            str(table), "--k", "2", "--batch-size", "1", "--concurrency", "1", "--no-progress", "--out", str(out),
            *extra]


def test_ctrl_c_during_eval_keeps_the_finished_episodes_and_the_same_command_resumes(tasks, tmp_path):
    table = tmp_path / "tasks.parquet"
    write_parquet(tasks_to_frame(tasks[:2]), table)
    requests = 0
    interrupt: dict[str, int] = {}
    lock = threading.Lock()

    def answer(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        nonlocal requests
        with lock:
            requests += 1
            if requests == interrupt.get("at"):
                os.kill(interrupt["pid"], signal.SIGINT)     # the user's Ctrl-C, mid-run
        return 200, chat_reply("finish()"), {}

    with JsonServer(answer) as server:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        proc = subprocess.Popen([sys.executable, "-m", "distillery.cli",
                                 *eval_args(server.base_url, table, tmp_path / "cut")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        interrupt.update(pid=proc.pid, at=3)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err
        text = " ".join(err.split())
        assert "interrupted after 2 of 4 episodes" in text and "run the same command again" in text
        assert len((tmp_path / "cut" / JOURNAL).read_text().splitlines()) == 1 + 2
        interrupt.clear()
        requests = 0
        # The same command again (here in-process), its transport settings free to change.
        again = CliRunner().invoke(app, eval_args(server.base_url, table, tmp_path / "cut", "--timeout", "30"),
                                   catch_exceptions=False)
        assert again.exit_code == 0, again.output
        assert "resuming: 2 episodes of an interrupted run" in " ".join(again.output.split())
        assert requests == 2        # one request per episode (each answer ends it): only those it lacked
        whole = CliRunner().invoke(app, eval_args(server.base_url, table, tmp_path / "whole"), catch_exceptions=False)
        assert whole.exit_code == 0 and requests == 2 + 4, whole.output
    assert_same_tables(tmp_path / "cut", tmp_path / "whole")
    assert not (tmp_path / "cut" / JOURNAL).exists()
