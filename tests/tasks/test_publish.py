"""`tasks.publish`: a generation run written into a folder without clobbering the last good one
(the command-line behaviour is tested in tests/importers/test_cli.py)."""

from __future__ import annotations

import pickle

from distillery.tasks.publish import TasksGateFailed, clear_failed, previous_run


def test_a_failed_folder_that_is_a_link_is_removed_as_a_link(tmp_path):
    """`failed/` pointing elsewhere is unlinked; what it points at is never emptied."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "failed").symlink_to(elsewhere, target_is_directory=True)
    assert clear_failed(out) is True
    assert not (out / "failed").exists() and not (out / "failed").is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert clear_failed(out) is False


def test_previous_run_says_what_a_failed_run_leaves(tmp_path):
    assert previous_run(tmp_path) == f"no {tmp_path / 'tasks.parquet'} written"
    (tmp_path / "tasks.parquet").write_bytes(b"")
    assert previous_run(tmp_path).endswith("the last successful run's, unchanged")


def test_a_gate_failure_keeps_its_folder_across_a_process_pool(tmp_path):
    again = pickle.loads(pickle.dumps(TasksGateFailed("the generated tasks fail their gate: x", tmp_path)))
    assert again.failed == tmp_path and str(again) == "the generated tasks fail their gate: x"
