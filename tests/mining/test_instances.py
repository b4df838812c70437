"""Instance-level experience from real STAGE trajectories: one record per distinct
successful solution, decisive calls only, deterministic ids, failures left out."""

from __future__ import annotations

import polars as pl
import pytest

from distillery.agents.base import PolicySpec, make_policy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.mining.instances import instance_text, mine_instances
from distillery.mining.store import read_pool, write_pool
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.types import ActionOutput, Task, ToolCall

LOOKUPS = ("list_dir(", "search_mail(", "find_contact(", "list_events(", "finish(")


class HalfWrongPolicy:
    """Replays the reference solution, except that sample 1 files invoices in the wrong
    folder and signs mail as someone else: those episodes fail."""

    name = "halfwrong"
    model = "-"

    def act(self, contexts):
        out = []
        for ctx in contexts:
            ref = ctx.task.reference_solution
            text = format_call(ref[ctx.t]) if ctx.t < len(ref) else "finish()"
            if ctx.episode_id.endswith(":k1"):
                text = text.replace("paperwork/bills", "finance/invoices").replace("Cheers, Alex", "Best, Sam")
            out.append(ActionOutput(text=text))
        return out


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, Task], Trajectories]:
    tasks = generate_tasks(TasksConfig(n_train_per_family=2, n_test_per_family=0, random_probes=0,
                                       train_profiles=["alex"]), progress=False).tasks
    cfg = RolloutConfig(k=2)
    traj = run_batch(HalfWrongPolicy(), make_jobs(tasks, "halfwrong", cfg), cfg)
    return {t.task_id: t for t in tasks}, traj


def test_one_record_per_successful_solution_with_its_decisive_calls(run):
    tasks, traj = run
    eps = traj.episodes
    wins = eps.filter(pl.col("success"))
    losers = set(eps.filter(~pl.col("success"))["episode_id"])
    assert losers and {t.split(":")[0] for t in losers} >= {"file_invoice-train-alex-0000"}
    items = mine_instances(tasks, eps, traj.steps)
    assert all(e.kind == "instance" and e.status == "active" for e in items)
    cited = [p for e in items for p in e.provenance]
    assert set(cited) == set(wins["episode_id"]) and not set(cited) & losers
    by_task = {}
    for e in items:
        task = tasks[e.provenance[0].split(":")[0]]
        assert e.condition == task.instruction and e.family == task.family
        assert not any(x in e.text for x in LOOKUPS)
        by_task.setdefault(task.task_id, []).append(e)
    # Both samples of a task the failure mode does not touch did the same: one record, counter 2.
    note = by_task["save_note-train-alex-0000"]
    assert len(note) == 1 and note[0].counter == 2 and len(note[0].provenance) == 2
    assert note[0].text.startswith('Solved by: write_file(path="journal/')
    [invoice] = by_task["file_invoice-train-alex-0000"]
    assert invoice.counter == 1 and 'move(src="downloads/invoice-' in invoice.text
    assert 'dst="paperwork/bills/' in invoice.text
    forward = by_task["forward_mail-train-alex-0000"][0].text
    assert forward.index("read_mail(") < forward.index("send_mail(")


def test_ids_are_content_hashes_and_mining_is_deterministic(run, tmp_path):
    tasks, traj = run
    a = mine_instances(tasks, traj.episodes, traj.steps)
    b = mine_instances(tasks, traj.episodes.reverse(), traj.steps.reverse())
    assert a == b
    assert len({e.exp_id for e in a}) == len(a) and all(e.exp_id.startswith("i-") for e in a)
    write_pool(tmp_path / "instances.jsonl", a)
    assert read_pool(tmp_path / "instances.jsonl") == a


def test_cap_per_family_keeps_the_best_supported(run):
    tasks, traj = run
    items = mine_instances(tasks, traj.episodes, traj.steps, max_per_family=1)
    fams = [e.family for e in items]
    assert len(fams) == len(set(fams)) == 10 and fams == sorted(fams)
    [note] = [e for e in items if e.family == "save_note"]
    assert note.counter == 2
    with pytest.raises(ValueError):
        mine_instances(tasks, traj.episodes, traj.steps, max_per_family=0)


def test_nothing_to_mine():
    empty = run_batch(make_policy(PolicySpec(kind="oracle")), [], RolloutConfig())
    assert mine_instances({}, empty.episodes, empty.steps) == []


def test_long_values_are_cut_and_arguments_keep_the_tools_order():
    body = "word " * 40
    text = instance_text([ToolCall("send_mail", {"subject": "Hi", "body": body, "to": "a@b.com"})])
    assert text.startswith('Solved by: send_mail(to="a@b.com", subject="Hi", body="word')
    assert "…" in text and len(text) < 140
