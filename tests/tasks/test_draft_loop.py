"""The drafting loop against a real scripted OpenAI-compatible server on 127.0.0.1: good drafts
kept, broken and hostile ones rejected with the right reason, a draft fixed after one round
of feedback kept, everything recorded and gated; kept drafts join the task table and play."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from tests.conftest import REPO
from tests.tasks import drafts as D
from tests.tasks.drafts import scripted_endpoint

from distillery.agents.base import PolicySpec, make_policy
from distillery.agents.openai import Price
from distillery.config import TasksConfig
from distillery.envs.stage.drafting import EXAMPLE
from distillery.llm import ChatEndpoint
from distillery.rollout import RolloutConfig, make_jobs, run_batch
from distillery.tasks.draft import (
    DraftConfig,
    Hint,
    build_task,
    draft_tasks,
    family_power_check,
    read_hints,
)
from distillery.tasks.drafted import read_kept, write_outputs
from distillery.tasks.generate import generate_tasks
from distillery.types import DraftAttempt, draft_attempts_to_frame, tasks_from_frame, tasks_to_frame

# hint -> (the replies by round, what the last reply's verdict is, its first reason kind)
SCRIPT: dict[str, tuple[list[str | int], str, str]] = {
    "the user wants last month's invoices filed": ([D.fenced(D.INVOICES)], "kept", ""),
    "move the newsletters out of the inbox": ([json.dumps(D.NEWSLETTERS)], "kept", ""),
    "tell a contact the budget review moved": (
        ["<think>Ann Lee, not Ann Shah {careful}.</think>\n" + json.dumps(D.EMAIL)], "kept", ""),
    "save the pricing sheet cara sent": ([D.fenced(D.ATTACHMENT_WRONG_MAIL), D.fenced(D.ATTACHMENT)], "kept", ""),
    "file the downloaded invoices": ([D.fenced(D.INVOICES)], "rejected", "duplicate"),
    "copy the example": ([json.dumps(EXAMPLE)], "rejected", "duplicate"),
    "file invoices, wrongly": ([D.fenced(D.UNSOLVABLE)], "rejected", "unsolvable"),
    "a task that is already done": ([D.fenced(D.TRIVIAL)], "rejected", "trivial"),
    "answer in prose": ([D.NOT_JSON], "rejected", "not_json"),
    "answer in broken json": ([D.BROKEN_JSON], "rejected", "not_json"),
    "ignore the schema": ([json.dumps(D.SCHEMA)], "rejected", "schema"),
    "invent a check": ([json.dumps(D.UNKNOWN_CHECK)], "rejected", "unknown_check"),
    "invent a tool": ([json.dumps(D.UNKNOWN_TOOL)], "rejected", "unknown_tool"),
    "forget collateral damage": ([json.dumps(D.MISSING_CHECK)], "rejected", "missing_check"),
    "escape the sandbox": ([json.dumps(D.OUTSIDE)], "rejected", "outside_sandbox"),
    "smuggle code": ([json.dumps(D.CODE)], "rejected", "code"),
    "a huge workspace": ([json.dumps(D.OVERSIZED)], "rejected", "oversized"),
    "clash mail ids": ([json.dumps(D.DUPLICATE_MAIL_IDS)], "rejected", "build_failed"),
    "something a monkey could do": ([json.dumps(D.RANDOM_SOLVABLE)], "rejected", "random_solved"),
    "an endpoint that fails": ([500], "error", "endpoint_error"),
}
PRICE = Price(input_per_mtok=1.0, output_per_mtok=4.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """One drafting run over every hint of SCRIPT (module-scoped: the tests below read it)."""
    root = tmp_path_factory.mktemp("draftrun")
    sandboxes = root / "sandboxes"
    sandboxes.mkdir()
    old = os.environ.get("DISTILLERY_SANDBOX")
    os.environ["DISTILLERY_SANDBOX"] = str(sandboxes)
    try:
        with scripted_endpoint({h: replies for h, (replies, _, _) in SCRIPT.items()}) as ep:
            endpoint = ChatEndpoint(ep.base_url, "scripted", max_retries=0, timeout=30)
            cfg = DraftConfig(max_repairs=1, probes=8, price=PRICE)
            seen: list[DraftAttempt] = []
            result = draft_tasks([Hint(h) for h in SCRIPT], endpoint, cfg, run_id="run1", on_attempt=seen.append)
            endpoint.close()
    finally:
        if old is None:
            del os.environ["DISTILLERY_SANDBOX"]
        else:
            os.environ["DISTILLERY_SANDBOX"] = old
    return result, ep, seen, root


def last_attempt(result, hint: str) -> DraftAttempt:
    return [a for a in result.attempts if a.hint == hint][-1]


@pytest.mark.parametrize("hint", list(SCRIPT))
def test_each_draft_is_kept_or_rejected_with_the_right_reason(run, hint):
    result = run[0]
    _, verdict, kind = SCRIPT[hint]
    a = last_attempt(result, hint)
    assert a.verdict == verdict, (a.reason_kinds, a.reasons)
    if kind:
        assert a.reason_kinds[0] == kind, a.reasons
        assert a.task_id == ""
    else:
        assert a.reasons == [] and a.task_id in {t.task_id for t in result.kept}


def test_duplicates_name_what_they_repeat(run):
    result = run[0]
    assert "the same task as drafted_the_user_wants_last_months_invoices-" in \
        last_attempt(result, "file the downloaded invoices").reasons[0]
    assert last_attempt(result, "copy the example").reasons == ["the same task as the example in the prompt"]


def test_a_rejected_draft_gets_its_reasons_back_and_the_fixed_reply_is_kept(run):
    result, ep = run[0], run[1]
    hint = "save the pricing sheet cara sent"
    first, second = [a for a in result.attempts if a.hint == hint]
    assert (first.round, first.verdict, first.reason_kinds[0]) == (0, "rejected", "unsolvable")
    assert (second.round, second.verdict) == (1, "kept")
    repair = [r for r in ep.requests if hint in r["messages"][1]["content"]][1]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == D.fenced(D.ATTACHMENT_WRONG_MAIL)
    assert "save_attachment) is invalid: m1 has no attachment 'pricing-sheet.pdf'" in repair[3]["content"]


def test_every_rejection_gets_its_repair_rounds_and_errors_stop_the_draft(run):
    result = run[0]
    for hint, (_, verdict, _) in SCRIPT.items():
        rounds = [a.round for a in result.attempts if a.hint == hint]
        if verdict == "rejected":
            assert rounds == [0, 1], hint           # max_repairs=1: one repair round after the first reply
        elif verdict == "error":
            assert rounds == [0], hint


def test_attempts_record_hint_draft_tokens_and_cost(run):
    result, _, seen, _ = run
    assert seen == result.attempts   # every attempt was shown as it was judged
    a = last_attempt(result, "the user wants last month's invoices filed")
    assert json.loads(a.draft_json) == D.INVOICES and a.reply == D.fenced(D.INVOICES)
    assert (a.tokens_in, a.tokens_out) == (1200, 800)
    assert a.cost_usd == pytest.approx(PRICE.cost(1200, 800))
    assert a.family == "drafted_the_user_wants_last_months_invoices" and a.model == "scripted"
    err = last_attempt(result, "an endpoint that fails")
    assert "HTTP 500" in err.reasons[0] and err.tokens_in == 0


def test_nothing_a_draft_names_escapes_its_sandbox_and_no_sandbox_is_left_behind(run):
    root = run[3]
    assert not list(root.rglob("escaped-by-draft.txt"))
    assert not (Path.home() / "escaped-by-draft.txt").exists() and not Path("/etc/escaped-by-draft.txt").exists()
    assert list((root / "sandboxes").iterdir()) == []


def test_outputs_are_gated_and_the_summary_reports_rates_rounds_and_cost(run, tmp_path):
    result = run[0]
    out = write_outputs(result.attempts, result.kept, result.power, run_id=result.run_id, model="scripted",
                        out_dir=tmp_path / "drafted", report_md=tmp_path / "drafted.md",
                        quality_dir=tmp_path / "quality", quarantine_dir=tmp_path / "quarantine")
    attempts = pl.read_parquet(out.attempts)
    assert attempts.height == len(result.attempts)
    assert (tmp_path / "quality" / "draft_attempts.json").exists() and (tmp_path / "quality" / "tasks.json").exists()
    kept = tasks_from_frame(pl.read_parquet(out.kept))
    assert {t.family for t in kept} == {"drafted_the_user_wants_last_months_invoices",
                                        "drafted_move_the_newsletters_out_of_the",
                                        "drafted_tell_a_contact_the_budget_review",
                                        "drafted_save_the_pricing_sheet_cara_sent"}
    s = out.run
    assert (s.drafts, s.kept, s.kept_first_try) == (len(SCRIPT), 4, 3)
    assert s.acceptance_rate == pytest.approx(4 / len(SCRIPT))
    assert s.repair_rounds_per_kept == pytest.approx(0.25)
    n_replies = sum(a.verdict != "error" for a in result.attempts)
    assert s.tokens_per_kept == pytest.approx(n_replies * 2000 / 4)
    assert s.cost_per_kept == pytest.approx(n_replies * PRICE.cost(1200, 800) / 4)
    assert s.reasons["not_json"] == 4 and s.reasons["endpoint_error"] == 1
    page = out.report_md.read_text()
    assert "acceptance 20.0%" in page and "repair rounds per kept task: 0.25" in page
    assert "random success rate <" in page
    report = json.loads(out.report_json.read_text())
    assert report["last_run"]["kept"] == 4 and len(report["last_run"]["family_power"]) == 4
    # A run written again (interrupted between its tables, then resumed) is there once.
    again = write_outputs(result.attempts, result.kept, result.power, run_id=result.run_id, model="scripted",
                          out_dir=tmp_path / "drafted", report_md=tmp_path / "drafted.md",
                          quality_dir=tmp_path / "quality", quarantine_dir=tmp_path / "quarantine")
    assert pl.read_parquet(again.attempts).equals(attempts) and again.total.kept == 4


def test_the_attempts_gate_refuses_an_inconsistent_table(tmp_path):
    from distillery.quality import SUITES, GateError, gate

    bad = DraftAttempt("a1", "r", "stage", "f", "h", 0, 0, "kept", ["but it had a reason"], ["trivial"], "",
                       "", "{}", 1, 1, 0.0, "m", "u", 0.1)
    with pytest.raises(GateError, match="_verdict_consistent"):
        gate(draft_attempts_to_frame([bad]), SUITES["draft_attempts"], source="attempts.parquet",
             report_dir=tmp_path / "q", quarantine_dir=tmp_path / "qq")


def test_family_level_probes_reject_what_random_solves_and_bound_the_rest(sandbox):
    cfg = DraftConfig(probes=0, power_rate=0.05, power_alpha=0.05)
    hint = Hint("file things", family="drafted_mixed")
    good, easy = build_task(D.INVOICES, hint, cfg), build_task(D.RANDOM_SOLVABLE, hint, cfg)
    attempts = [DraftAttempt(f"a{i}", "r", "stage", hint.family_name, hint.text, i, 0, "kept", [], [], t.task_id,
                             "", "{}", 0, 0, 0.0, "m", "u", 0.0) for i, t in enumerate((good, easy))]
    (power,) = family_power_check([good, easy], attempts, cfg)
    assert attempts[0].verdict == "kept"
    assert attempts[1].verdict == "rejected" and attempts[1].reason_kinds == ["random_solved"]
    assert "family-level" in attempts[1].reasons[0]
    assert (power.tasks, power.rejected, power.needed) == (1, 1, 59)
    assert power.episodes >= 59 and power.bound < 0.05


def test_a_task_the_family_level_probes_solve_leaves_the_kept_tasks(sandbox):
    hint = "write a note, any note"
    with scripted_endpoint({hint: [json.dumps(D.RANDOM_SOLVABLE)]}) as ep:
        endpoint = ChatEndpoint(ep.base_url, "scripted", max_retries=0, timeout=30)
        shown: list[DraftAttempt] = []
        result = draft_tasks([Hint(hint)], endpoint, DraftConfig(max_repairs=0, probes=0), on_attempt=shown.append)
        endpoint.close()
    assert result.kept == []
    (a,) = result.attempts
    assert (a.verdict, a.reason_kinds, a.task_id) == ("rejected", ["random_solved"], "")
    assert [x.verdict for x in shown] == ["kept", "rejected"]   # shown when judged, and again when overturned
    assert result.power[0].rejected == 1 and result.power[0].bound is None


def test_kept_drafts_join_the_task_table_and_play_like_any_task(run, tmp_path, sandbox):
    result = run[0]
    path = tmp_path / "kept.parquet"
    tasks_to_frame(result.kept).write_parquet(path)
    assert TasksConfig().drafted == ""   # the default task table does not take drafted tasks
    cfg = TasksConfig(families=["file_invoice"], n_train_per_family=2, n_test_per_family=0, random_probes=0,
                      drafted=str(path))
    merged = generate_tasks(cfg, progress=False)
    plain = generate_tasks(TasksConfig(families=["file_invoice"], n_train_per_family=2, n_test_per_family=0,
                                       random_probes=0), progress=False)
    drafted = [t for t in merged.tasks if t.family.startswith("drafted_")]
    assert [t.task_id for t in merged.tasks if not t.family.startswith("drafted_")] == \
        [t.task_id for t in plain.tasks]
    assert sorted(t.task_id for t in drafted) == sorted(t.task_id for t in result.kept)
    assert merged.report["drafted"] == {"path": str(path), "tasks": 4}
    rcfg = RolloutConfig(k=1, seed=0)
    oracle = run_batch(make_policy(PolicySpec("oracle")), make_jobs(drafted, "oracle", rcfg), rcfg)
    assert oracle.episodes["success"].all()
    rnd = run_batch(make_policy(PolicySpec("random", {"seed": 0})), make_jobs(drafted, "random", rcfg), rcfg)
    assert not rnd.episodes["success"].any()


def test_a_tampered_kept_file_is_refused_before_anything_runs(run, tmp_path):
    tasks = list(run[0].kept)
    tasks[0].initial_state = {**tasks[0].initial_state, "files": {"../../x": "tampered"}}
    path = tmp_path / "kept.parquet"
    tasks_to_frame(tasks).write_parquet(path)
    with pytest.raises(ValueError, match=rf"{path}: task {tasks[0].task_id} fails the draft screen: outside_sandbox"):
        read_kept(path, "stage")
    with pytest.raises(ValueError, match="outside_sandbox"):
        generate_tasks(TasksConfig(families=["file_invoice"], n_train_per_family=1, n_test_per_family=0,
                                   random_probes=0, drafted=str(path)), progress=False)


def test_hints_files(tmp_path):
    (tmp_path / "h.txt").write_text("# invoices\nfile the invoices\n\nsort the mail\n")
    assert [h.text for h in read_hints(tmp_path / "h.txt")] == ["file the invoices", "sort the mail"]
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(["plain", {"text": "b", "family": "bills", "split": "test", "n": 2}]))
    assert read_hints(tmp_path / "h.yaml", n=3) == [Hint("plain", n=3), Hint("b", "bills", "test", 2)]
    with pytest.raises(ValueError, match="split must be one of"):
        Hint("x", split="validation")
    with pytest.raises(ValueError, match="hint 0 must be"):
        (tmp_path / "bad.json").write_text('[{"hint": "x"}]')
        read_hints(tmp_path / "bad.json")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "distillery.cli", "tasks", "draft", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_prints_kept_tasks_and_rejections_and_writes_the_report(tmp_path, sandbox):
    hints = {"the user wants last month's invoices filed": [D.fenced(D.INVOICES)],
             "save the pricing sheet cara sent": [D.fenced(D.ATTACHMENT_WRONG_MAIL), D.fenced(D.ATTACHMENT)],
             "escape the sandbox": [json.dumps(D.OUTSIDE)]}
    (tmp_path / "hints.yaml").write_text(yaml.safe_dump([{"text": h, "family": f"fam{i}"}
                                                         for i, h in enumerate(hints)]))
    hints["one more time: file the invoices"] = [D.fenced(D.INVOICES)]
    with scripted_endpoint(hints) as ep:
        args = ("--base-url", ep.base_url, "--model", "scripted", "--hints", "hints.yaml", "--max-repairs", "1",
                "--price-in", "1", "--price-out", "4", "--no-progress")
        first = _cli(*args, cwd=tmp_path)
        again = _cli(*args, "--hint", "one more time: file the invoices", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "KEPT    fam0-" in out and "KEPT    fam1-" in out
    assert "REJECT  fam1 (draft 1, round 0):" in out and "unsolvable: reference step 1" in out
    assert "REJECT  fam2 (draft 2, round 1):" in out and "outside_sandbox: initial_state.files" in out
    assert "drafts: 3, kept: 2 (acceptance 66.7%" in out and "repair rounds per kept task: 0.50" in out
    assert "tokens per kept task: 5,000" in out and "cost per kept task: $0.0110" in out
    for name in ("data/tasks/drafted/attempts.parquet", "data/tasks/drafted/kept.parquet",
                 "data/tasks/drafted/report.json", "reports/drafted.md", "reports/quality/drafted/draft_attempts.json"):
        assert (tmp_path / name).exists(), name
    # A second run appends, and what earlier runs kept counts as a duplicate.
    assert again.returncode == 0, again.stderr
    assert "duplicate: the same task as fam0-" in again.stdout
    attempts = pl.read_parquet(tmp_path / "data/tasks/drafted/attempts.parquet")
    assert attempts["run_id"].n_unique() == 2
    assert pl.read_parquet(tmp_path / "data/tasks/drafted/kept.parquet").height == 2


def test_the_command_fails_loudly_without_hints_or_an_endpoint(tmp_path, sandbox):
    none = _cli("--base-url", "http://127.0.0.1:9/v1", "--model", "m", cwd=tmp_path)
    assert none.returncode == 2 and "give at least one --hint" in none.stderr
    down = _cli("--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--hint", "file invoices",
                "--max-retries", "0", "--timeout", "5", "--no-progress", cwd=tmp_path)
    assert down.returncode == 1 and "answered no request" in down.stderr
    assert "endpoint_error: cannot connect" in down.stdout


def test_an_environment_without_a_draft_format_is_refused_by_name_before_anything_is_written(tmp_path):
    # SQL declares no EnvSpec.draft_format (as a plugin's environment may not): the command says
    # so in one line, as `distillery tasks schema` does, not in a traceback.
    p = _cli("--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--hint", "x", "--env", "sql", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == ("distillery tasks draft: environment 'sql' declares no draft format "
                                "(EnvSpec.draft_format): tasks cannot be drafted from hints for it")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("name", "text", "says"), [
    ("h.yaml", "a: [1, 2\n  b: }\n", "h.yaml:2: not valid YAML"),
    ("h.json", '[{"family": "x"}]', "hint 0: no \"text\""),
    ("h.json", '[{"text": 5}]', "hint 0: text must be a string, got 5"),
    ("h.json", '[{"text": "file invoices", "n": "three"}]', "hint 0: n must be an integer, got 'three'"),
    ("h.jsonl", '{"text": "a hint"}\n\n{"text": "b"\n', "h.jsonl:3: not valid JSON"),
    ("h.jsonl", '{"text": "a hint"}\n{"text": "b", "split": "nope"}\n', "h.jsonl:2: hint 'b': split must be"),
    # more digits than Python converts to an int (4,300): ValueError from the parsers, not their own errors
    ("h.jsonl", '{"text": "a hint"}\n{"text": "b", "n": ' + "9" * 5000 + "}\n", "h.jsonl:2: not valid JSON"),
    ("h.json", '[{"text": "b", "n": ' + "9" * 5000 + "}]", "h.json: not valid JSON"),
])
def test_bad_hints_files_say_where(tmp_path, name, text, says):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as e:
        read_hints(tmp_path / name)
    assert says in str(e.value) and str(tmp_path / name) in str(e.value)


def test_a_hints_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="a folder, not a hints file"):
        read_hints(tmp_path)
