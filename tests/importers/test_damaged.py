"""Damaged inputs: an eval log cut off mid-write, the secret patterns on their own, numbers too long to
convert, and records damaged at random (every one judged, none raised)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillery.importers import ImportConfig, import_logs
from distillery.importers.core import judge, source_name
from distillery.importers.openai_jsonl import read_openai, read_outcomes
from distillery.importers.secrets import find_secrets
from distillery.quality.import_suites import IMPORT_VERDICTS

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


@pytest.mark.parametrize("name", ["stage_agent.eval", "stage_epochs.json"])
def test_a_cut_off_eval_log_is_reported_and_the_other_files_are_imported(tmp_path, name):
    logs = tmp_path / "logs"
    logs.mkdir()
    data = (LOGS / "inspect" / name).read_bytes()
    (logs / f"cut_{name}").write_bytes(data[: len(data) // 2])
    other = "stage_epochs.json" if name == "stage_agent.eval" else "stage_agent.eval"
    (logs / other).write_bytes((LOGS / "inspect" / other).read_bytes())
    result = import_logs("inspect", [logs], tmp_path / "out", ImportConfig(env="stage"),
                         tasks=LOGS / "tasks.parquet")
    by_file = {Path(f["source"]).name: f for f in result.files}
    cut = by_file[f"cut_{name}"]
    assert cut["rejected"] >= 1
    rejects = result.logs.rejects.filter(pl.col("source").str.ends_with(f"cut_{name}"))
    assert set(rejects["kind"]) == {"malformed"}
    assert all(("cannot read the eval log" in r) or ("breaks off" in r) for r in rejects["reason"])
    assert by_file[other]["kept"] == {"stage_epochs.json": 1, "stage_agent.eval": 7}[other]


@pytest.mark.parametrize(("text", "names"), [
    ("export OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx0123", ["openai_key", "assigned_secret"]),
    ("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz", ["anthropic_key"]),
    ("aws AKIAIOSFODNN7EXAMPLE here", ["aws_access_key_id"]),
    ("token ghp_" + "a1" * 18, ["github_token"]),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", ["bearer_token"]),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", ["private_key"]),
    ('{"password": "hunter2hunter2hunter2x9"}', ["assigned_secret"]),
    ("MY_SERVICE_API_KEY=9f8e7d6c5b4a39281726", ["assigned_secret"]),
    ("Please file the invoice under finance/2024 and tell Ann.", []),
    ("the task-specific key is skipped when sk- prefixes are short: sk-abc", []),
    ("password: see the vault", []),
])
def test_secret_patterns(text, names):
    assert find_secrets(text) == names


def test_crlf_line_ends_and_a_byte_order_mark_read_as_the_same_records(tmp_path):
    lines = (LOGS / "openai" / "stage_chat.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    windows = tmp_path / "in" / "windows.jsonl"
    windows.parent.mkdir()
    windows.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    result = import_logs("openai", [windows], tmp_path / "out", ImportConfig(env="stage"),
                         tasks=LOGS / "tasks.parquet")
    assert result.files[0]["read"] == 3 and result.files[0]["kept"] == 3, result.new_rejects["reason"].to_list()


def test_an_eval_log_without_task_metadata_derives_its_tasks(tmp_path):
    """Samples that name no task (plain inspect datasets): the task id is `<eval task>/<sample
    id>`, the instruction the sample's input; a test task's instruction is still refused."""
    from inspect_ai.log import read_eval_log, write_eval_log

    log = read_eval_log(str(LOGS / "inspect" / "stage_agent.eval"))
    for sample in log.samples:
        sample.metadata = {}
    plain = tmp_path / "in" / "plain.eval"
    plain.parent.mkdir()
    write_eval_log(log, str(plain))
    result = import_logs("inspect", [plain], tmp_path / "out", ImportConfig(env="stage"),
                         tasks=LOGS / "tasks.parquet")
    assert result.files[0]["read"] == 10
    recs = result.logs.records
    assert set(recs["task_id"]) == {f"stage/s{i:02d}" for i in range(1, 11)}
    s09 = recs.filter(pl.col("sample") == "s09").row(0, named=True)
    assert s09["verdict"] == "rejected" and s09["rule_test_task"] == [
        "the instruction is that of test task cleanup_temp-test-default-0000"]
    tasks = result.logs.tasks.filter(pl.col("task_id") == "stage/s01").row(0, named=True)
    assert tasks["env"] == "stage" and tasks["split"] == "train" and tasks["n_ref_steps"] == 4
    assert result.gates["imported_tasks"].success


# Python converts at most 4,300 digits to an int (sys.get_int_max_str_digits): json.loads of a
# longer number raises ValueError, not JSONDecodeError.
TOO_LONG = "9" * 5000


def test_a_number_too_long_to_convert_in_a_calls_arguments_spoils_that_call_not_the_import(tmp_path):
    first, second = (LOGS / "openai" / "stage_chat.jsonl").read_text().splitlines()[:2]
    record = json.loads(first)
    call = next(m for m in record["messages"] if m.get("tool_calls"))["tool_calls"][0]
    call["function"]["arguments"] = '{"query": ' + TOO_LONG + "}"
    log = tmp_path / "chat.jsonl"
    log.write_text(json.dumps(record) + "\n" + second + "\n")
    result = import_logs("openai", [log], tmp_path / "out", ImportConfig(env="stage"), tasks=LOGS / "tasks.parquet")
    assert result.files[0]["read"] == 2
    assert result.logs.records["verdict"].to_list() == ["kept", "kept"]
    episode = result.logs.records.filter(pl.col("record") == "line 1")["episode_id"][0]
    first = result.logs.steps.filter(pl.col("episode_id") == episode).sort("t").row(0, named=True)
    assert first["valid"] is False and "the arguments are not valid JSON" in first["error"]
    assert "4300 digits" in first["error"] and TOO_LONG not in first["error"]


def test_a_side_file_with_a_number_too_long_to_convert_is_refused_naming_file_and_line(tmp_path):
    side = tmp_path / "side.jsonl"
    side.write_text('{"line": 1, "success": true}\n{"line": 2, "score": ' + TOO_LONG + "}\n")
    with pytest.raises(ValueError, match=r"side\.jsonl:2: not valid JSON .*4300 digits"):
        read_outcomes(side)


def test_side_file_rows_for_one_record_twice_are_refused_naming_both_lines(tmp_path):
    twice = tmp_path / "twice.outcomes.jsonl"
    twice.write_text('{"line": 1, "success": true}\n{"line": 1, "success": false}\n')
    with pytest.raises(ValueError, match=rf"twice\.outcomes\.jsonl:2: a second row for line 1 \(the first is "
                                         rf"{re.escape(str(twice))}:1\)"):
        read_outcomes(twice)
    twice.write_text('{"sample_id": 7, "success": true}\n\n{"sample_id": "7", "success": false}\n')
    with pytest.raises(ValueError, match=r"outcomes\.jsonl:3: a second row for sample_id '7' \(the first is .*:1\)"):
        read_outcomes(twice)
    # one row by sample id and one by line for the same record: found as the record is read
    log = tmp_path / "log.jsonl"
    record = json.loads((LOGS / "openai" / "stage_chat.jsonl").read_text().splitlines()[0])
    record["metadata"]["sample_id"] = "s1"
    log.write_text(json.dumps(record) + "\n")
    both = tmp_path / "both.jsonl"
    both.write_text('{"line": 1, "success": true}\n{"sample_id": "s1", "success": false}\n')
    with pytest.raises(ValueError, match=r"both\.jsonl:2 \(sample_id 's1'\) and .*both\.jsonl:1 \(line 1\) are both "
                                         "rows for the record on line 1"):
        import_logs("openai", [log], tmp_path / "out", ImportConfig(env="stage"), outcomes=both)
    assert not (tmp_path / "out").exists()


# A lone surrogate: JSON's \ud800 escape that is not half of a pair. Python's json decodes it to
# a character no UTF-8 text can hold, so one such record used to fail the whole import.
LONE = "\ud800"


def _with_lone_surrogate(record: dict[str, Any], where: str) -> dict[str, Any]:
    record = json.loads(json.dumps(record))
    call = next(m for m in record["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]
    if where == "content":
        record["messages"][1]["content"] += LONE
    elif where == "model":
        record["metadata"]["model"] = "gpt" + LONE
    elif where == "arguments":            # in the arguments' text
        call["arguments"] = call["arguments"].replace('"}', LONE + '"}', 1)
    elif where == "decoded arguments":    # escaped in the arguments' text: decoded with them
        call["arguments"] = call["arguments"].replace('"}', '\\ud800"}', 1)
    return record


SURROGATE_PLACES = {"content": "messages[1].content: \\ud800 at character",
                    "model": "metadata.model: \\ud800 at character 4",
                    "arguments": "messages[2].tool_calls[0].function.arguments: \\ud800 at character",
                    "decoded arguments": "messages[2].tool_calls[0].function.arguments (decoded).query: \\ud800"}


def test_a_lone_surrogate_rejects_its_record_not_the_import(tmp_path):
    good = (LOGS / "openai" / "stage_chat.jsonl").read_text().splitlines()[:3]
    first = json.loads(good[0])
    log = tmp_path / "mixed.jsonl"
    bad = [json.dumps(_with_lone_surrogate(first, where)) for where in SURROGATE_PLACES]
    assert all("\\ud800" in line for line in bad)        # written as JSON escapes, as a log would hold them
    log.write_text("\n".join(bad + good[1:]) + "\n")
    side = tmp_path / "mixed.outcomes.jsonl"              # the side file's blocks are checked too
    side.write_text(json.dumps({"line": 5, "model": "m" + LONE}) + "\n")
    result = import_logs("openai", [log], tmp_path / "out", ImportConfig(env="stage"), tasks=LOGS / "tasks.parquet")
    assert result.files[0] == {"source": source_name(log), "read": 6, "kept": 1, "kept_as_failure": 0,
                               "rejected": 5, "already_imported": 0}
    reasons = dict(result.logs.rejects.select("record", "reason").iter_rows())
    assert set(result.logs.rejects["kind"]) == {"malformed"}
    for n, says in enumerate(SURROGATE_PLACES.values(), 1):
        assert says in reasons[f"line {n}"] and "is a lone surrogate, not valid Unicode" in reasons[f"line {n}"]
    assert "mixed.outcomes.jsonl: metadata.model: \\ud800 at character 2" in reasons["line 5"]
    assert pl.read_parquet(tmp_path / "out" / "records.parquet").height == 6


def test_a_lone_surrogate_in_an_inspect_sample_rejects_that_sample_only(tmp_path):
    """inspect reads an .eval log's samples with Python's json, so a surrogate escape in one
    sample reaches the reader: that sample is rejected, the log's other samples are read."""
    import zipfile

    import inspect_ai.log  # noqa: F401 - importing inspect lets zipfile read the log's zstd members

    spoilt = tmp_path / "in" / "spoilt.eval"
    spoilt.parent.mkdir()
    with zipfile.ZipFile(LOGS / "inspect" / "stage_agent.eval") as z, \
            zipfile.ZipFile(spoilt, "w", zipfile.ZIP_DEFLATED) as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "samples/s03_epoch_1.json":
                sample = json.loads(data)
                sample["messages"][1]["content"] = LONE + sample["messages"][1]["content"]
                data = json.dumps(sample).encode()
            out.writestr(name, data)
    result = import_logs("inspect", [spoilt], tmp_path / "out", ImportConfig(env="stage"),
                         tasks=LOGS / "tasks.parquet")
    assert result.files[0]["read"] == 10 and result.files[0]["kept"] == 7 - 1
    s03 = result.logs.rejects.filter(pl.col("record") == "sample s03 epoch 1")
    assert s03["kind"].to_list() == ["malformed"]
    assert "messages[1].content: \\ud800 at character 1 is a lone surrogate" in s03["reason"][0]


# Any record, however damaged, is judged: kept, kept as a failure, or rejected with its reasons.
# Hypothesis damages the fixture's records (a field replaced by any JSON value, a field deleted,
# a metadata field set to any value, a call's arguments set to any text) with a fixed seed.
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)
_ARGUMENTS = st.one_of(st.text(max_size=30), _VALUES.map(json.dumps), st.just('{"query": ' + TOO_LONG + "}"))
_META_KEYS = ["task_id", "instruction", "env", "family", "split", "success", "score", "ended", "limit", "error",
              "failed_checks", "sample_id", "epoch", "usage", "wall_s", "model"]


def _places(obj: Any, at: tuple = ()) -> list[tuple]:
    inner = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    return [at] + [p for k, v in inner for p in _places(v, (*at, k))]


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_damaged_record_is_judged_never_raised(tmp_path_factory, data):
    records = [json.loads(line) for line in (LOGS / "openai" / "stage_chat.jsonl").read_text().splitlines()[:2]]
    for _ in range(data.draw(st.integers(1, 4), label="damages")):
        record = data.draw(st.sampled_from(records))
        how = data.draw(st.sampled_from(["replace", "delete", "metadata", "arguments"]))
        if how == "metadata":
            record.setdefault("metadata", {})[data.draw(st.sampled_from(_META_KEYS))] = data.draw(_VALUES)
            continue
        if how == "arguments":
            messages = record.get("messages")
            calls = [c for m in (messages if isinstance(messages, list) else []) if isinstance(m, dict)
                     for c in (m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else [])]
            if calls and isinstance(calls[0], dict) and isinstance(calls[0].get("function"), dict):
                calls[0]["function"]["arguments"] = data.draw(_ARGUMENTS)
            continue
        *parent_at, key = data.draw(st.sampled_from(_places(record)[1:]))
        parent = record
        for k in parent_at:
            parent = parent[k]
        if how == "replace":
            parent[key] = data.draw(_VALUES)
        else:
            del parent[key]
    log = tmp_path_factory.mktemp("damaged") / "chat.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    judged = judge(read_openai(log, "chat.jsonl"), ImportConfig(env="stage"))
    assert len(judged.records) == len(records)
    for row in judged.records:
        reasons = [r for k, v in row.items() if k.startswith("rule_") for r in v]
        assert row["verdict"] in IMPORT_VERDICTS and (row["verdict"] == "kept" or reasons), row
