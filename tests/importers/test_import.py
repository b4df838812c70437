"""Importing the fixture logs (tests/fixtures/logs, made by make_fixtures.py from episodes
played in the real STAGE environment and a real offline inspect_ai eval run): the documented
counts, one test per gate rule on the record that breaks it, and the import's promises (a
second import changes nothing, inputs are only read, a damaged file loses nothing but its
damaged lines, episode ids are deterministic).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from distillery.envs.actions import format_call
from distillery.importers import ImportConfig, import_logs
from distillery.importers.core import OUTPUTS, ImportedLogs, source_name
from distillery.quality.import_suites import IMPORT_RULE_KINDS
from distillery.types import tasks_from_frame

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
TASKS = LOGS / "tasks.parquet"
CHAT = LOGS / "openai" / "stage_chat.jsonl"
SIDE = LOGS / "openai" / "stage_chat_side.jsonl"
CORRUPT = LOGS / "openai" / "corrupt.jsonl"
EVAL = LOGS / "inspect" / "stage_agent.eval"
EPOCHS = LOGS / "inspect" / "stage_epochs.json"

# The documented counts (docs/importing.md): file -> (read, kept, kept_as_failure, rejected).
OPENAI_COUNTS = {CORRUPT: (6, 2, 0, 4), CHAT: (22, 9, 1, 12), SIDE: (3, 2, 0, 1)}
INSPECT_COUNTS = {EVAL: (10, 7, 0, 3), EPOCHS: (2, 1, 0, 1)}
# ... and of the folder: episodes, successes, steps, tasks.
OPENAI_TOTALS = {"episodes": 14, "successes": 10, "steps": 48, "tasks": 14}
INSPECT_TOTALS = {"episodes": 8, "successes": 6, "steps": 32, "tasks": 8}


def digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: (sha256, mtime_ns)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(fmt: str, paths: list[Path], out: Path, **cfg: object):
    return import_logs(fmt, paths, out, ImportConfig(env="stage", **cfg), tasks=TASKS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def openai_import(tmp_path_factory: pytest.TempPathFactory):
    before = digest(LOGS)
    result = run("openai", [LOGS / "openai"], tmp_path_factory.mktemp("imp") / "openai")
    assert digest(LOGS) == before, "the import modified its input"
    return result


@pytest.fixture(scope="module")
def inspect_import(tmp_path_factory: pytest.TempPathFactory):
    before = digest(LOGS)
    result = run("inspect", [LOGS / "inspect"], tmp_path_factory.mktemp("imp") / "inspect")
    assert digest(LOGS) == before, "the import modified its input"
    return result


def rejects_of(result, path: Path, record: str) -> dict[str, list[str]]:
    """kind -> reasons of one record's rejects rows."""
    rows = result.logs.rejects.filter((pl.col("source") == source_name(path)) & (pl.col("record") == record))
    out: dict[str, list[str]] = {}
    for kind, reason in rows.select("kind", "reason").iter_rows():
        out.setdefault(kind, []).append(reason)
    return out


# ---------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "counts", "totals"), [("openai_import", OPENAI_COUNTS, OPENAI_TOTALS),
                                                      ("inspect_import", INSPECT_COUNTS, INSPECT_TOTALS)])
def test_fixture_counts_are_the_documented_ones(fixture, counts, totals, request):
    result = request.getfixturevalue(fixture)
    got = {f["source"]: (f["read"], f["kept"], f["kept_as_failure"], f["rejected"]) for f in result.files}
    assert got == {source_name(p): c for p, c in counts.items()}
    logs = result.logs
    n_kept = sum(c[1] + c[2] for c in counts.values())
    assert logs.records.height == sum(c[0] for c in counts.values())      # every record read is listed
    assert logs.episodes.height == n_kept
    assert set(logs.steps["episode_id"]) <= set(logs.episodes["episode_id"])
    assert logs.episodes["n_steps"].sum() == logs.steps.height
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["records"] == logs.records.height and summary["episodes"] == n_kept
    assert {k: summary[k] for k in totals} == totals


def test_every_record_not_plainly_kept_has_a_reason_naming_file_and_record(openai_import, inspect_import):
    for result in (openai_import, inspect_import):
        records, rejects = result.logs.records, result.logs.rejects
        assert set(rejects["kind"]) <= set(IMPORT_RULE_KINDS)
        for r in records.filter(pl.col("verdict") != "kept").iter_rows(named=True):
            mine = rejects.filter((pl.col("source") == r["source"]) & (pl.col("record") == r["record"]))
            assert mine.height >= 1, r
            for reason in mine["reason"]:
                assert reason.startswith(f"{r['source']} {r['record']}: ")
        kept = records.filter(pl.col("verdict") == "kept").select("source", "record")
        assert rejects.join(kept, on=["source", "record"], how="semi").is_empty()
        on_disk = pl.read_parquet(result.out_dir / "rejects.parquet")
        assert on_disk.equals(rejects)


# ---------------------------------------------------------------------------------------
# One test per rule, on the record that breaks it
# ---------------------------------------------------------------------------------------

OPENAI_CASES = [
    (CHAT, "line 10", "first_role", "messages[0] is a 'assistant' message"),
    (CHAT, "line 11", "unknown_role", "messages[2] has role 'critic'"),
    (CHAT, "line 12", "unanswered_call", "has no tool message answering it"),
    (CHAT, "line 13", "duplicate_call_id", "call id 'call_0'"),
    (CHAT, "line 14", "non_text", "image_url"),
    (CHAT, "line 15", "no_outcome", "--assume-success"),
    (CHAT, "line 17", "errored", "RateLimitError"),
    (CHAT, "line 18", "duplicate", f"{source_name(CHAT)} line 1"),
    (CHAT, "line 19", "test_task", "test task add_contact_card-test-default-0000"),
    (CHAT, "line 20", "secret", "openai_key"),
    (CHAT, "line 21", "too_long", "over the student's context of 8192"),
    (CHAT, "line 22", "bad_outcome", "score 1.5 is outside [0, 1]"),
    (SIDE, "line 3", "no_outcome", "no score or success label"),
    (CORRUPT, "line 2", "malformed", "messages[1].content: expected a string"),
    (CORRUPT, "line 4", "unknown_call_id", "answers call id 'call_9'"),
    (CORRUPT, "line 5", "malformed", "function.arguments: expected a JSON string, got an object"),
    (CORRUPT, "line 6", "malformed", "a truncated or corrupted line"),
]
INSPECT_CASES = [
    (EVAL, "sample s07 epoch 1", "errored", "upstream model error: 500"),
    (EVAL, "sample s09 epoch 1", "test_task", "is in the test split"),
    (EVAL, "sample s10 epoch 1", "secret", "openai_key"),
    (EPOCHS, "sample e01 epoch 2", "duplicate", f"{source_name(EPOCHS)} sample e01 epoch 1"),
]


@pytest.mark.parametrize(("path", "record", "kind", "text"), OPENAI_CASES,
                         ids=[f"{p.name}:{r}:{k}" for p, r, k, _ in OPENAI_CASES])
def test_openai_rejection(openai_import, path, record, kind, text):
    found = rejects_of(openai_import, path, record)
    assert kind in found, found
    assert any(text in reason for reason in found[kind]), found[kind]
    row = openai_import.logs.records.filter((pl.col("source") == source_name(path)) & (pl.col("record") == record))
    assert row["verdict"].to_list() == ["rejected"]
    assert row["episode_id"][0] not in set(openai_import.logs.episodes["episode_id"])


@pytest.mark.parametrize(("path", "record", "kind", "text"), INSPECT_CASES,
                         ids=[f"{p.name}:{r}:{k}" for p, r, k, _ in INSPECT_CASES])
def test_inspect_rejection(inspect_import, path, record, kind, text):
    found = rejects_of(inspect_import, path, record)
    assert kind in found, found
    assert any(text in reason for reason in found[kind]), found[kind]


def test_secret_is_named_never_copied(openai_import, inspect_import):
    from tests.fixtures.logs.make_fixtures import SECRET

    for result in (openai_import, inspect_import):
        for p in result.out_dir.rglob("*"):
            if p.is_file():
                assert SECRET.encode() not in p.read_bytes(), p


def test_a_limit_hit_run_labelled_success_is_kept_as_a_failure(openai_import):
    found = rejects_of(openai_import, CHAT, "line 16")
    assert list(found) == ["truncated_success"]
    assert "max_turns (8) reached" in found["truncated_success"][0]
    rec = openai_import.logs.records.filter((pl.col("source") == source_name(CHAT)) & (pl.col("record") == "line 16"))
    assert rec["verdict"].to_list() == ["kept_as_failure"] and rec["logged_success"].to_list() == [True]
    ep = openai_import.logs.episodes.filter(pl.col("episode_id") == rec["episode_id"][0]).row(0, named=True)
    assert ep["success"] is False and ep["score"] == 0.0 and not ep["finished"]
    assert ep["failed_checks"] == ["truncated: max_turns (8) reached (logged as a success)"]


def test_inspect_limit_hit_and_scores_read_through_inspect(inspect_import):
    recs = inspect_import.logs.records.filter(pl.col("source") == source_name(EVAL))
    s08 = recs.filter(pl.col("sample") == "s08").row(0, named=True)
    assert s08["limit"] == "message limit (16) hit" and s08["verdict"] == "kept" and s08["logged_success"] is False
    ep = inspect_import.logs.episodes.filter(pl.col("episode_id") == s08["episode_id"]).row(0, named=True)
    assert ep["success"] is False and not ep["finished"]
    # "C" / "I" converted by inspect's value_to_float; usage summed from model_usage.
    assert dict(recs.select("sample", "logged_score").iter_rows())["s05"] == 0.0
    assert dict(recs.select("sample", "logged_score").iter_rows())["s01"] == 1.0
    s01 = inspect_import.logs.episodes.filter(pl.col("task_id") == recs.filter(pl.col("sample") == "s01")["task_id"][0])
    assert s01["tokens_in"][0] > 0 and s01["tokens_out"][0] > 0


# ---------------------------------------------------------------------------------------
# What is kept: the project's schemas, the real actions, the tools beside them
# ---------------------------------------------------------------------------------------


def test_kept_episodes_are_the_played_actions_of_the_known_tasks(openai_import, inspect_import):
    tasks = {t.task_id: t for t in tasks_from_frame(pl.read_parquet(TASKS))}
    for result, where in ((openai_import, (CHAT, "line 1")), (inspect_import, (EVAL, "sample s01 epoch 1"))):
        rec = result.logs.records.filter((pl.col("source") == source_name(where[0])) & (pl.col("record") == where[1]))
        eid, task_id = rec["episode_id"][0], rec["task_id"][0]
        task = tasks[task_id]
        actions = result.logs.steps.filter(pl.col("episode_id") == eid).sort("t")["action_text"].to_list()
        assert actions == [format_call(c) for c in task.reference_solution]
        ep = result.logs.episodes.filter(pl.col("episode_id") == eid).row(0, named=True)
        assert (ep["env"], ep["family"], ep["split"], ep["success"]) == ("stage", task.family, "train", True)
        # the project's own task row, not one derived from the log
        row = result.logs.tasks.filter(pl.col("task_id") == task_id).row(0, named=True)
        assert row["checks"] != "[]" and json.loads(row["initial_state"])


def test_a_failed_tool_call_is_an_invalid_step_with_its_error(openai_import):
    rec = openai_import.logs.records.filter((pl.col("source") == source_name(CHAT)) & (pl.col("record") == "line 9"))
    steps = openai_import.logs.steps.filter(pl.col("episode_id") == rec["episode_id"][0]).sort("t")
    first = steps.row(0, named=True)
    assert first["action_text"] == 'read_file(path="notes/missing.md")'
    assert first["valid"] is False and "notes/missing.md" in first["error"]
    assert steps["valid"][1:].all()


def test_tool_definitions_are_kept_beside_the_trajectories(openai_import, inspect_import):
    from distillery.envs.base import tool_specs

    names = {s.name for s in tool_specs("stage")}
    for result in (openai_import, inspect_import):
        tools = json.loads((result.out_dir / "tools.json").read_text())
        assert tools, "no tool definitions written"
        for toolset in tools.values():
            assert {t["function"]["name"] for t in toolset} == names
        keys = set(result.logs.records.filter(pl.col("verdict") != "rejected")["toolset"])
        assert keys <= set(tools)


def test_assume_success_keeps_records_without_an_outcome(tmp_path):
    result = run("openai", [CHAT], tmp_path / "out", assume_success=True)
    found = rejects_of(result, CHAT, "line 15")
    assert "no_outcome" not in found
    rec = result.logs.records.filter(pl.col("record") == "line 15").row(0, named=True)
    assert rec["verdict"] == "kept"
    ep = result.logs.episodes.filter(pl.col("episode_id") == rec["episode_id"]).row(0, named=True)
    assert ep["success"] is True and ep["score"] == 1.0


def test_side_file_outcomes(openai_import):
    eps = openai_import.logs.episodes
    recs = openai_import.logs.records.filter(pl.col("source") == source_name(SIDE)).sort("position")
    got = [(r["record"], r["logged_success"], r["logged_score"], r["verdict"]) for r in recs.iter_rows(named=True)]
    assert got == [("line 1", True, 1.0, "kept"), ("line 2", False, 0.5, "kept"), ("line 3", None, None, "rejected")]
    assert eps.filter(pl.col("episode_id") == recs["episode_id"][1])["score"].to_list() == [0.5]
    assert openai_import.warnings == []           # every row of the side file found its record


def test_side_file_rows_that_match_no_record_are_reported(tmp_path):
    log = tmp_path / "in" / "chat.jsonl"
    log.parent.mkdir()
    log.write_text("".join(line + "\n" for line in SIDE.read_text().splitlines()))
    side = log.with_name("chat.outcomes.jsonl")
    side.write_text(SIDE.with_name("stage_chat_side.outcomes.jsonl").read_text()
                    + '{"line": 999, "success": true}\n{"sample_id": "nope", "success": true}\n')
    result = run("openai", [log], tmp_path / "out")
    assert result.files[0]["kept"] == 2                            # the rows that matched are used
    assert result.warnings == [f"{side}: 2 rows matched no record read from {source_name(log)} (line 999, "
                               "sample_id 'nope'): their metadata was not used"]


# ---------------------------------------------------------------------------------------
# The import's promises
# ---------------------------------------------------------------------------------------


def test_a_record_repeated_in_its_file_is_held_once(tmp_path):
    record = {"messages": [{"role": "user", "content": "save a note"},
                           {"role": "assistant", "content": "done"}],
              "metadata": {"sample_id": "s1", "success": True}}
    log = tmp_path / "chat.jsonl"
    log.write_text((json.dumps(record) + "\n") * 2)
    result = run("openai", [log], tmp_path / "out")
    assert result.files[0]["read"] == 2 and result.files[0]["kept"] == 1 and result.files[0]["already_imported"] == 1
    assert result.logs.records.height == 1 and result.logs.episodes.height == 1


def test_a_second_import_is_a_no_op(tmp_path):
    out = tmp_path / "out"
    first = run("openai", [LOGS / "openai"], out)
    before = digest(out)
    again = run("openai", [LOGS / "openai"], out)
    assert digest(out) == before
    assert again.totals["already_imported"] == again.totals["read"] == first.totals["read"]
    assert again.totals["kept"] == again.totals["rejected"] == 0


def test_episode_ids_are_deterministic_and_say_where_they_came_from(tmp_path, openai_import):
    again = run("openai", [CHAT], tmp_path / "other")
    mine = openai_import.logs.records.filter(pl.col("source") == source_name(CHAT)).select("record", "episode_id")
    theirs = again.logs.records.select("record", "episode_id")
    assert mine.sort("record").equals(theirs.sort("record"))
    eid = mine.filter(pl.col("record") == "line 7")["episode_id"][0]
    assert eid.startswith("openai:stage_chat:L7:e1:")


def test_imports_add_up_and_duplicates_count_across_runs(tmp_path):
    out = tmp_path / "out"
    only_line_1 = tmp_path / "in" / "first.jsonl"
    only_line_1.parent.mkdir()
    only_line_1.write_text(CHAT.read_text().splitlines()[0] + "\n")
    run("openai", [only_line_1], out)
    result = run("openai", [CHAT], out)
    # line 1 of the full file is now a duplicate of the record imported before
    assert "duplicate" in rejects_of(result, CHAT, "line 1")
    assert any(source_name(only_line_1) in r for r in rejects_of(result, CHAT, "line 1")["duplicate"])
    assert ImportedLogs.read(out).records.height == 23


def test_a_rejected_record_is_judged_again_and_its_rows_replaced(tmp_path):
    """A record rejected before is judged again: rejected for other reasons, or now kept, its
    rows replace the old ones; rejected for the same reasons, the folder is left as it was."""
    out = tmp_path / "out"
    run("openai", [CHAT], out, min_score=0.5)          # lines 7, 8 (0.25) and 16 (a truncated success: 0)
    low = ["line 7", "line 8", "line 16"]
    lower_bar = run("openai", [CHAT], out, min_score=0.3)
    assert lower_bar.files[0] == {"source": source_name(CHAT), "read": 22, "kept": 0, "kept_as_failure": 0,
                                 "rejected": 3, "already_imported": 19}
    records = ImportedLogs.read(out).records
    assert records.height == 22 and records.filter(pl.col("record").is_in(low))["verdict"].unique().to_list() == [
        "rejected"]
    assert rejects_of(lower_bar, CHAT, "line 7")["low_score"] == [
        f"{source_name(CHAT)} line 7: the score reaches the import's reward filter (--min-score; off by default): "
        "score 0.25 is below --min-score 0.3"]
    unfiltered = run("openai", [CHAT], out)
    assert (unfiltered.files[0]["kept"], unfiltered.files[0]["kept_as_failure"]) == (2, 1)
    assert unfiltered.files[0]["already_imported"] == 22 - 3
    # the folder now holds what an import without the filter writes, no row twice
    fresh = run("openai", [CHAT], tmp_path / "fresh")
    assert_holds_as(out, fresh.logs)
    before = digest(out)
    again = run("openai", [CHAT], out)
    assert digest(out) == before and again.totals["already_imported"] == again.totals["read"] == 22


def test_a_record_mended_in_place_supersedes_its_rejected_row(tmp_path):
    log = tmp_path / "in" / "chat.jsonl"
    log.parent.mkdir()
    log.write_text('{"messages": [{"role": "user", "content": "save a note"}, {"role": "assistant", '
                   '"content": "done"}]}\n')
    out = tmp_path / "out"
    assert run("openai", [log], out).files[0]["rejected"] == 1          # no outcome
    log.with_name("chat.outcomes.jsonl").write_text('{"line": 1, "success": true}\n')
    mended = run("openai", [log], out)
    assert mended.files[0]["kept"] == 1
    records = ImportedLogs.read(out).records
    assert records.height == 1 and records["verdict"].to_list() == ["kept"]
    assert ImportedLogs.read(out).rejects.is_empty()


def test_records_under_one_id_are_judged_alike_in_one_import_and_the_next(tmp_path):
    """Two records under one sample id: the second is a conflict whether the first was kept in
    the same import or an earlier one, so a second import finds nothing to judge differently."""
    record = json.loads(CHAT.read_text().splitlines()[0])
    record["metadata"]["sample_id"] = "s1"
    changed = json.loads(json.dumps(record))
    changed["metadata"]["model"] = "another-model"
    src = tmp_path / "in" / "chat.jsonl"
    src.parent.mkdir()
    src.write_text(json.dumps(record) + "\n" + json.dumps(changed) + "\n")
    out = tmp_path / "out"
    first = run("openai", [src], out)
    assert list(rejects_of(first, src, "line 2")) == ["conflict"]
    assert rejects_of(first, src, "line 2")["conflict"][0].endswith(
        f"{source_name(src)} line 1 was kept under this id with other content (sha256 "
        f"{first.logs.records['sha256'][0][:12]}, now {first.logs.records['sha256'][1][:12]}): import a changed "
        "file under another name")
    before = digest(out)
    again = run("openai", [src], out)
    assert digest(out) == before and again.files[0]["already_imported"] == 2


def test_a_changed_file_under_the_same_name_is_a_conflict_not_an_overwrite(tmp_path):
    src = tmp_path / "in" / "chat.jsonl"
    src.parent.mkdir()
    lines = CHAT.read_text().splitlines()
    src.write_text("\n".join(lines[:3]) + "\n")
    out = tmp_path / "out"
    run("openai", [src], out)
    kept_before = pl.read_parquet(out / "episodes.parquet")
    changed = json.loads(lines[1])
    changed["metadata"]["model"] = "another-model"
    src.write_text("\n".join([lines[0], json.dumps(changed), lines[2]]) + "\n")
    result = run("openai", [src], out)
    assert result.files[0]["already_imported"] == 2
    assert "conflict" in rejects_of(result, src, "line 2")
    assert pl.read_parquet(out / "episodes.parquet").equals(kept_before)


def test_a_corrupted_file_loses_only_its_damaged_lines(openai_import):
    recs = openai_import.logs.records.filter(pl.col("source") == source_name(CORRUPT)).sort("line")
    assert recs["line"].to_list() == [1, 2, 3, 4, 5, 6]
    assert dict(recs.select("line", "verdict").iter_rows()) == {
        1: "kept", 2: "rejected", 3: "kept", 4: "rejected", 5: "rejected", 6: "rejected"}
    reasons = rejects_of(openai_import, CORRUPT, "line 6")["malformed"]
    assert reasons[0].startswith(f"{source_name(CORRUPT)} line 6: ")


def test_outputs_are_complete_and_gated(openai_import):
    out = openai_import.out_dir
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left behind"
    assert set(openai_import.gates) == {"import_records", "imported_tasks", "episodes", "steps"}
    assert all(g.success for name, g in openai_import.gates.items() if name != "import_records")
    quarantined = pl.read_parquet(openai_import.gates["import_records"].quarantine_path)
    assert quarantined.height == openai_import.logs.records.filter(pl.col("verdict") != "kept").height


def test_refuses_an_output_folder_inside_the_inputs_and_a_partial_folder(tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(LOGS / "openai", logs)
    with pytest.raises(ValueError, match="inside the output folder"):
        run("openai", [logs / "stage_chat.jsonl"], logs)
    # nor an output inside an input folder: the import would write into what it reads
    for out in (logs / "imported", logs / "deeper" / "imported"):
        with pytest.raises(ValueError, match=re.escape(f"--out {out} is inside the input folder {logs}: choose an "
                                                       "--out apart from the inputs")):
            run("openai", [logs], out)
    assert not (logs / "imported").exists()
    run("openai", [logs / "stage_chat.jsonl"], logs / "imported")       # beside an input file: allowed
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "episodes.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="not a complete import folder"):
        run("openai", [CHAT], partial)
    with pytest.raises(FileNotFoundError, match="no such file"):
        run("openai", [tmp_path / "missing.jsonl"], tmp_path / "o")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:500])


FOLDER_DAMAGES = {     # file of a finished import folder, what is done to it, what the error says
    "truncated records": ("records.parquet", _truncate, "records.parquet: cannot be read"),
    "truncated steps": ("steps.parquet", _truncate, "steps.parquet: cannot be read"),
    "truncated rejects": ("rejects.parquet", _truncate, "rejects.parquet: cannot be read"),
    "records without their verdicts": (
        "records.parquet", lambda p: pl.read_parquet(p).drop("verdict").write_parquet(p),
        "its tables are not an import's (unable to find column \"verdict\""),
    "tools that are not JSON": ("tools.json", lambda p: p.write_text("[1"), "tools.json: cannot be read"),
    "tools that are a list": ("tools.json", lambda p: p.write_text("[]"), "tools.json: expected a JSON object"),
    "tools that are not UTF-8": ("tools.json", lambda p: p.write_bytes(b"\xff"), "tools.json: cannot be read"),
}


@pytest.fixture(scope="module")
def side_import(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imp") / "side"
    run("openai", [SIDE], out)
    return out


@pytest.mark.parametrize("damage", FOLDER_DAMAGES)
def test_adding_to_a_damaged_import_folder_names_the_file_and_changes_nothing(side_import, tmp_path, damage):
    name, spoil, says = FOLDER_DAMAGES[damage]
    out = shutil.copytree(side_import, tmp_path / "imp")
    spoil(out / name)
    before = digest(out)
    with pytest.raises(ValueError) as e:
        run("openai", [CHAT], out)
    assert says in str(e.value) and "the import folder is damaged" in str(e.value), str(e.value)
    assert digest(out) == before


def test_an_import_killed_before_its_commit_point_is_redone_not_doubled(tmp_path, monkeypatch):
    """records.parquet is written last; killed just before it, the folder reads as before the
    run, and the next import completes it without doubling a single episode."""
    import distillery.importers.core as core

    out = tmp_path / "out"
    run("openai", [CHAT], out)
    before = ImportedLogs.read(out)
    real = core.write_parquet

    def killed(frame, path):
        if Path(path).name == "records.parquet":
            raise KeyboardInterrupt("killed")
        return real(frame, path)

    monkeypatch.setattr(core, "write_parquet", killed)
    with pytest.raises(KeyboardInterrupt):
        run("openai", [SIDE], out)
    monkeypatch.setattr(core, "write_parquet", real)
    assert pl.read_parquet(out / "episodes.parquet").height == before.episodes.height + 2   # written ahead
    assert ImportedLogs.read(out).episodes.equals(before.episodes)                          # read as committed
    result = run("openai", [SIDE], out)
    assert result.files[0]["kept"] == 2 and result.files[0]["already_imported"] == 0
    episodes = pl.read_parquet(out / "episodes.parquet")
    assert episodes.height == before.episodes.height + 2 and episodes["episode_id"].is_unique().all()


def assert_holds_as(out: Path, expected: ImportedLogs) -> None:
    """`out` holds `expected`'s tables, its gate reports count their rows, and no temporary
    file is left in it."""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left behind"
    logs = ImportedLogs.read(out)
    assert logs.tools == expected.tools
    for name in ("tasks", "episodes", "steps", "records", "rejects"):
        assert getattr(logs, name).equals(getattr(expected, name)), name
    for suite, table in (("import_records", logs.records), ("imported_tasks", logs.tasks),
                         ("episodes", logs.episodes), ("steps", logs.steps)):
        assert json.loads((out / "quality" / f"{suite}.summary.json").read_text())["n_rows"] == table.height, suite


def test_a_table_that_cannot_be_written_leaves_the_reports_as_they_were(tmp_path):
    """The gates report before the tables are written; when a table then cannot be written (a
    folder stands where summary.json goes), the reports are put back: none counts rows the
    folder does not hold, and the earlier import's outputs are all still there."""
    out = tmp_path / "out"
    run("openai", [CHAT], out)
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()
    before, reports = ImportedLogs.read(out), (digest(out / "quality"), digest(out / "quarantine"))
    with pytest.raises(OSError):
        run("openai", [SIDE], out)
    assert (digest(out / "quality"), digest(out / "quarantine")) == reports
    assert_holds_as(out, before)


def test_the_temporaries_of_an_import_killed_outright_are_removed_by_the_next(tmp_path):
    """A hard kill leaves the saved reports and a half-written table behind; the next import
    that writes removes them (and nothing else that is not its own)."""
    out = tmp_path / "out"
    run("openai", [CHAT], out)
    (out / ".reports.abc123.tmp" / "quality").mkdir(parents=True)
    (out / ".reports.abc123.tmp" / "quality" / "episodes.summary.json").write_text("{}")
    (out / ".episodes.parquet.x1y2.tmp").write_bytes(b"PAR1 half")
    (out / "notes.txt").write_text("the user's")
    run("openai", [SIDE], out)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (out / "notes.txt").read_text() == "the user's"


# Run in a child process that SIGKILLs itself halfway through its Nth table write (the
# temporary file begun, not renamed): no `finally` runs, as when a machine loses power.
_KILLED_IMPORT = """
import os, signal, sys
from pathlib import Path
import distillery.io as io
from distillery.importers import ImportConfig, import_logs
out, tasks, kill_at, *paths = sys.argv[1:]
writes = [0]
real = io.atomic_path
def counted(path):
    writes[0] += 1
    if writes[0] == int(kill_at):
        real(path).__enter__().write_bytes(b"PAR1 half a table")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path)
io.atomic_path = counted
import_logs("openai", [Path(p) for p in paths], out, ImportConfig(env="stage"), tasks=tasks)
"""


@pytest.fixture(scope="module")
def chat_then_side(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder with CHAT imported, and one with CHAT and then SIDE imported."""
    first, both = tmp_path_factory.mktemp("chat") / "out", tmp_path_factory.mktemp("both") / "out"
    run("openai", [CHAT], first)
    shutil.copytree(first, both)
    run("openai", [SIDE], both)
    return first, both


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", range(1, len(OUTPUTS) + 1))
def test_an_import_killed_outright_at_any_write_is_completed_by_the_next(tmp_path, chat_then_side, kill_at):
    import os
    import signal
    import subprocess
    import sys

    first, clean = chat_then_side
    out = tmp_path / "out"
    shutil.copytree(first, out)
    child = subprocess.run([sys.executable, "-c", _KILLED_IMPORT, str(out), str(TASKS), str(kill_at), str(SIDE)],
                           capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    run("openai", [SIDE], out)
    assert_holds_as(out, ImportedLogs.read(clean))
    assert sorted(os.listdir(out)) == sorted(os.listdir(clean))


def test_the_reward_filter_rejects_low_scores_only_when_asked(tmp_path):
    result = run("openai", [CHAT, SIDE], tmp_path / "out", min_score=0.5)
    for record in ("line 7", "line 8"):                       # score 0.25
        assert rejects_of(result, CHAT, record) == {"low_score": [
            f"{source_name(CHAT)} {record}: the score reaches the import's reward filter (--min-score; off by "
            "default): score 0.25 is below --min-score 0.5"]}
    side = result.logs.records.filter(pl.col("source") == source_name(SIDE))
    assert dict(side.select("record", "verdict").iter_rows())["line 2"] == "kept"      # score 0.5
    assert result.files[0]["kept"] == 9 - 2


def test_the_reward_filter_judges_the_score_an_episode_is_kept_with(tmp_path):
    """Line 16 hit a limit yet was logged a success: kept as a failure, its score 0. The filter
    judges that 0, not the logged 1, so no episode below --min-score gets past it."""
    result = run("openai", [CHAT], tmp_path / "out", min_score=1)
    found = rejects_of(result, CHAT, "line 16")
    assert sorted(found) == ["low_score", "truncated_success"]
    assert found["low_score"][0].endswith("score 0 is below --min-score 1 (the run hit a limit, so its logged "
                                          "success counts as a failure of score 0)")
    assert result.logs.episodes["score"].min() == 1.0
    assert result.files[0]["kept_as_failure"] == 0
    quarantined = pl.read_parquet(result.gates["import_records"].quarantine_path)
    assert "line 16" in quarantined["record"].to_list()
    # --assume-success: a limit-hit run without an outcome is a success assumed, kept as a failure of 0 too
    line = json.loads(CHAT.read_text().splitlines()[15])
    for key in ("success", "score"):
        del line["metadata"][key]
    src = tmp_path / "in" / "assumed.jsonl"
    src.parent.mkdir()
    src.write_text(json.dumps(line) + "\n")
    assumed = run("openai", [src], tmp_path / "assumed", assume_success=True, min_score=0.5)
    assert sorted(rejects_of(assumed, src, "line 1")) == ["low_score", "truncated_success"]


def test_a_known_task_id_with_another_instruction_is_a_task_conflict(tmp_path):
    record = json.loads(CHAT.read_text().splitlines()[0])
    record["messages"][1]["content"] = record["messages"][1]["content"].replace(
        "Add the person who wrote to me about the training", "Delete every contact")
    src = tmp_path / "in" / "renamed.jsonl"
    src.parent.mkdir()
    src.write_text(json.dumps(record) + "\n")
    result = run("openai", [src], tmp_path / "out")
    assert rejects_of(result, src, "line 1") == {"task_conflict": [
        f"{source_name(src)} line 1: a known task id comes with that task's instruction: task "
        "add_contact_card-train-default-0000 is known with another instruction than the record's"]}


def test_every_rule_is_exercised_by_a_fixture_or_a_test_here():
    """A rule added to IMPORT_RULES must come with a record that breaks it."""
    covered = {k for _, _, k, _ in OPENAI_CASES + INSPECT_CASES}
    covered |= {"truncated_success", "conflict", "task_conflict", "low_score"}   # their own tests above
    assert covered == set(IMPORT_RULE_KINDS)
