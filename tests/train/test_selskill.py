"""SelSkill's pieces (train.selskill) against hand-checked values: the pair rule, episode
pairs, decision points, the use_skill tool around the real STAGE sandbox, forced-prefix
replay through run_batch, the skill-enabled demonstrations, the scored steps of a pair and
one DPO update on a tiny real model. The round loop itself runs in the pipeline tests."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import torch

from distillery.agents.oracle import OraclePolicy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.stage import StageEnv
from distillery.lm.model import ModelConfig, build_model
from distillery.rollout import EpisodeJob, RolloutConfig, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.train.data import Example
from distillery.train.rl import score_examples
from distillery.train.selskill import (
    OFFER_TEMPLATE,
    ForcedPrefixPolicy,
    PreferencePair,
    SelSkillConfig,
    SkillToolEnv,
    decision_points,
    dpo_update,
    env_steps_after,
    episode_pairs,
    first_token_entropy,
    init_variant,
    invocation,
    invocation_stats,
    is_invocation,
    pair_sides,
    prefer,
    skill_enabled_steps,
    skill_library,
)
from distillery.types import Experience

# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(n_train_per_family=1, n_test_per_family=0, random_probes=1,
                                      family_detect_rate=0),   # the family check is tested in tests/tasks
                          progress=False).tasks


def _task(tasks, family):
    return next(t for t in tasks if t.family == family)


# A skill without a condition: its prompt text is exactly `text`.
INVOICE_SKILL = Experience("sk-invoice", "skill", "Find the invoice, then move it to finance.", family="file_invoice",
                           utility=0.4, status="active")
NOTE_SKILL = Experience("sk-note", "skill", "write the note file", condition="the user asks for a note",
                        family="save_note", utility=0.1, status="active")
LIBRARY = {"file_invoice": INVOICE_SKILL, "save_note": NOTE_SKILL}


@pytest.fixture
def sandbox(tmp_path):
    return str(tmp_path / "sandboxes")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rollout(policy, tasks_and_ids, sandbox, library=None):
    """Run (task, episode_id) jobs inline, with the skill tool when `library` is given."""
    jobs = [EpisodeJob(task=t, sample=0, seed=0, episode_id=e, group=t.task_id) for t, e in tasks_and_ids]
    wrap = (lambda env: SkillToolEnv(env, library)) if library is not None else None
    return run_batch(policy, jobs, RolloutConfig(env_kwargs={"root": sandbox}), wrap_env=wrap)


def _by_t(steps, episode_id):
    return steps.filter(pl.col("episode_id") == episode_id).sort("t").to_dicts()


# ---------------------------------------------------------------------------------------
# The labelling rule and episode pairs
# ---------------------------------------------------------------------------------------


def test_prefer_success_first_then_fewer_env_steps_and_discards_ties_and_double_failures():
    assert prefer(True, 9, False, 1) == 1            # success beats failure, whatever the length
    assert prefer(False, 1, True, 9) == -1
    assert prefer(True, 2, True, 5) == 1             # both succeed: fewer steps after the branch win
    assert prefer(True, 5, True, 2) == -1
    assert prefer(True, 3, True, 3) == 0             # tie: discarded
    assert prefer(False, 1, False, 7) == 0           # both fail: discarded, even with different lengths
    assert prefer(False, 4, False, 4) == 0


def _episodes(rows):
    return pl.DataFrame(rows, schema={"episode_id": pl.String, "group": pl.String, "success": pl.Boolean},
                        orient="row")


def test_episode_pairs_pair_successes_with_failures_in_episode_order_up_to_the_cap():
    eps = _episodes([("g1-e4", "g1", False), ("g1-e1", "g1", True), ("g1-e2", "g1", False),
                     ("g1-e3", "g1", True), ("g1-e0", "g1", False),
                     ("g2-e0", "g2", True), ("g2-e1", "g2", True),        # all succeed: no pair
                     ("g3-e0", "g3", False), ("g3-e1", "g3", False)])     # all fail: no pair
    # sorted: wins e1, e3; losses e0, e2, e4
    assert episode_pairs(eps, 2) == [PreferencePair("episode", "g1-e1", "g1-e0"),
                                     PreferencePair("episode", "g1-e3", "g1-e2")]
    assert episode_pairs(eps, 5) == episode_pairs(eps, 2)                 # only two successes to pair
    assert episode_pairs(eps, 1) == [PreferencePair("episode", "g1-e1", "g1-e0")]
    assert episode_pairs(eps.filter(pl.col("group") != "g1"), 2) == []


# ---------------------------------------------------------------------------------------
# Decision points, environment steps, invocation statistics
# ---------------------------------------------------------------------------------------


def _steps(rows):
    """(episode_id, t, action_text, tool, valid) rows."""
    return pl.DataFrame(rows, schema={"episode_id": pl.String, "t": pl.Int64, "action_text": pl.String,
                                      "tool": pl.String, "valid": pl.Boolean}, orient="row")


def test_decision_points_take_the_most_uncertain_steps_before_the_first_invocation():
    st = _steps([
        # a: first invocation at t=2; t=3 has the highest entropy but comes after it
        ("a", 0, 'list_dir(path=".")', "list_dir", True), ("a", 1, 'read_file(path="x")', "read_file", True),
        ("a", 2, 'use_skill(name="sk")', "use_skill", True), ("a", 3, "finish()", "finish", True),
        # b: no invocation; t=1 and t=3 tie on the highest entropy
        ("b", 0, 'list_dir(path=".")', "list_dir", True), ("b", 1, 'list_dir(path="a")', "list_dir", True),
        ("b", 2, 'list_dir(path="b")', "list_dir", True), ("b", 3, "finish()", "finish", True),
        # c: not offered a skill
        ("c", 0, 'list_dir(path=".")', "list_dir", True),
        # d: invokes (a malformed attempt counts) at t=0: nothing before it
        ("d", 0, "use_skill(nam='x')", "use_skill", False), ("d", 1, "finish()", "finish", True),
    ])
    ent = {("a", 0): 0.2, ("a", 1): 0.9, ("a", 2): 5.0, ("a", 3): 9.0,
           ("b", 0): 0.5, ("b", 1): 2.0, ("b", 2): 1.0, ("b", 3): 2.0,
           ("c", 0): 7.0, ("d", 0): 3.0, ("d", 1): 4.0}
    offered = {"a": True, "b": True, "c": False, "d": True}
    assert decision_points(st, ent, 1, offered) == [("a", 1), ("b", 1)]
    assert decision_points(st, ent, 2, offered) == [("a", 1), ("a", 0), ("b", 1), ("b", 3)]
    assert decision_points(st, ent, 0, offered) == []
    # A step without an entropy is never a decision point.
    assert decision_points(st, {("b", 0): 0.5}, 1, offered) == [("b", 0)]


def test_env_steps_after_leaves_use_skill_calls_out():
    st = _steps([("x", 0, 'list_dir(path=".")', "list_dir", True),
                 ("x", 1, 'use_skill(name="sk")', "use_skill", True),
                 ("x", 2, 'move(src="a", dst="b")', "move", True),
                 ("x", 3, "finish()", "finish", True),
                 ("y", 0, 'list_dir(path=".")', "list_dir", True)])
    assert [env_steps_after(st, "x", t) for t in range(5)] == [3, 2, 2, 1, 0]
    assert env_steps_after(st, "y", 0) == 1


def test_invocation_stats_count_precision_over_the_policys_own_calls():
    st = _steps([
        ("x", 0, 'use_skill(name="sk")', "use_skill", True),       # forced by the harness: not counted
        ("x", 1, 'list_dir(path=".")', "list_dir", True),
        ("x", 2, 'use_skill(name="nope")', "use_skill", False),    # the policy's, invalid
        ("x", 3, "finish()", "finish", True),
        ("y", 0, 'use_skill(name="sk")', "use_skill", True),       # the policy's, valid
        ("y", 1, "finish()", "finish", True),
    ])
    eps = pl.DataFrame({"episode_id": ["x", "y"], "success": [True, False]})
    s = invocation_stats(st, eps, {"x": 1})
    assert s["attempted"] == 2 and s["valid"] == 1 and s["precision"] == pytest.approx(0.5)
    assert s["calls_per_episode"] == pytest.approx(3 / 2)            # every call, forced included
    assert s["env_steps_per_episode"] == pytest.approx(3 / 2)        # list_dir, finish, finish
    assert s["success"] == pytest.approx(0.5) and s["episodes"] == 2
    # Unforced, the harness's call counts too: 2 valid of 3.
    assert invocation_stats(st, eps)["precision"] == pytest.approx(2 / 3)
    # Nothing attempted by the policy: precision is undefined, not 0.
    only_forced = st.filter(pl.col("episode_id") == "x").filter(pl.col("t") < 2)
    s = invocation_stats(only_forced, eps.head(1), {"x": 1})
    assert s["attempted"] == 0 and s["precision"] is None and s["calls_per_episode"] == 1.0


# ---------------------------------------------------------------------------------------
# The use_skill tool around the real sandbox
# ---------------------------------------------------------------------------------------


def test_skill_tool_env_answers_use_skill_itself_and_passes_everything_else_through(tasks, sandbox):
    task = _task(tasks, "file_invoice")
    bare, wrapped = StageEnv(root=sandbox), SkillToolEnv(StageEnv(root=sandbox), LIBRARY)
    try:
        assert wrapped.name == "stage+skills"
        obs = bare.reset(task)
        assert wrapped.reset(task) == f'{obs}\nSkill available: use_skill(name="sk-invoice")'
        h0 = wrapped.state_hash()
        assert h0 == bare.state_hash()

        ok = wrapped.step('use_skill(name="sk-invoice")')
        assert ok.valid and not ok.done and ok.tool == "use_skill" and ok.error == ""
        assert ok.observation == "Skill sk-invoice: Find the invoice, then move it to finance."
        assert json.loads(ok.args_json) == {"name": "sk-invoice"} and ok.state_hash == h0
        # The JSON form is an invocation too.
        js = wrapped.step('{"tool": "use_skill", "args": {"name": "sk-invoice"}}')
        assert js.valid and js.observation == ok.observation

        unknown = wrapped.step('use_skill(name="sk-nope")')
        assert not unknown.valid and unknown.error == "no skill named 'sk-nope'"
        assert unknown.observation == "Invalid action: no skill named 'sk-nope'" and unknown.state_hash == h0
        missing = wrapped.step("use_skill()")
        assert not missing.valid and "missing argument 'name'" in missing.error and missing.tool == "use_skill"
        assert missing.observation == f"Invalid action: {missing.error}" and missing.state_hash == h0
        broken = wrapped.step('use_skill(name="sk-invoice"')
        assert not broken.valid and "malformed action" in broken.error and broken.state_hash == h0
        assert wrapped.state_hash() == h0

        # Ordinary actions reach the sandbox unchanged: the same answers as the bare env,
        # and the reference solution still solves the task after all the invocations.
        for call in task.reference_solution:
            a = format_call(call)
            assert wrapped.step(a) == bare.step(a)
        assert wrapped.verify().success and bare.verify().success

        # A family without a skill in the library gets no offer line.
        other = _task(tasks, "email_contact")
        assert wrapped.reset(other) == bare.reset(other)
        # A skill with a condition is answered with its prompt line.
        note = _task(tasks, "save_note")
        assert wrapped.reset(note).endswith('\nSkill available: use_skill(name="sk-note")')
        assert wrapped.step('use_skill(name="sk-note")').observation == \
            "Skill sk-note: When the user asks for a note: write the note file"
    finally:
        bare.close()
        wrapped.close()


def test_forced_prefix_replays_the_recorded_episode_then_invokes(tasks, sandbox):
    task = _task(tasks, "file_invoice")
    base = _rollout(OraclePolicy(), [(task, "base")], sandbox, LIBRARY)
    rec = _by_t(base.steps, "base")
    actions = [r["action_text"] for r in rec]
    n = len(actions)
    assert n >= 2 and base.episodes["success"].item()
    t = n - 1
    inv = invocation(INVOICE_SKILL)
    # "branch": replay t actions, invoke, then replay the rest; "free": no script (the oracle
    # acts), in the same batch.
    forced = {"branch": actions[:t] + [inv] + actions[t:]}
    traj = _rollout(ForcedPrefixPolicy(OraclePolicy(), forced), [(task, "branch"), (task, "free")], sandbox, LIBRARY)
    br, free = _by_t(traj.steps, "branch"), _by_t(traj.steps, "free")
    assert [r["observation"] for r in br[:t]] == [r["observation"] for r in rec[:t]]
    assert [r["state_hash"] for r in br[:t]] == [r["state_hash"] for r in rec[:t]]
    assert br[t]["action_text"] == inv and br[t]["tool"] == "use_skill" and br[t]["valid"]
    assert br[t]["observation"] == rec[t]["observation"]              # the same prefix h_t
    assert br[t]["state_hash"] == br[t - 1]["state_hash"]             # the invocation changed nothing
    assert br[t + 1]["observation"] == br[t]["feedback"] and br[t]["feedback"].startswith("Skill ")
    assert br[t + 1]["action_text"] == actions[t] and br[t + 1]["state_hash"] == rec[t]["state_hash"]
    assert all(r["logprob"] == 0.0 for r in br)                       # every step was forced
    ok = dict(traj.episodes.select("episode_id", "success").iter_rows())
    n_steps = dict(traj.episodes.select("episode_id", "n_steps").iter_rows())
    assert ok == {"branch": True, "free": True} and n_steps == {"branch": n + 1, "free": n}
    assert [r["action_text"] for r in free] == actions and [r["observation"] for r in free] == \
        [r["observation"] for r in rec]
    # The invocation is not an environment step: both branches took as many after t.
    assert env_steps_after(traj.steps, "branch", t) == env_steps_after(base.steps, "base", t) == n - t


# ---------------------------------------------------------------------------------------
# The skill-enabled demonstrations
# ---------------------------------------------------------------------------------------


def _ids_per_variant(seed, prefix):
    out: dict[str, str] = {}
    i = 0
    while len(out) < 3:
        out.setdefault(init_variant(f"{prefix}{i}", seed), f"{prefix}{i}")
        i += 1
    return out


def test_skill_enabled_steps_rewrite_each_variant_as_the_skill_env_would_show_it(tasks, sandbox):
    seed = 3
    task, no_skill = _task(tasks, "file_invoice"), _task(tasks, "email_contact")
    ids = _ids_per_variant(seed, "inv-")
    assert init_variant(ids["invoke"], seed) == "invoke"                # deterministic
    jobs = [(task, ids[v]) for v in ("plain", "skip", "invoke")] + [(no_skill, "other")]
    # Pick an id for the skill-less family that would be "invoke" if it had a skill.
    jobs[-1] = (no_skill, _ids_per_variant(seed, "oth-")["invoke"])
    demo = _rollout(OraclePolicy(), jobs, sandbox)
    families = {t.task_id: t.family for t, _ in jobs}
    out = skill_enabled_steps(demo.episodes, demo.steps, families, LIBRARY, seed)
    assert out.schema == demo.steps.schema
    n = len(task.reference_solution)
    counts = dict(out.group_by("episode_id").len().iter_rows())
    assert counts == {ids["plain"]: n, ids["skip"]: n, ids["invoke"]: n + 1,
                      jobs[-1][1]: len(no_skill.reference_solution)}

    orig = {e: _by_t(demo.steps, e) for _, e in jobs}
    new = {e: _by_t(out, e) for _, e in jobs}
    assert new[ids["plain"]] == orig[ids["plain"]]
    assert new[jobs[-1][1]] == orig[jobs[-1][1]]
    offer = OFFER_TEMPLATE.format(name="sk-invoice")
    assert offer == 'Skill available: use_skill(name="sk-invoice")'

    skip, o = new[ids["skip"]], orig[ids["skip"]]
    assert skip[0] == {**o[0], "observation": f"{o[0]['observation']}\n{offer}"}
    assert skip[1:] == o[1:]

    inv, o = new[ids["invoke"]], orig[ids["invoke"]]
    answer = "Skill sk-invoice: Find the invoice, then move it to finance."
    assert inv[0]["t"] == 0 and inv[0]["observation"] == f"{o[0]['observation']}\n{offer}"
    assert inv[0]["action_text"] == 'use_skill(name="sk-invoice")' and inv[0]["tool"] == "use_skill"
    assert inv[0]["valid"] and inv[0]["feedback"] == answer and json.loads(inv[0]["args_json"]) == {"name": "sk-invoice"}
    assert inv[1] == {**o[0], "t": 1, "observation": answer}           # the oracle's first action follows
    assert inv[2:] == [{**r, "t": r["t"] + 1} for r in o[1:]]
    assert [r["t"] for r in inv] == list(range(n + 1))


# ---------------------------------------------------------------------------------------
# Scored steps and the DPO update
# ---------------------------------------------------------------------------------------


def test_pair_sides_select_the_local_window_or_the_whole_episode():
    keys = [("a", t) for t in range(6)] + [("b", t) for t in range(4)]
    n_steps = {"a": 6, "b": 4}
    local = PreferencePair("local", "a", "b", start=2, n_steps=3)
    whole = PreferencePair("episode", "b", "a")
    assert pair_sides([local, whole], keys, n_steps) == [([2, 3, 4], [8, 9]),          # b clipped at 4 steps
                                                         ([6, 7, 8, 9], [0, 1, 2, 3, 4, 5])]
    # A step without an example is skipped, not an error.
    assert pair_sides([local], [k for k in keys if k != ("a", 3)], n_steps) == [([2, 3], [7, 8])]


def _tiny():
    torch.manual_seed(0)
    return build_model(ModelConfig(hidden_size=16, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                   vocab_size=20, init_seed=0))


# Four steps: a prompt (masked) and an action (scored).
EXAMPLES = [Example([3, 4, 5, 6, 7], [-100, -100, -100, 6, 7]),
            Example([3, 4, 9, 10, 11], [-100, -100, -100, 10, 11]),
            Example([5, 6, 12, 13], [-100, -100, 12, 13]),
            Example([5, 6, 14, 15, 16], [-100, -100, -100, 15, 16])]


def _sums(model):
    return [sum(lp) for lp in score_examples(model, EXAMPLES, temperature=1.0, pad_id=0)]


def test_first_token_entropy_is_the_entropy_at_each_examples_first_target(one_thread):
    model = _tiny()
    got = first_token_entropy(model, EXAMPLES, pad_id=0, batch_size=3)   # mixed lengths, padded, split
    for ex, h in zip(EXAMPLES, got, strict=True):
        first = next(i for i, lab in enumerate(ex.labels) if lab != -100)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ex.input_ids])).logits[0, first - 1].float(), -1)
        assert h == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-5)
        assert 0 < h <= math.log(20) + 1e-6


def test_dpo_update_starts_at_log2_per_kind_and_raises_the_chosen_side(one_thread):
    pairs = [PreferencePair("episode", "c", "r"), PreferencePair("local", "c2", "r2", start=0, n_steps=1)]
    sides = [([0, 2], [1]), ([3], [1])]
    model = _tiny()
    ref = _sums(model)
    # One step with the policy equal to the reference: margin 0, loss ln 2 per kind (1 : 1).
    stats = dpo_update(model, EXAMPLES, ref, pairs, sides, SelSkillConfig(epochs=1, lr=1e-2), pad_id=0, seed=0)
    assert stats["optimizer_steps"] == 1
    assert stats["dpo_loss"] == pytest.approx(2 * math.log(2), abs=1e-5)
    assert stats["margin"] == pytest.approx(0.0, abs=1e-5) and stats["reward_accuracy"] == 0.0
    assert not model.training

    model = _tiny()
    cfg = SelSkillConfig(epochs=6, lr=1e-2, pairs_per_batch=1)
    stats = dpo_update(model, EXAMPLES, ref, pairs, sides, cfg, pad_id=0, seed=0)
    assert stats["optimizer_steps"] == 12                              # 2 pairs, 1 per step, 6 epochs
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["dpo_loss"] < math.log(2)                             # averaged per kind-step
    after = _sums(model)
    for chosen, rejected in sides:
        margin = (sum(after[i] - ref[i] for i in chosen)) - (sum(after[i] - ref[i] for i in rejected))
        assert margin > 0, (chosen, rejected, margin)


def test_sft_weight_adds_the_chosen_sides_nll(one_thread):
    """With sft_weight, the first step's loss is 2 ln 2 plus the weight times the chosen
    tokens' mean NLL under the (reference-equal) policy."""
    pairs = [PreferencePair("episode", "c", "r"), PreferencePair("local", "c2", "r2", start=0, n_steps=1)]
    sides = [([0, 2], [1]), ([3], [1])]
    model = _tiny()
    ref = _sums(model)
    per_token = score_examples(model, [EXAMPLES[i] for i in (0, 2, 3)], temperature=1.0, pad_id=0)
    chosen = [lp for ex, row in zip([EXAMPLES[i] for i in (0, 2, 3)], per_token, strict=True)
              for lp, lab in zip(row, ex.labels, strict=True) if lab != -100]
    nll = -sum(chosen) / len(chosen)
    stats = dpo_update(model, EXAMPLES, ref, pairs, sides, SelSkillConfig(epochs=1, lr=1e-2, sft_weight=0.5),
                       pad_id=0, seed=0)
    assert stats["dpo_loss"] == pytest.approx(2 * math.log(2) + 0.5 * nll, rel=1e-4)


def test_is_invocation_reads_the_call_name_not_the_arguments():
    assert is_invocation('use_skill(name="x")') and is_invocation("  use_skill()") and is_invocation("use_skill(")
    assert is_invocation('{"tool": "use_skill", "args": {"name": "x"}}')
    assert not is_invocation('use_skills(name="x")')
    assert not is_invocation('write_file(path="a.txt", content="use_skill(name=1)")')
    assert not is_invocation('{"tool": "write_file", "args": {"path": "a.txt", "content": "use_skill"}}')
    assert not is_invocation('{"tool": "use_skill"')                     # not JSON: the env says so


# ---------------------------------------------------------------------------------------
# The library
# ---------------------------------------------------------------------------------------


def test_skill_library_keeps_each_familys_best_skill():
    skills = [
        Experience("f1-a", "skill", "a", family="f1", utility=0.2, status="active"),
        Experience("f1-b", "skill", "b", family="f1", utility=0.5, status="retired"),
        Experience("f1-p", "principle", "p", family="f1", utility=9.0, status="active"),   # not a skill
        Experience("f2-c", "skill", "c", family="f2", utility=0.3, counter=1),
        Experience("f2-d", "skill", "d", family="f2", utility=0.3, counter=5),               # more evidence
        Experience("f3-e", "skill", "e", family="f3", utility=0.9, status="retired"),
    ]
    lib = skill_library(skills)
    assert {f: s.exp_id for f, s in lib.items()} == {"f1": "f1-b", "f2": "f2-d", "f3": "f3-e"}
    lib = skill_library(skills, include_retired=False)
    assert {f: s.exp_id for f, s in lib.items()} == {"f1": "f1-a", "f2": "f2-d"}
    assert skill_library([]) == {}
