"""What a drafting run reads and writes in its output folder, and the inputs it refuses.

- A damaged table in OUT (garbage bytes, a folder where a table belongs) is a ValueError
  naming the file, found before any request is made, not a polars traceback after drafting.
- The tables, report.json and the report page of one run are written together: a page that
  cannot be written leaves every file as it was.
- Prices that are not finite are refused where they are taken (costs add up run after run).
- Hints without Latin letters get families of their own; an empty hints file says so.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from tests.conftest import REPO
from tests.tasks import drafts as D
from tests.tasks.drafts import scripted_endpoint

from distillery.agents.openai import Price
from distillery.tasks.draft import FAMILY_PREFIX, DraftConfig, Hint, build_task, read_hints
from distillery.tasks.drafted import (
    ATTEMPTS,
    KEPT,
    REPORT_JSON,
    check_out_dir,
    read_kept,
    write_outputs,
)
from distillery.types import DraftAttempt, tasks_to_frame

FIX = "move it away or choose another --out"


def one_run(run_id: str = "run1") -> tuple[list[DraftAttempt], list]:
    """A run of one draft, kept at once (the attempts and kept tasks `draft_tasks` would return)."""
    hint = Hint("the user wants last month's invoices filed")
    task = build_task(D.INVOICES, hint, DraftConfig())
    attempt = DraftAttempt(
        attempt_id=f"{run_id}-d000-r0", run_id=run_id, env="stage", family=hint.family_name, hint=hint.text,
        draft_no=0, round=0, verdict="kept", reasons=[], reason_kinds=[], task_id=task.task_id,
        reply=D.fenced(D.INVOICES), draft_json=json.dumps(D.INVOICES), tokens_in=10, tokens_out=5, cost_usd=0.0,
        model="m", base_url="http://127.0.0.1:9/v1", wall_s=0.1)
    return [attempt], [task]


def write(out: Path, report_md: Path, run_id: str = "run1"):
    attempts, kept = one_run(run_id)
    return write_outputs(attempts, kept, [], run_id=run_id, model="m", out_dir=out, report_md=report_md,
                         quality_dir=out.parent / "quality", quarantine_dir=out.parent / "quarantine")


def damage(out: Path, how: str) -> Path:
    """Put a damaged table into `out` (as the issue's c1, c3 and c4 folders); its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / (ATTEMPTS if how == "garbage attempts" else KEPT)
    if how == "kept is a folder":
        path.mkdir()
    else:
        path.write_text("garbage\n")
    return path


DAMAGE = {"garbage kept": "not a parquet table (", "kept is a folder": "a folder, not a parquet table",
          "garbage attempts": "not a parquet table ("}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_table_in_the_output_folder_is_named_before_a_run(tmp_path, how):
    path = damage(tmp_path / "out", how)
    with pytest.raises(ValueError) as e:
        check_out_dir(tmp_path / "out", "stage")
    assert str(e.value).startswith(f"{path}: {DAMAGE[how]}") and str(e.value).endswith(FIX)


@pytest.mark.parametrize("how", list(DAMAGE))
def test_writing_over_a_damaged_table_is_a_value_error_and_writes_nothing(tmp_path, how):
    path = damage(tmp_path / "out", how)
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(ValueError, match=f"^{path}: {DAMAGE[how]}".replace("(", r"\(")):
        write(tmp_path / "out", tmp_path / "drafted.md")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    assert not (tmp_path / "drafted.md").exists()


def test_read_kept_names_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "kept.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'kept.parquet'}: not a parquet table \("):
        read_kept(tmp_path / "kept.parquet", "stage")


def test_a_table_of_other_columns_is_refused_and_a_sound_folder_gives_its_kept_tasks(tmp_path):
    out = tmp_path / "out"
    assert check_out_dir(out, "stage") == []              # nothing there yet
    written = write(out, tmp_path / "drafted.md")
    assert [t.task_id for t in check_out_dir(out, "stage")] == [t.task_id for t in one_run()[1]]
    tasks_to_frame(one_run()[1]).write_parquet(written.attempts)   # a task table where the attempts belong
    with pytest.raises(ValueError, match=rf"^{written.attempts}: not a draft attempts table \(columns .*{FIX}$"):
        check_out_dir(out, "stage")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "distillery.cli", "tasks", "draft", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("how", ["garbage kept", "kept is a folder", "garbage attempts"])
def test_the_command_refuses_a_damaged_kept_table_before_any_request(tmp_path, sandbox, how):
    path = damage(tmp_path / "c", how)
    with scripted_endpoint({"good c": [D.fenced(D.INVOICES)]}) as ep:
        p = _cli("--model", "m", "--base-url", ep.base_url, "--hint", "good c", "--out", "c", "--report", "c/r.md",
                 "--no-progress", cwd=tmp_path)
    assert ep.requests == []
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().startswith(f"distillery tasks draft: {path.relative_to(tmp_path)}: {DAMAGE[how]}")
    assert "Traceback" not in p.stderr


def test_one_runs_files_are_written_together_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    page = tmp_path / "pages" / "drafted.md"
    page.mkdir(parents=True)                      # a folder where the report page belongs
    with pytest.raises(IsADirectoryError):
        write(out, page)
    assert not out.exists() or list(out.iterdir()) == []
    # Over an earlier run's files, a failed write leaves every one of them as it was.
    first = write(out, tmp_path / "drafted.md")
    files = [first.attempts, first.kept, first.report_json, first.report_md]
    old = {p: p.read_bytes() for p in files}
    with pytest.raises(IsADirectoryError):
        write(out, page, run_id="run2")
    assert {p: p.read_bytes() for p in files} == old
    assert sorted(p.name for p in out.iterdir()) == sorted([ATTEMPTS, KEPT, REPORT_JSON])   # no temp file left
    again = write(out, tmp_path / "drafted.md", run_id="run2")
    assert pl.read_parquet(again.attempts)["run_id"].to_list() == ["run1", "run2"]


@pytest.mark.parametrize("price", [Price(0.0, math.inf), Price(math.nan, 1.0), Price(-1.0, 1.0),
                                   Price(1.0, -math.inf)])
def test_prices_that_are_not_finite_numbers_at_least_0_are_refused(price):
    with pytest.raises(ValueError, match="must cost a finite number of US dollars per million"):
        DraftConfig(price=price)


def test_free_and_finite_prices_are_taken():
    assert DraftConfig(price=Price(0.0, 0.0)).price == Price(0.0, 0.0)
    assert DraftConfig(price=Price(1.25, 10)).price.cost(1_000_000, 1_000_000) == 11.25


def test_hints_without_latin_letters_get_families_of_their_own():
    names = [Hint(t).family_name for t in ("日本語", "中文", "Ελληνικά", "!!!", "日本語 2", "中文 2", " 日本語 ")]
    assert names[0] == names[6] == Hint("日本語").family_name               # stable: the hint's text decides
    assert len(set(names[:6])) == 6
    assert names[4].startswith("drafted_2_h")
    for name in names:
        assert name.startswith(FAMILY_PREFIX) and len(name) > len(FAMILY_PREFIX)
        Hint("x", family=name)                   # a valid family name
    # Hints with Latin letters or digits keep the names their kept tables already carry.
    assert Hint("the user wants last month's invoices filed").family_name == \
        "drafted_the_user_wants_last_months_invoices"
    assert Hint("日本語 invoices 2024").family_name == "drafted_invoices_2024"
    assert Hint("pay 2024 bills").family_name == "drafted_pay_2024_bills"


@pytest.mark.parametrize(("name", "text"), [("h.txt", ""), ("h.txt", "# only a comment\n\n"), ("h.json", "[]"),
                                            ("h.yaml", ""), ("h.yaml", "# nothing\n"), ("h.jsonl", "\n\n")])
def test_a_hints_file_without_hints_says_so(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=rf"^{tmp_path / name}: the file holds no hints$"):
        read_hints(tmp_path / name)


def test_the_command_says_an_empty_hints_file_holds_no_hints(tmp_path):
    (tmp_path / "hints.txt").write_text("")
    p = _cli("--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--hints", "hints.txt", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == "distillery tasks draft: hints.txt: the file holds no hints"
