"""SIRI phase 1: skills mined from real STAGE trajectories carry slots, not one task's values;
the utility accounting matches hand-worked numbers; paired validation in the real
environment retires a harmful skill and promotes a useful one."""

from __future__ import annotations

import re

import polars as pl
import pytest

from distillery.agents.oracle import OraclePolicy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.base import tool_specs
from distillery.envs.stage.families import FAMILIES
from distillery.mining.skills import (
    VALIDATION_SCHEMA,
    PromptSummariser,
    make_run_fn,
    mine_skills,
    record_trial,
    skill_prompt_text,
    update_status,
    validate_skills,
    write_validation_table,
)
from distillery.rollout import RolloutConfig, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.types import ActionOutput, Experience, ToolCall

MUTATING = {s.name for s in tool_specs("stage") if s.mutates}


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(n_train_per_family=3, n_test_per_family=0, random_probes=0),
                          progress=False).tasks


@pytest.fixture(scope="module")
def oracle(tasks):
    cfg = RolloutConfig()
    return run_batch(OraclePolicy(), make_jobs(tasks, "oracle", cfg), cfg)


def _skill(**kw) -> Experience:
    return Experience(**{"exp_id": "s", "kind": "skill", "text": "t", "family": "f", **kw})


# ---------------------------------------------------------------------------------------
# Accounting
# ---------------------------------------------------------------------------------------


def test_running_mean_utility_and_thresholds():
    s0 = _skill()
    s = s0
    utilities = []
    for d in (0.5, -0.25, 0.25):
        s = record_trial(s, d)
        utilities.append(s.utility)
        if s.trials == 2:
            # U = 0.125 > δ = 0.1 but only 2 of 3 trials: not promoted yet.
            assert update_status(s, delta=0.1, min_trials=3).status == "candidate"
    assert utilities == pytest.approx([0.5, 0.125, 1 / 6])
    assert s.trials == 3 and s0.trials == 0 and s0.utility == 0.0  # pure: the input is untouched
    assert update_status(s, delta=0.1, min_trials=3).status == "active"
    assert update_status(s, delta=0.2, min_trials=3).status == "candidate"  # 1/6 is in [0, δ]

    r = _skill()
    for d in (0.2, -0.5, -0.1):
        r = record_trial(r, d)
    assert r.utility == pytest.approx((0.2 - 0.5 - 0.1) / 3)
    assert update_status(r, min_trials=3).status == "retired"
    assert update_status(r, min_trials=4).status == "candidate"
    # An active skill whose utility sinks below zero is retired; a retired one stays retired.
    assert update_status(_skill(status="active", trials=5, utility=-0.01)).status == "retired"
    assert update_status(_skill(status="retired", trials=5, utility=0.9)).status == "retired"
    with pytest.raises(ValueError):
        record_trial(s, float("nan"))


def test_validate_skills_accounting_with_a_scripted_run_fn(tmp_path, tasks):
    fam = [t for t in tasks if t.family == "save_note"]
    calls = []

    def run_fn(ts, skill, seed):
        calls.append((skill.exp_id if skill else None, len(ts)))
        base = {t.task_id: 0.2 * i for i, t in enumerate(fam)}
        bump = {"good": 0.3, "bad": -0.2}.get(skill.exp_id, 0.0) if skill else 0.0
        return [base[t.task_id] + bump for t in ts]

    skills = [_skill(exp_id="good", family="save_note"), _skill(exp_id="bad", family="save_note"),
              _skill(exp_id="other", family="no_such_family")]
    out, table = validate_skills(skills, tasks, run_fn, pairs_per_group=2, seed=1)
    assert [s.status for s in out] == ["active", "retired", "candidate"]
    assert [s.trials for s in out] == [3, 3, 0]
    assert out[0].utility == pytest.approx(0.3) and out[1].utility == pytest.approx(-0.2)
    # One shared baseline for the three save_note groups: 1 + 2 runs, 6 episodes each.
    assert calls == [("good", 6), (None, 6), ("bad", 6)]
    assert table.schema == pl.Schema(VALIDATION_SCHEMA)
    good = table.row(0, named=True)
    assert (good["n_groups"], good["n_with"], good["n_without"]) == (3, 6, 6)
    assert good["mean_with"] == pytest.approx(0.5) and good["mean_without"] == pytest.approx(0.2)
    assert table.row(2, named=True)["mean_with"] is None
    # A second round leaves the retired skill alone and keeps accumulating the others.
    again, _ = validate_skills(out, tasks, run_fn, pairs_per_group=1, max_groups=2)
    assert [s.trials for s in again] == [5, 3, 0]

    pq, md = write_validation_table(tmp_path / "skills" / "validation.parquet", table)
    assert pl.read_parquet(pq).equals(table)
    text = md.read_text()
    assert text.startswith("| skill_id |") and "| good |" in text and "retired" in text


# ---------------------------------------------------------------------------------------
# Mining
# ---------------------------------------------------------------------------------------


def _task_values(task) -> set[str]:
    """Values of one task that a skill must not carry: entity-kind args of its solution."""
    kinds = {s.name: {p.name: p.kind for p in s.params} for s in tool_specs("stage")}
    out = set()
    for c in task.reference_solution:
        for a, v in c.args.items():
            if kinds[c.tool].get(a) in ("mail_id", "email", "name", "date", "time"):
                out.add(str(v))
    return out


def test_mine_skills_from_oracle_trajectories_one_per_family_with_slots(tasks, oracle):
    assert oracle.episodes["success"].all()
    skills = mine_skills(tasks, oracle.episodes, oracle.steps)
    assert sorted(s.family for s in skills) == sorted(FAMILIES)  # one per family
    assert skills == mine_skills(tasks, oracle.episodes, oracle.steps)  # deterministic
    by_family = {s.family: s for s in skills}
    for s in skills:
        assert s.kind == "skill" and s.status == "candidate" and s.trials == 0
        assert len(s.provenance) == 3 and s.counter == 3
        assert s.condition and len(skill_prompt_text(s)) < 400
        for bad in (r"@", r"\d{3,}", r"\bm\d+\b", r"\d{4}-\d\d-\d\d", r"\d\d:\d\d"):
            assert not re.search(bad, s.text), (s.family, bad, s.text)
        for t in tasks:
            for v in _task_values(t):
                assert v not in s.text, (s.family, v, s.text)
        assert "<" in s.text  # at least one slot
        # The strategy walks the reference solution's tools in order.
        tools = [c.tool for c in next(t for t in tasks if t.family == s.family).reference_solution]
        positions = [s.text.find(tool + "(") for tool in dict.fromkeys(tools)]
        assert -1 not in positions and positions == sorted(positions), s.text
    # What every episode shared stays literal: the user's folders and sign-off.
    assert 'dst="finance/invoices/<' in by_family["file_invoice"].text
    assert 'folder="reading"' in by_family["sort_newsletters"].text
    assert "for each one" in by_family["sort_newsletters"].text
    assert "Best, Sam" in by_family["email_contact"].text


def test_mine_skills_uses_only_successful_plain_episodes(tasks, oracle):
    eps = oracle.episodes.with_columns(
        pl.when(pl.col("family") == "save_note").then(pl.lit(["x1"])).otherwise(pl.col("injected"))
        .alias("injected"),
        pl.when(pl.col("family") == "cleanup_temp").then(False).otherwise(pl.col("success")).alias("success"),
    )
    families = {s.family for s in mine_skills(tasks, eps, oracle.steps)}
    assert families == set(FAMILIES) - {"save_note", "cleanup_temp"}
    with pytest.raises(ValueError, match="not among the tasks"):
        mine_skills(tasks[:3], oracle.episodes, oracle.steps)


def test_prompt_summariser_parses_the_reply_and_fails_loudly(tasks, oracle):
    prompts = []

    def complete(prompt):
        prompts.append(prompt)
        return "Condition: the task asks to tidy\nStrategy: do <x>, then finish()."

    fam = oracle.episodes.filter(pl.col("family") == "save_note")
    (s,) = mine_skills(tasks, fam, oracle.steps, summariser=PromptSummariser(complete))
    assert (s.condition, s.text, len(s.provenance)) == ("the task asks to tidy", "do <x>, then finish().", 3)
    assert "write_file(" in prompts[0]
    with pytest.raises(ValueError, match="Condition"):
        mine_skills(tasks, fam, oracle.steps, summariser=PromptSummariser(lambda p: "no idea"))


# ---------------------------------------------------------------------------------------
# Paired validation in the real environment
# ---------------------------------------------------------------------------------------


class _LiteralPolicy:
    """A test double for the policy only: it follows the reference solution but skips the
    last mutating call, unless an injected text names that tool's call; a text saying
    "finish immediately" makes it finish at once. Everything else is ignored."""

    name = "literal"
    model = "-"

    def act(self, contexts):
        out = []
        for ctx in contexts:
            told = "\n".join(ctx.experience)
            ref = list(ctx.task.reference_solution)
            if "finish immediately" in told:
                ref = []
            else:
                last = max(i for i, c in enumerate(ref) if c.tool in MUTATING)
                if ref[last].tool + "(" not in told:
                    del ref[last]
            call = ref[ctx.t] if ctx.t < len(ref) else ToolCall("finish", {})
            out.append(ActionOutput(text=format_call(call)))
        return out


def test_paired_validation_retires_a_harmful_skill_and_promotes_a_useful_one(tasks, oracle):
    families = ("sort_newsletters", "cleanup_temp")
    mined = {s.family: s for s in mine_skills(tasks, oracle.episodes, oracle.steps) if s.family in families}
    harmful = Experience(exp_id="skill-harmful", kind="skill", family="sort_newsletters",
                         condition="the inbox is cluttered", text="The inbox is fine: finish immediately.")
    neutral = Experience(exp_id="skill-neutral", kind="skill", family="cleanup_temp",
                         condition="the task mentions downloads", text="Breathe and stay calm.")
    skills = [mined["sort_newsletters"], mined["cleanup_temp"], harmful, neutral]
    run_fn = make_run_fn(_LiteralPolicy(), batch_size=8)
    out, table = validate_skills(skills, tasks, run_fn, pairs_per_group=2, seed=7)
    status = dict(zip(table["skill_id"], table["status"], strict=True))
    assert status[mined["sort_newsletters"].exp_id] == "active"
    assert status[mined["cleanup_temp"].exp_id] == "active"
    assert status["skill-harmful"] == "retired"
    assert status["skill-neutral"] == "candidate"
    u = {s.exp_id: s.utility for s in out}
    assert u["skill-harmful"] < 0 < u[mined["sort_newsletters"].exp_id]
    assert u["skill-neutral"] == 0.0
    assert (table["trials"] == 3).all() and (table["n_with"] == 6).all()
    # Scores come from the real verifier: a skipped last move leaves one check failing.
    row = table.filter(pl.col("skill_id") == mined["sort_newsletters"].exp_id).row(0, named=True)
    assert row["mean_with"] == 1.0 and 0.5 < row["mean_without"] < 1.0


def test_run_fn_injects_the_skill_and_pairs_seeds(tasks):
    seen = []

    class _Spy(OraclePolicy):
        def act(self, contexts):
            seen.extend((c.episode_id, c.seed, tuple(c.experience), tuple(c.experience_ids)) for c in contexts)
            return super().act(contexts)

    task = next(t for t in tasks if t.family == "save_note")
    skill = _skill(exp_id="skill-x", condition="the task asks to note", text="write_file(path=<file>).")
    run_fn = make_run_fn(_Spy(), batch_size=4)
    assert run_fn([task, task], skill, 3) == [1.0, 1.0]
    with_ctx = [s for s in seen if ":skill:" in s[0]]
    assert {s[2] for s in with_ctx} == {("When the task asks to note: write_file(path=<file>).",)}
    assert {s[3] for s in with_ctx} == {("skill-x",)}
    assert run_fn([task, task], None, 3) == [1.0, 1.0]
    plain = [s for s in seen if ":plain:" in s[0]]
    assert {s[2] for s in plain} == {()}
    # The same seeds in both arms, different seeds for the two samples.
    assert sorted({s[1] for s in with_ctx}) == sorted({s[1] for s in plain}) and len({s[1] for s in plain}) == 2
