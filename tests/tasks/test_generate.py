"""Task generation keeps only drafts that validate, and says why it rejected the others."""

from __future__ import annotations

import random

import pytest

from distillery.config import TasksConfig
from distillery.envs.stage import families as fam_mod
from distillery.envs.stage.env import StageEnv
from distillery.envs.stage.families import StageDraft, file_invoice, stage_family
from distillery.envs.stage.profiles import Profile
from distillery.tasks.generate import (
    ValidationFailed,
    binomial_sf,
    draft_task,
    family_check_plan,
    generate_tasks,
    static_checks,
)
from distillery.types import ToolCall


def test_default_counts_and_families_are_what_the_issue_asks_for():
    cfg = TasksConfig()
    assert len(fam_mod.FAMILIES) >= 8
    assert cfg.n_train_per_family * len(fam_mod.FAMILIES) >= 200
    assert cfg.n_test_per_family * len(fam_mod.FAMILIES) >= 100
    areas = {a for f in fam_mod.FAMILIES.values() for a in f.areas}
    assert areas == {"files", "mail", "calendar", "contacts"}


def test_families_needing_lookups_and_long_solutions_exist():
    res = generate_tasks(TasksConfig(n_train_per_family=1, n_test_per_family=0, random_probes=0), progress=False)
    by_family = {t.family: t for t in res.tasks}
    lookups = {"search_mail", "read_mail", "find_contact", "list_events", "list_dir"}
    for name in ("forward_mail", "schedule_meeting", "email_contact"):
        tools = [c.tool for c in by_family[name].reference_solution]
        first_mutation = next(i for i, t in enumerate(tools) if t not in lookups)
        assert first_mutation >= 1 and any(t in lookups for t in tools[:first_mutation]), name
    assert max(len(t.reference_solution) - 1 for t in res.tasks) >= 4  # 4+ tool calls, finish aside
    for t in res.tasks:
        assert any(c["type"] == "unchanged_except" for c in t.checks), t.task_id
        assert t.preferences and all(p not in t.instruction for p in t.preferences)


def _broken(rng: random.Random, p: Profile) -> StageDraft:
    """A draft whose reference solution does not do what its checks ask."""
    d = file_invoice(rng, p)
    return StageDraft(d.instruction, d.state, [ToolCall("finish", {})], d.checks, d.preferences)


def _trivial(rng: random.Random, p: Profile) -> StageDraft:
    """A draft whose checks already pass on the untouched state."""
    d = file_invoice(rng, p)
    return StageDraft(d.instruction, d.state, [ToolCall("finish", {})],
                 [{"type": "unchanged_except"}], d.preferences)


def _constant(rng: random.Random, p: Profile) -> StageDraft:
    """The same task whatever the seed: every draft after the first is a duplicate."""
    return file_invoice(random.Random(0), p)


@pytest.mark.parametrize("builder, reason", [
    (_broken, "reference solution fails"),
    (_trivial, "the untouched initial state already passes"),
    (_constant, "duplicate of"),
])
def test_invalid_drafts_are_rejected_with_their_reason(monkeypatch, builder, reason):
    monkeypatch.setitem(fam_mod.FAMILIES, "bad", stage_family("bad", "a broken family", builder, ("files",)))
    cfg = TasksConfig(families=["bad"], n_train_per_family=2, n_test_per_family=0, random_probes=0,
                      max_attempts_factor=2)
    with pytest.raises(RuntimeError, match="only .* validated"):
        generate_tasks(cfg, progress=False)
    env = StageEnv()
    try:
        t0 = draft_task("bad", "train", "default", 0, 0, 15)
        t1 = draft_task("bad", "train", "default", 1, 0, 15)
        reasons = static_checks(t1, env, t1)
        if reason == "duplicate of":
            assert t0.initial_state == t1.initial_state and t0.instruction == t1.instruction
        else:
            assert any(r.startswith(reason) for r in reasons), reasons
    finally:
        env.close()


def test_a_family_that_has_no_draft_is_rejected_with_its_own_reason(monkeypatch):
    """A family's `draft` may raise NoDraft (no task at these coordinates): the attempt is
    rejected with the family's words, and the failure says which setting raises the attempts."""
    from distillery.envs.base import NoDraft

    def sometimes(rng: random.Random, p: Profile) -> StageDraft:
        if rng.random() < 0.5:
            raise NoDraft("no invoice to file here")
        return file_invoice(rng, p)

    monkeypatch.setitem(fam_mod.FAMILIES, "sometimes", stage_family("sometimes", "half the time", sometimes, ("files",)))
    cfg = TasksConfig(families=["sometimes"], n_train_per_family=6, n_test_per_family=0, random_probes=0,
                      max_attempts_factor=1)
    with pytest.raises(ValidationFailed) as err:
        generate_tasks(cfg, progress=False, attempts_hint="--max-attempts-factor")
    result = err.value.result
    assert result.rejected and all(r.reasons == ["no invoice to file here"] for r in result.rejected)
    assert len(result.tasks) + len(result.rejected) == 6
    assert "no invoice to file here x" in str(err.value) and "raise --max-attempts-factor or fix" in str(err.value)
    with pytest.raises(ValidationFailed, match="raise tasks.max_attempts_factor or fix"):
        generate_tasks(cfg, progress=False)               # the stage's words: its params.yaml key
    cfg.max_attempts_factor = 8
    kept = generate_tasks(cfg, progress=False).tasks
    assert len(kept) == 6 and len({t.task_id for t in kept}) == 6


def test_random_probes_reject_trivially_solvable_tasks(monkeypatch):
    """A task that any sent mail solves falls to the random policy's probes."""
    def easy(rng: random.Random, p: Profile) -> StageDraft:
        d = file_invoice(rng, p)
        return StageDraft(d.instruction, d.state,
                     [ToolCall("send_mail", {"to": p.user_email, "subject": "x", "body": "y"}), ToolCall("finish", {})],
                     [{"type": "mail_sent", "to": []}], d.preferences)

    monkeypatch.setitem(fam_mod.FAMILIES, "easy", stage_family("easy", "too easy", easy, ("mail",)))
    cfg = TasksConfig(families=["easy"], n_train_per_family=2, n_test_per_family=0, random_probes=30,
                      max_attempts_factor=2)
    with pytest.raises(RuntimeError, match="only 0 of 2"):
        generate_tasks(cfg, progress=False)
    cfg.random_probes = 0           # no random-policy check at all: the drafts are kept
    assert len(generate_tasks(cfg, progress=False).tasks) == 2


def _coin(rng: random.Random, p: Profile) -> StageDraft:
    """Solved by any mail sent to the user: a random agent solves such tasks about a third of
    the time (it must pick send_mail and the user's own address), so two probes per task keep
    nearly half of the drafts (20 of 44 for 20 train tasks)."""
    d = file_invoice(rng, p)
    return StageDraft(d.instruction, d.state,
                      [ToolCall("send_mail", {"to": p.user_email, "subject": "x", "body": "y"}),
                       ToolCall("finish", {})],
                      [{"type": "mail_sent", "to": [p.user_email]}], d.preferences)


def test_the_family_check_has_the_power_it_states():
    plan = family_check_plan()            # TasksConfig's defaults
    assert (plan.episodes, plan.max_solved) == (386, 3)
    assert plan.fail_probability(0.02) >= 0.95 and plan.fail_probability(0.05) > 0.999
    assert plan.fail_probability(0.002) <= 0.01 and plan.fail_probability(0.0) == 0.0
    # The cheapest: one episode fewer, or one success fewer allowed, misses a bound.
    assert binomial_sf(3, 385, 0.02) < 0.95 and binomial_sf(2, 386, 0.002) > 0.01
    assert binomial_sf(0, 149, 0.02) == pytest.approx(1 - 0.98 ** 149)   # worked by hand: 0.9507
    # The decision rule itself, simulated (seeded): families at 2% fail about 95% of the time.
    rng = random.Random(0)
    fails = sum(sum(rng.random() < 0.02 for _ in range(plan.episodes)) > plan.max_solved
                for _ in range(2000))
    assert 0.94 <= fails / 2000 <= 0.96


def test_a_random_solvable_family_fails_the_family_check(monkeypatch):
    monkeypatch.setitem(fam_mod.FAMILIES, "coin", stage_family("coin", "a coin flip", _coin, ("mail",)))
    cfg = TasksConfig(families=["coin", "save_note"], n_train_per_family=4, n_test_per_family=1,
                      random_probes=2, max_attempts_factor=8)
    with pytest.raises(ValidationFailed) as err:
        generate_tasks(cfg, progress=False)
    report = err.value.result.report
    assert list(report["failed_families"]) == ["coin"], report["failed_families"]
    assert "coin: family check: a random policy solved" in str(err.value)
    coin = report["families"]["coin"]
    # Two probes per task let its drafts through; the family check does not.
    assert coin["kept"] == 5 and coin["rejection_reasons"]["a random policy solved it (trivially solvable)"] > 0
    check = coin["family_check"]
    assert not check["passed"] and check["episodes"] == 386 and check["solved"] > 3
    assert report["families"]["save_note"]["family_check"] == {
        "passed": True, "episodes": 386, "solved": 0, "solved_tasks": []}
    assert report["family_check"]["episodes"] == 386 and any("family check" in v for v in report["validation"])


def test_the_family_check_is_off_with_the_random_probes():
    cfg = TasksConfig(families=["save_note"], n_train_per_family=1, n_test_per_family=0, random_probes=0)
    assert "family_check" not in generate_tasks(cfg, progress=False).report["families"]["save_note"]


def test_the_family_check_does_not_change_the_kept_tasks():
    base = dict(families=["file_invoice", "email_contact"], n_train_per_family=3, n_test_per_family=1,
                random_probes=1)
    checked = generate_tasks(TasksConfig(**base), progress=False)
    unchecked = generate_tasks(TasksConfig(**base, family_detect_rate=0), progress=False)
    assert [t.to_row() for t in checked.tasks] == [t.to_row() for t in unchecked.tasks]
    assert checked.rejected == unchecked.rejected
    assert all(f["family_check"]["passed"] for f in checked.report["families"].values())
    assert "family_check" not in unchecked.report["families"]["file_invoice"]


@pytest.mark.parametrize("builder, why", [(_coin, "family check"), (_broken, "only 0 of 2 drafts validated")])
def test_the_stage_writes_validation_json_with_the_reasons_when_a_family_fails(
        monkeypatch, tmp_path, builder, why):
    import json

    import yaml

    from stages import tasks as stage

    monkeypatch.setitem(fam_mod.FAMILIES, "bad", stage_family("bad", "a bad family", builder, ("mail",)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tasks": {
        "families": ["bad", "save_note"], "n_train_per_family": 2, "n_test_per_family": 0,
        "random_probes": 1, "max_attempts_factor": 3, "executor": {"kind": "inline", "workers": 1}}}))
    monkeypatch.chdir(tmp_path)
    assert stage.main() == 1
    report = json.loads((tmp_path / stage.VALIDATION).read_text())
    assert not (tmp_path / stage.OUT).exists()
    assert list(report["failed_families"]) == ["bad"] and why in report["failed_families"]["bad"][0]
    assert report["families"]["bad"]["failed"] == report["failed_families"]["bad"]
    assert "save_note" not in report["failed_families"]
    if builder is _broken:
        assert all(r["reasons"][0].startswith("reference solution fails")
                   for r in report["rejected"] if r["family"] == "bad")
        assert "reference solution fails" in report["failed_families"]["bad"][0]


def test_the_stage_on_another_track_names_that_tracks_setting(monkeypatch, tmp_path, capsys):
    import yaml

    from stages import tasks as stage

    monkeypatch.setitem(fam_mod.FAMILIES, "bad", stage_family("bad", "a bad family", _broken, ("mail",)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"mine_tasks": {
        "families": ["bad"], "n_train_per_family": 1, "n_test_per_family": 0, "random_probes": 0,
        "max_attempts_factor": 1, "executor": {"kind": "inline", "workers": 1}}}))
    monkeypatch.chdir(tmp_path)
    assert stage.main(["--track", "mine"]) == 1
    assert "raise mine_tasks.max_attempts_factor or fix the family" in capsys.readouterr().err


def test_families_on_a_process_pool_give_the_same_tasks_as_inline():
    """The stage runs families in parallel (params.yaml: tasks.executor); the tasks, their
    order and the rejections must not depend on it."""
    from distillery.config import ExecutorConfig

    base = dict(families=["file_invoice", "save_note", "forward_mail"], n_train_per_family=3,
                n_test_per_family=1, random_probes=1)
    inline = generate_tasks(TasksConfig(**base), progress=False)
    pooled = generate_tasks(TasksConfig(**base, executor=ExecutorConfig(kind="process", workers=2)),
                            progress=False)
    assert [t.to_row() for t in pooled.tasks] == [t.to_row() for t in inline.tasks]
    assert pooled.rejected == inline.rejected and pooled.report == inline.report
    assert [t.family for t in pooled.tasks][:3] == ["file_invoice"] * 3  # family order, not finish order


def test_the_same_task_from_two_families_stops_the_stage(monkeypatch):
    """Duplicates are checked within a family as it is drafted; two families drafting the
    same task is a template bug and is reported, naming both tasks."""
    monkeypatch.setitem(fam_mod.FAMILIES, "copy_a", stage_family("copy_a", "one", _constant, ("files",)))
    monkeypatch.setitem(fam_mod.FAMILIES, "copy_b", stage_family("copy_b", "two", _constant, ("files",)))
    cfg = TasksConfig(families=["copy_a", "copy_b"], n_train_per_family=1, n_test_per_family=0,
                      random_probes=0)
    with pytest.raises(RuntimeError, match="copy_a-train-default-0000 and copy_b-train-default-0000"):
        generate_tasks(cfg, progress=False)
