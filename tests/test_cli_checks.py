"""Options the commands refuse in one line before any work: infinite numbers where a finite
one is meant, and outputs that cannot be written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from distillery.cli import app

runner = CliRunner()
# Nothing listens on port 9 here: a request made by mistake would fail, not hang.
DRAFT = ["tasks", "draft", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--hint", "file the invoices",
         "--no-progress"]


def said(result) -> str:
    return " ".join(result.output.split())


@pytest.mark.parametrize("option", ["--timeout", "--price-in", "--price-out"])
def test_drafting_refuses_an_infinite_number(tmp_path, option):
    r = runner.invoke(app, [*DRAFT, option, "inf", "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.md")])
    assert r.exit_code == 2 and f"{option} inf: expected a finite number" in said(r), r.output
    assert not (tmp_path / "o").exists()


def test_drafting_refuses_outputs_it_could_not_write_before_any_request(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    r = runner.invoke(app, [*DRAFT, "--out", str(afile), "--report", str(tmp_path / "r.md")])
    assert r.exit_code == 2 and f"--out {afile}: exists and is not a folder" in said(r), r.output
    (tmp_path / "page.md").mkdir()
    r = runner.invoke(app, [*DRAFT, "--out", str(tmp_path / "o"), "--report", str(tmp_path / "page.md")])
    assert r.exit_code == 2 and f"--report {tmp_path / 'page.md'}: a folder" in said(r), r.output
    r = runner.invoke(app, [*DRAFT, "--out", str(tmp_path / "o"), "--report", str(afile / "r.md")])
    assert r.exit_code == 2 and f"--report {afile / 'r.md'}: its folder {afile}: exists and is not a folder" in said(r)
    assert afile.read_text() == "keep me" and not (tmp_path / "o").exists()


def test_serve_refuses_an_endless_batch_window(tmp_path):
    r = runner.invoke(app, ["serve", str(tmp_path), "--batch-wait-ms", "inf"])
    assert r.exit_code == 2 and "--batch-wait-ms inf: expected a finite number" in said(r), r.output


def test_a_family_named_twice_is_generated_once(tmp_path):
    r = runner.invoke(app, ["tasks", "--env", "stage", "--family", "save_note", "--family", "save_note",
                            "--n-train", "1", "--n-test", "0", "--random-probes", "0", "--out", str(tmp_path / "o"),
                            "--no-progress"])
    assert r.exit_code == 0 and "save_note train: 1 kept" in said(r), r.output


def test_an_unregistered_import_environment_is_warned_of(tmp_path):
    from pathlib import Path

    logs = Path(__file__).resolve().parent / "fixtures" / "logs" / "openai" / "stage_chat.jsonl"
    r = runner.invoke(app, ["import", "openai", str(logs), "--out", str(tmp_path / "o"), "--env", "stge", "--tasks",
                            "", "--no-progress"])
    assert r.exit_code == 0 and "--env stge: not a registered environment, so no parser checks" in said(r), r.output


def test_import_prints_the_side_files_unused_rows(tmp_path):
    log = tmp_path / "chat.jsonl"
    log.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n')
    log.with_name("chat.outcomes.jsonl").write_text('{"line": 1, "success": true}\n{"line": 9, "success": true}\n')
    r = runner.invoke(app, ["import", "openai", str(log), "--out", str(tmp_path / "o"), "--tasks", "", "--no-progress"])
    assert r.exit_code == 0 and "warning:" in r.output and "chat.outcomes.jsonl: 1 row matched no record" in said(r), r.output
