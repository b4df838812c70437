"""SelSkill's round (train.selskill.one_round) and its checkpointed loop (run_selskill), end to
end on a tiny real Llama and real STAGE tasks (the `save_note` family, step limit 3).

The policy is trained here, for a few seconds, into a coin flip at the first step of every
task: ``write_file(<the note>)`` (then ``finish()``: success) or ``finish()`` at once
(failure). After an invocation of the offered skill it writes the note. So groups of base
episodes mix successes and failures (episode pairs) and invoke branches decide against
failed skip branches (local pairs): with the fixed seeds every group mixes, and the
fixture checks the coin is far from sure. An untrained model of the same shape fails
everything (no pair: the update is skipped). Every count the round reports is checked
against the trajectories it sampled, read back by wrapping the module's own `rollout`
(the real function runs; the wrapper only keeps its result)."""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import asdict

import polars as pl
import pytest
import torch

import distillery.train.selskill as selskill
from distillery.agents.prompts import PromptConfig, action_ids, render_compact_ids
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.stage import StageEnv
from distillery.lm.model import ModelConfig, build_model, load_model_dir, save_model_dir
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.rollout import Trajectories
from distillery.tasks.generate import generate_tasks
from distillery.train.data import Example, collate
from distillery.train.examples import corpus_texts
from distillery.train.rl import score_examples, step_examples
from distillery.train.selskill import (
    OFFER_TEMPLATE,
    PreferencePair,
    SelSkillConfig,
    SkillToolEnv,
    invocation,
    one_round,
    run_selskill,
    skill_text,
)
from distillery.types import Context, Experience, Turn

SKILL = Experience("sk-note", "skill", "Write the note with write_file, then finish.", family="save_note",
                   utility=0.5, status="active")
LIBRARY = {"save_note": SKILL}
PROMPT = PromptConfig(max_prompt_tokens=192, max_observation_tokens=48, max_history_turns=3)
K = 4


def _cfg(**kw):
    base = dict(tasks_per_family=3, k=K, temperature=1.0, max_new_tokens=40, lr=1e-3, epochs=2, pairs_per_batch=8,
                branches_per_episode=1, episode_pairs_per_task=2, seed=0)
    return SelSkillConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------
# Fixtures: tasks, tokenizer, the coin-flip policy
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def sandboxes(tmp_path, monkeypatch):
    """Every StageEnv the round builds lives under this folder; it must be left empty."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setenv("DISTILLERY_SANDBOX", str(root))
    yield root
    assert list(root.iterdir()) == [], "an episode's sandbox was left behind"


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(TasksConfig(families=["save_note"], n_train_per_family=3, n_test_per_family=1,
                                      random_probes=0, max_steps=3), progress=False).tasks


@pytest.fixture(scope="module")
def learn(tasks):
    out = [t for t in tasks if t.split == "train"]
    assert len(out) == 3
    return out


@pytest.fixture(scope="module")
def tok(tasks):
    texts = corpus_texts(tasks) + [OFFER_TEMPLATE.format(name=SKILL.exp_id), f"Skill {SKILL.exp_id}: {skill_text(SKILL)}",
                                   invocation(SKILL), "finish()"]
    texts += [format_call(c) for t in tasks for c in t.reference_solution]
    return train_tokenizer(texts, TokenizerConfig(vocab_size=600))


SHAPE = ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=64,
                    max_position_embeddings=256, init_seed=0)


def _coin_flip_examples(learn, tok, root):
    """Each task's steps as the skill-enabled environment shows them: at t=0 the note or
    finish() (one example each: a coin flip), finish() after the note; after an invocation
    at t=0, the note and then finish(). Also returns each task's t=0 prompt."""
    env = SkillToolEnv(StageEnv(root=str(root)), LIBRARY)
    out, first = [], []
    try:
        for task in learn:
            write = format_call(task.reference_solution[0])
            assert write.startswith("write_file(") and format_call(task.reference_solution[1]) == "finish()"
            obs0 = env.reset(task)
            obs1 = env.step(write).observation
            env.reset(task)
            skill_obs = env.step(invocation(SKILL)).observation
            obs2 = env.step(write).observation
            inv = Turn(obs0, invocation(SKILL))
            first.append(render_compact_ids(Context("e", task, 0, obs0, []), tok, PROMPT))
            for ctx, action in [
                (Context("e", task, 0, obs0, []), write),
                (Context("e", task, 0, obs0, []), "finish()"),
                (Context("e", task, 1, obs1, [Turn(obs0, write)]), "finish()"),
                (Context("e", task, 1, skill_obs, [inv]), write),
                (Context("e", task, 2, obs2, [inv, Turn(skill_obs, write)]), "finish()"),
            ]:
                p, a = render_compact_ids(ctx, tok, PROMPT), action_ids(tok, action)
                out.append(Example(p + a, [-100] * len(p) + a))
    finally:
        env.close()
    return out, first


@pytest.fixture(scope="module")
def coin_flip(learn, tok, tmp_path_factory):
    """The tiny Llama trained (plain AdamW, full batch, ~4 s) on the coin-flip examples."""
    model = build_model(SHAPE, tok)
    examples, first = _coin_flip_examples(learn, tok, tmp_path_factory.mktemp("sb"))
    batch = collate(examples, tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.0)
    model.train()
    for _ in range(100):
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    # Preconditions of the round tests, checked here so that a miss says what went wrong.
    assert loss.item() < 0.06, f"the coin-flip policy did not fit its examples (loss {loss.item():.3f})"
    write, finish = action_ids(tok, "write_file(")[0], action_ids(tok, "finish()")[0]
    with torch.no_grad():
        for p in first:
            probs = torch.softmax(model(torch.tensor([p])).logits[0, -1].float(), -1)
            assert 0.15 < probs[write] < 0.85 and probs[write] + probs[finish] > 0.95, (probs[write], probs[finish])
    return model


@pytest.fixture
def spy(monkeypatch):
    """The trajectories of every `rollout` call, by label (the real function runs)."""
    seen: dict[str, Trajectories] = {}
    real = selskill.rollout

    def recording(*args, **kwargs):
        traj = real(*args, **kwargs)
        seen[kwargs["label"]] = traj
        return traj

    monkeypatch.setattr(selskill, "rollout", recording)
    return seen


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model):
    return [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]


# ---------------------------------------------------------------------------------------
# An independent reading of the round's trajectories
# ---------------------------------------------------------------------------------------


def _expected(base: Trajectories, branches: Trajectories, cfg: SelSkillConfig):
    """The round's counts recomputed from its trajectories with the paper's rules."""
    ok = dict(pl.concat([base.episodes, branches.episodes]).select("episode_id", "success").iter_rows())
    ep_pairs = []
    for _, g in base.episodes.sort("episode_id").group_by("group", maintain_order=True):
        wins = [e for e, s in g.select("episode_id", "success").iter_rows() if s]
        losses = [e for e, s in g.select("episode_id", "success").iter_rows() if not s]
        ep_pairs += [PreferencePair("episode", w, lo) for w, lo in zip(wins, losses, strict=False)][
            : cfg.episode_pairs_per_task]

    def env_steps(steps, ep, t):
        return sum(1 for e, tt, tool in steps.select("episode_id", "t", "tool").iter_rows()
                   if e == ep and tt >= t and tool != "use_skill")

    local, counts = [], {"invoke_preferred": 0, "discarded_both_failed": 0, "discarded_tie": 0}
    for bid in sorted(branches.episodes["episode_id"].to_list()):
        ep, t = bid.rsplit(":b", 1)
        t = int(t)
        a, b = ok[bid], ok[ep]
        if a and b:
            sa, sb = env_steps(branches.steps, bid, t), env_steps(base.steps, ep, t)
            if sa == sb:
                counts["discarded_tie"] += 1
                continue
            invoke_wins = sa < sb
        elif not a and not b:
            counts["discarded_both_failed"] += 1
            continue
        else:
            invoke_wins = a
        counts["invoke_preferred"] += int(invoke_wins)
        w, lo = (bid, ep) if invoke_wins else (ep, bid)
        local.append(PreferencePair("local", w, lo, start=t, n_steps=cfg.local_turns))
    return ep_pairs, local, counts


def _margins(ref_model, model, tok, by_id, traj, pairs):
    """Each pair's implicit-reward margin (pi - ref on chosen) - (pi - ref on rejected), each
    side summed over its steps in [start, start + n_steps)."""
    zero = pl.DataFrame(schema={"episode_id": pl.String, "t": pl.Int64, "advantage": pl.Float64})
    examples, keys = step_examples(by_id, traj, zero, tok, PROMPT, {})
    pad = tok.pad_token_id
    ref = [sum(x) for x in score_examples(ref_model, examples, temperature=1.0, pad_id=pad)]
    pol = [sum(x) for x in score_examples(model, examples, temperature=1.0, pad_id=pad)]
    gain = {k: pol[i] - ref[i] for i, k in enumerate(keys)}

    def side(ep, p):
        ts = [t for e, t in keys if e == ep and t >= p.start and (p.n_steps is None or t < p.start + p.n_steps)]
        assert ts, (ep, p)
        return sum(gain[(ep, t)] for t in ts)

    return [side(p.chosen, p) - side(p.rejected, p) for p in pairs]


# ---------------------------------------------------------------------------------------
# One round
# ---------------------------------------------------------------------------------------


def test_a_round_with_pairs_reports_what_it_sampled_and_trains_towards_the_chosen_side(
        coin_flip, tok, tasks, learn, spy):
    by_id = {t.task_id: t for t in tasks}
    model = copy.deepcopy(coin_flip)
    start = copy.deepcopy(coin_flip)
    before = _params(model)
    # Two decision points per episode (a branch from after the note, too); one episode pair
    # per group at most (the cap binds: a group of four can hold two).
    cfg = _cfg(branches_per_episode=2, episode_pairs_per_task=1)
    res = one_round(model, tok, learn, by_id, LIBRARY, cfg, PROMPT, 0)

    assert list(spy) == ["base-r0", "branch-r0"]
    base, branches = spy["base-r0"], spy["branch-r0"]
    # Base rollouts: K episodes of each learning task, one group per task.
    assert base.episodes.height == len(learn) * K
    assert sorted(base.episodes["group"].unique().to_list()) == sorted(t.task_id for t in learn)
    assert res.base_success == pytest.approx(float(base.episodes["success"].mean()))
    assert 0 < res.base_success < 1, "the coin-flip policy should both succeed and fail"

    # Invoke branches at up to two distinct steps of each base episode (none of which invokes
    # by itself), each from the identical prefix: the base episode's first t actions, then
    # the forced invocation at t.
    assert not any(selskill.is_invocation(a) for a in base.steps["action_text"].to_list())
    n_base = dict(base.episodes.select("episode_id", "n_steps").iter_rows())
    points: dict[str, list[int]] = {ep: [] for ep in n_base}
    for bid in branches.episodes["episode_id"].to_list():
        ep, t = bid.rsplit(":b", 1)
        points[ep].append(int(t))
    assert all(sorted(set(ts)) == sorted(ts) and len(ts) == min(n_base[ep], 2) and max(ts) < n_base[ep]
               for ep, ts in points.items()), points
    assert any(t > 0 for ts in points.values() for t in ts), "no branch replays a prefix"
    for ep, ts in points.items():
        want = base.steps.filter(pl.col("episode_id") == ep).sort("t")
        for t in ts:
            got = branches.steps.filter(pl.col("episode_id") == f"{ep}:b{t}").sort("t")
            assert got["action_text"].to_list()[:t] == want["action_text"].to_list()[:t]
            assert got["state_hash"].to_list()[:t] == want["state_hash"].to_list()[:t]
            assert got["observation"].to_list()[: t + 1] == want["observation"].to_list()[: t + 1]
            assert got["action_text"][t] == invocation(SKILL) and got["tool"][t] == "use_skill" and got["valid"][t]
    assert res.branch_success == pytest.approx(float(branches.episodes["success"].mean()))

    # The labels, recounted: every branch is a local pair or one of the two discards.
    ep_pairs, local, counts = _expected(base, branches, cfg)
    assert res.episode_pairs == len(ep_pairs) > 0
    assert res.local_pairs == len(local) > 0
    assert {k: getattr(res, k) for k in counts} == counts
    assert res.local_pairs + res.discarded_both_failed + res.discarded_tie == branches.episodes.height
    assert 0 < res.invoke_preferred <= res.local_pairs

    # The update ran on all of them: ceil(pairs / pairs_per_batch) steps per epoch.
    n_pairs = len(ep_pairs) + len(local)
    assert res.trained and res.messages == [] and res.test == {}
    assert res.update["optimizer_steps"] == cfg.epochs * math.ceil(n_pairs / cfg.pairs_per_batch)
    assert all(math.isfinite(v) for v in res.update.values())
    assert res.update["dpo_loss"] > 0 and 0 <= res.update["reward_accuracy"] <= 1
    changed = _changed(before, model)
    assert changed, "the DPO update left every parameter as it was"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert not model.training

    # ...and in the right direction: against the round's reference (the policy it started
    # from), the chosen sides gained on the rejected ones.
    margins = _margins(start, model, tok, by_id, Trajectories.concat([base, branches]), ep_pairs + local)
    assert sum(margins) / len(margins) > 0, margins


def test_a_round_without_any_pair_skips_the_update_and_leaves_the_policy_alone(tok, tasks, learn, spy):
    """An untrained policy fails every task, skip and invoke branches alike: no group mixes
    success and failure, every branch pair is a double failure."""
    by_id = {t.task_id: t for t in tasks}
    model = build_model(SHAPE, tok).eval()
    before = _params(model)
    res = one_round(model, tok, learn, by_id, LIBRARY, _cfg(), PROMPT, 0)

    assert list(spy) == ["base-r0", "branch-r0"]
    n_branches = spy["branch-r0"].episodes.height
    assert n_branches == spy["base-r0"].episodes.height == len(learn) * K
    assert res.base_success == 0.0 and res.branch_success == 0.0
    assert (res.episode_pairs, res.local_pairs, res.invoke_preferred, res.discarded_tie) == (0, 0, 0, 0)
    assert res.discarded_both_failed == n_branches
    assert not res.trained and res.update == {}
    assert len(res.messages) == 1 and "update skipped" in res.messages[0]
    assert _changed(before, model) == []


def test_a_round_without_decision_points_samples_no_branch(tok, tasks, learn, spy):
    """branches_per_episode=0: base rollouts only; the branch success is undefined (nan)."""
    by_id = {t.task_id: t for t in tasks}
    model = build_model(SHAPE, tok).eval()
    res = one_round(model, tok, learn, by_id, LIBRARY, _cfg(branches_per_episode=0), PROMPT, 0)
    assert list(spy) == ["base-r0"]
    assert math.isnan(res.branch_success)
    assert (res.local_pairs, res.discarded_both_failed, res.discarded_tie) == (0, 0, 0)
    assert not res.trained


def test_a_round_is_a_function_of_seed_and_round_and_its_reference_is_the_starting_policy(
        coin_flip, tok, tasks, learn):
    """Two rounds from the same policy agree exactly. With every pair in one optimiser step,
    that step is taken at the reference itself: margin 0, loss ln 2 for each kind of pair."""
    by_id = {t.task_id: t for t in tasks}
    cfg = _cfg(epochs=1, pairs_per_batch=64)
    a, b = copy.deepcopy(coin_flip), copy.deepcopy(coin_flip)
    ra = one_round(a, tok, learn, by_id, LIBRARY, cfg, PROMPT, 0)
    rb = one_round(b, tok, learn, by_id, LIBRARY, cfg, PROMPT, 0)
    assert asdict(ra) == asdict(rb)
    assert _changed(_params(a), b) == []
    assert ra.trained and ra.episode_pairs > 0 and ra.local_pairs > 0
    assert ra.update["optimizer_steps"] == 1
    assert ra.update["dpo_loss"] == pytest.approx(2 * math.log(2), abs=1e-5)
    # (reward_accuracy counts margins > 0: at the reference that is float noise, not checked)
    assert ra.update["margin"] == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------------------------------
# The checkpointed loop: a rerun skips finished rounds
# ---------------------------------------------------------------------------------------


def test_a_resumed_run_skips_finished_rounds_and_equals_an_uninterrupted_one(coin_flip, tok, tasks, tmp_path):
    start = save_model_dir(tmp_path / "start", coin_flip, tok, {"prompt": asdict(PROMPT)})
    cfg = _cfg(model_dir=str(start), learn_split="train", test_split="test", init_steps=0, rounds=2)

    def run(run_dir):
        logged: list[int] = []
        model, _, before, results = run_selskill(cfg, tasks, [SKILL], run_dir,
                                                 log=lambda _row, step: logged.append(step))
        return model, before, results, logged

    # Two rounds without an interruption.
    full = tmp_path / "uninterrupted"
    model_u, before_u, rounds_u, logged = run(full)
    assert logged == [-1, 0, 1] and [r.round for r in rounds_u] == [0, 1]
    assert set(before_u) >= {"never", "always", "free", "warmup_never", "init"} and before_u["init"] == {"steps": 0}
    assert all(r.trained for r in rounds_u) and all(r.test["episodes"] == 1 for r in rounds_u)
    for r in rounds_u:
        assert json.loads((full / f"round-{r.round}" / "result.json").read_text()) == json.loads(json.dumps(asdict(r)))
    round0 = load_model_dir(full / "round-0" / "model").model
    assert _changed(_params(coin_flip), round0), "round 0's checkpoint is the starting policy"
    assert _changed(_params(round0), model_u), "round 1 did not train on from round 0"

    # The same run killed after round 0: its directory as round 0 left it. What is on disk
    # is marked: the rerun must read it back, not recompute it.
    cut = tmp_path / "resumed"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "round-1")
    done = cut / "round-0"
    rec = json.loads((done / "result.json").read_text())
    (done / "result.json").write_text(json.dumps({**rec, "messages": ["read back"]}))
    (cut / "before.json").write_text(json.dumps({**json.loads((cut / "before.json").read_text()), "marker": 1}))
    stamp = (done / "model" / "model.safetensors").stat().st_mtime_ns

    model, before, rounds, logged = run(cut)
    assert logged == [-1, 1]                                  # round 0 was not run again
    assert before == {**before_u, "marker": 1}
    assert [r.round for r in rounds] == [0, 1] and rounds[0].messages == ["read back"]
    assert asdict(rounds[0]) == {**asdict(rounds_u[0]), "messages": ["read back"]}
    assert (done / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    # Round 1 started from round 0's checkpoint: the same round, the same final policy.
    assert asdict(rounds[1]) == asdict(rounds_u[1])
    assert _changed(_params(model_u), model) == []
