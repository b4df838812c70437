"""An interrupted `distillery tasks draft` resumes: the drafts it finished are kept, only the
rest are asked for, and the tables are those one whole run writes.

The interrupted command runs as its own process and is stopped the way a scheduler (or
`timeout`) does it: the scripted server on 127.0.0.1 sends it a real SIGTERM as the fourth
request arrives. (The eval test sends SIGINT, a user's Ctrl-C; both are handled alike.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from tests.conftest import REPO
from tests.json_server import JsonServer
from tests.tasks import drafts as D
from tests.tasks.drafts import Scripted
from typer.testing import CliRunner

from distillery.cli import app
from distillery.journal import JournalMismatch, open_journal
from distillery.llm import ChatEndpoint
from distillery.tasks.draft import (
    DRAFT_JOURNAL,
    DraftConfig,
    FinishedDraft,
    Hint,
    draft_journal_header,
    draft_tasks,
    finished_drafts,
)

# Four drafts, six requests with one repair round: kept; rejected then kept; rejected twice; kept.
HINTS = {"the user wants last month's invoices filed": [D.fenced(D.INVOICES)],
         "save the pricing sheet cara sent": [D.fenced(D.ATTACHMENT_WRONG_MAIL), D.fenced(D.ATTACHMENT)],
         "escape the sandbox": [json.dumps(D.OUTSIDE)],
         "move the newsletters out of the inbox": [json.dumps(D.NEWSLETTERS)]}


def draft_args(base_url: str) -> list[str]:
    return ["tasks", "draft", "--base-url", base_url, "--model", "scripted", *[a for h in HINTS for a in ("--hint", h)],
            "--max-repairs", "1", "--no-progress"]


def comparable(folder: Path, name: str) -> pl.DataFrame:
    # run and attempt ids carry the run's time; wall_s is the one number a replay cannot repeat
    return pl.read_parquet(folder / name).drop("run_id", "attempt_id", "wall_s", strict=False)


def test_ctrl_c_during_drafting_keeps_the_finished_drafts_and_the_same_command_resumes(tmp_path, sandbox,
                                                                                     monkeypatch):
    script = Scripted(HINTS)
    interrupt: dict[str, object] = {}

    def answer(headers: dict[str, str], body: dict[str, object]) -> tuple[int, dict[str, object], dict[str, str]]:
        with script.lock:
            script.requests.append(body)
            if len(script.requests) == interrupt.get("at"):
                os.kill(interrupt["pid"], signal.SIGTERM)    # a scheduler's stop, mid-run
        return (*script.answer(body), {})

    cut, whole = tmp_path / "cut", tmp_path / "whole"
    cut.mkdir(), whole.mkdir()
    with JsonServer(answer) as server:
        script.base_url = server.base_url
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        proc = subprocess.Popen([sys.executable, "-m", "distillery.cli", *draft_args(server.base_url)], cwd=cut,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        interrupt.update(pid=proc.pid, at=4)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 143, err
        assert "terminated after 2 of 4 drafts" in err and "run the same command again" in err
        journal = cut / "data/tasks/drafted" / DRAFT_JOURNAL
        assert len(journal.read_text().splitlines()) == 1 + 2
        assert not (cut / "data/tasks/drafted/attempts.parquet").exists()
        assert not list(sandbox.iterdir())          # stopped, it still closed every sandbox it opened

        # The same command again (here in-process), then one whole run for comparison.
        interrupt.clear()
        script.requests.clear()
        monkeypatch.chdir(cut)
        again = CliRunner().invoke(app, draft_args(server.base_url), catch_exceptions=False)
        assert again.exit_code == 0, again.output
        assert "resuming: 2 drafts of an interrupted run are kept from" in again.output
        assert len(script.requests) == 3           # the third draft's two rounds and the fourth's one
        script.requests.clear()
        monkeypatch.chdir(whole)
        done = CliRunner().invoke(app, draft_args(server.base_url), catch_exceptions=False)
        assert done.exit_code == 0 and len(script.requests) == 6, done.output
    for name in ("attempts.parquet", "kept.parquet"):
        assert_frame_equal(comparable(cut / "data/tasks/drafted", name), comparable(whole / "data/tasks/drafted", name))
    assert pl.read_parquet(cut / "data/tasks/drafted/attempts.parquet")["run_id"].n_unique() == 1
    assert not journal.exists()


def test_a_journaled_draft_reads_back_and_an_unanswered_one_is_asked_again(tmp_path, sandbox):
    script = Scripted({"the user wants last month's invoices filed": [D.fenced(D.INVOICES)],
                       "an endpoint that fails": [500]})
    with JsonServer(lambda h, b: (*script.answer(b), {})) as server:
        endpoint = ChatEndpoint(server.base_url, "scripted", max_retries=0, timeout=30)
        hints = [Hint(h) for h in script.replies]
        cfg = DraftConfig(max_repairs=0)
        header = draft_journal_header(hints, cfg, endpoint)
        journal = open_journal(tmp_path / DRAFT_JOURNAL, header, FinishedDraft.from_line, what="drafts")
        first = draft_tasks(hints, endpoint, cfg, run_id="r1", on_finished=lambda d: journal.append(d.to_line()))
        endpoint.close()
    again = open_journal(tmp_path / DRAFT_JOURNAL, header, FinishedDraft.from_line, what="drafts")
    assert [d.draft_no for d in again.records] == [0, 1]
    assert set(finished_drafts(again.records)) == {0}         # draft 1 met a 500: asked again on resume
    kept = finished_drafts(again.records)[0]
    assert kept.attempts == first.attempts[:1] and kept.kept == first.kept
    other = draft_journal_header(hints, DraftConfig(max_repairs=2), endpoint)
    with pytest.raises(JournalMismatch, match="max_repairs 0 there, 2 here"):
        open_journal(tmp_path / DRAFT_JOURNAL, other, FinishedDraft.from_line, what="drafts")
