"""The STAGE environment: tools act on a real directory and SQLite file, bad actions are
observations, and nothing outside the episode's sandbox ever changes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from tests.envs.conftest import tree_digest

from distillery.agents.random import RandomPolicy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.stage import StageEnv
from distillery.envs.stage.checks import verify_checks
from distillery.envs.stage.env import MAX_PAYLOAD_CHARS
from distillery.envs.stage.families import FAMILIES
from distillery.rollout import RolloutConfig, make_jobs, run_batch
from distillery.tasks.generate import draft_task, generate_tasks
from distillery.types import ActionOutput


@pytest.fixture(scope="module")
def tasks():
    # The family check (386 random episodes a family) is generation's business, not the environment's.
    return generate_tasks(TasksConfig(n_train_per_family=2, n_test_per_family=1, random_probes=1,
                                      family_detect_rate=0), progress=False).tasks


@pytest.fixture
def env(tmp_path):
    e = StageEnv(root=str(tmp_path / "sandboxes"))
    yield e
    e.close()


def test_every_family_reference_solution_passes_and_doing_nothing_fails(env, tasks):
    assert {t.family for t in tasks} == set(FAMILIES)
    for task in tasks:
        env.reset(task)
        assert not env.verify().success, task.task_id
        for call in task.reference_solution:
            res = env.step(format_call(call))
            assert res.valid, (task.task_id, call, res.observation)
        ver = env.verify()
        assert ver.success and ver.score == 1.0, (task.task_id, [c.detail for c in ver.failed])


def test_state_is_real_files_and_sqlite(env, tasks):
    task = next(t for t in tasks if t.family == "email_contact")
    env.reset(task)
    for call in task.reference_solution[:-1]:
        env.step(format_call(call))
    # Read the database file directly, not through the environment.
    with sqlite3.connect(env.ws.db_path) as db:
        sent = db.execute("SELECT recipients, body FROM mail WHERE folder = 'sent'").fetchall()
    assert len(sent) == 1 and task.reference_solution[1].args["to"] in sent[0][0]
    res = env.step('write_file(path="notes/hello.md", content="hi there")')
    assert res.valid and (env.ws.home / "notes" / "hello.md").read_text() == "hi there"


def test_reset_is_deterministic_and_clears_the_previous_episode(env, tasks):
    task = tasks[0]
    env.reset(task)
    h = env.state_hash()
    env.step('write_file(path="junk.txt", content="x")')
    assert env.state_hash() != h
    env.reset(task)
    assert env.state_hash() == h and not (env.ws.home / "junk.txt").exists()
    other = StageEnv(root=str(env.root.parent))
    try:
        other.reset(task)
        assert other.state_hash() == h
    finally:
        other.close()


def test_failed_checks_are_named_with_a_reason(env, tasks):
    task = next(t for t in tasks if t.family == "schedule_meeting")
    env.reset(task)
    ref = task.reference_solution
    create = ref[2]
    wrong = dict(create.args, duration=create.args["duration"] + 15)
    env.step(format_call(type(create)("create_event", wrong)))
    ver = env.verify()
    failed = {c.type: c.detail for c in ver.failed}
    assert set(failed) == {"event_exists"}
    assert "lasts" in failed["event_exists"] and 0 < ver.score < 1


def test_collateral_damage_fails_the_unchanged_check(env, tasks):
    task = next(t for t in tasks if t.family == "file_invoice")
    env.reset(task)
    for call in task.reference_solution[:-1]:
        env.step(format_call(call))
    victim = next(p for p in task.initial_state["files"] if p.startswith("photos/"))
    assert env.step(f'delete(path="{victim}")').valid
    ver = env.verify()
    assert [c.type for c in ver.failed] == ["unchanged_except"]
    assert victim in ver.failed[0].detail


ADVERSARIAL = [
    'write_file(path="../escape.txt", content="x")',
    'write_file(path="notes/../../escape.txt", content="x")',
    'write_file(path="/tmp/escape.txt", content="x")',
    'write_file(path="~/escape.txt", content="x")',
    'write_file(path="link/secret.txt", content="pwned")',
    'write_file(path="evil.txt", content="pwned")',
    'read_file(path="link/secret.txt")',
    'read_file(path="/etc/passwd")',
    'read_file(path="evil.txt")',
    'list_dir(path="..")',
    'list_dir(path="link")',
    'move(src="evil.txt", dst="moved.txt")',
    'move(src="documents", dst="../x")',
    'delete(path="link/secret.txt")',
    'delete(path="evil.txt")',
    'delete(path=".")',
    'save_attachment(mail_id="m1", name="x.pdf", path="../x.pdf")',
    "search_mail(query=\"x'; DROP TABLE mail; --\")",
    'search_mail(query="%")',
    'find_contact(query="a\\" OR 1=1 --")',
    'move_mail(mail_id="m1\' OR \'1\'=\'1", folder="x")',
    'move_mail(mail_id="m1", folder="../../etc")',
    f'write_file(path="big.txt", content="{"a" * (MAX_PAYLOAD_CHARS + 1)}")',
    f'send_mail(to="a@b.com", subject="s", body="{"b" * (MAX_PAYLOAD_CHARS + 1)}")',
    "x" * 20_000,
    "__import__('os').system('touch /tmp/distillery-pwned')",
    "open('/etc/passwd').read()",
    'rm(path="documents")',
    'write_file(path="a.txt", content=open("x"))',
    'send_mail(to="not an address", subject="s", body="b")',
    'create_event(title="x", date="tomorrow", start="25:99")',
    "",
    "{\"tool\": \"delete\", \"args\": {\"path\": \"../../etc/passwd\"}}",
]


def test_adversarial_actions_are_observations_and_change_nothing_outside(tmp_path, tasks):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    env = StageEnv(root=str(tmp_path / "sandboxes"))
    try:
        task = next(t for t in tasks if t.family == "save_attachment")
        env.reset(task)
        # Plant links that point out of the sandbox, as a compromised file system might.
        os.symlink(outside, env.ws.home / "link")
        os.symlink(outside / "secret.txt", env.ws.home / "evil.txt")
        before_outside = tree_digest(outside)
        before_parent = sorted(p.name for p in tmp_path.iterdir())
        for action in ADVERSARIAL:
            res = env.step(action)
            assert not res.valid, action[:80]
            assert res.observation.startswith(("Error", "Invalid")), (action[:80], res.observation)
            assert not res.done
            assert "secret" not in res.observation or "secret.txt" in action
        assert tree_digest(outside) == before_outside
        assert (outside / "secret.txt").read_text() == "secret"
        assert sorted(p.name for p in tmp_path.iterdir()) == before_parent
        assert not Path("/tmp/distillery-pwned").exists()
        # The environment keeps answering, and its database is intact.
        assert env.step('list_dir(path="documents")').valid
        assert env.step('search_mail(query="attached")').valid
        with sqlite3.connect(env.ws.db_path) as db:
            assert db.execute("SELECT count(*) FROM mail").fetchone()[0] == len(task.initial_state["mail"])
    finally:
        env.close()


def test_reset_removes_what_was_planted_without_following_it_outside(tmp_path, tasks):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "sub" / "deep.txt").write_text("deep")
    before = tree_digest(outside)
    env = StageEnv(root=str(tmp_path / "sandboxes"))
    try:
        env.reset(tasks[0])
        home = env.ws.home
        os.symlink(outside, home / "link")
        os.symlink(outside / "secret.txt", home / "documents" / "evil.txt")
        os.makedirs(home / "a" / "b" / "c")
        os.mkfifo(home / "a" / "pipe")
        fresh = StageEnv(root=str(tmp_path / "fresh"))
        try:
            for task in (tasks[1], tasks[0]):
                env.reset(task)
                fresh.reset(task)
                assert tree_digest(outside) == before
                assert env.ws.snapshot() == fresh.ws.snapshot()
                assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == \
                    sorted(p.relative_to(fresh.ws.home).as_posix() for p in fresh.ws.home.rglob("*"))
        finally:
            fresh.close()
    finally:
        env.close()
    assert tree_digest(outside) == before


def test_a_task_whose_state_leaves_the_home_folder_is_refused_before_anything_changes(tmp_path, tasks):
    env = StageEnv(root=str(tmp_path / "sandboxes"))
    try:
        env.reset(tasks[0])
        before = tree_digest(tmp_path)
        state = {**tasks[0].initial_state, "files": {"../escaped.txt": "x"}}
        with pytest.raises(ValueError, match=r"'\.\./escaped\.txt'.*leaves the home folder"):
            env.reset(dataclasses.replace(tasks[0], initial_state=state))
        assert tree_digest(tmp_path) == before
        res = env.step('list_dir(path=".")')
        assert not res.valid and res.error == "no task"
        env.reset(tasks[1])
        assert env.step('list_dir(path=".")').valid
    finally:
        env.close()


def whole_state_digest(snap) -> str:
    """The state hash by its definition: the whole state as JSON with sorted keys, hashed."""
    blob = json.dumps({"files": snap.files, "dirs": snap.dirs, "mail": snap.mail, "events": snap.events,
                       "contacts": snap.contacts}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class _FullReadBack:
    """A StageEnv whose every step and verify are checked against the whole state read back
    from disk and database (what the environment reads again only where a tool changed it)."""

    def __init__(self, env: StageEnv) -> None:
        self.env = env
        self.steps = 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
        res = self.env.step(action)
        assert res.state_hash == whole_state_digest(self.env.ws.snapshot()), action
        self.steps += 1
        return res

    def verify(self):
        full = verify_checks(self.env.task.checks, self.env.initial, self.env.ws.snapshot())
        assert self.env.verify() == full
        return full


def test_the_state_read_back_only_where_tools_changed_it_is_the_whole_state(tmp_path, monkeypatch, tasks):
    monkeypatch.setenv("DISTILLERY_SANDBOX", str(tmp_path / "sandboxes"))
    wrapped: list[_FullReadBack] = []

    def wrap(env):
        wrapped.append(_FullReadBack(env))
        return wrapped[-1]

    # Random calls of every tool on arguments the episode has shown (bad ones included), and
    # reference steps with random ones between, so wins, near-wins and failures all occur.
    cfg = RolloutConfig(k=3, batch_size=8)
    for policy in (RandomPolicy(seed=1, finish_prob=0.02), _ReferenceThenRandom()):
        out = run_batch(policy, make_jobs(tasks, policy.name, cfg), cfg, wrap_env=wrap)
        assert out.episodes.height == 3 * len(tasks)
        errors = [e for e in out.episodes["error"] if e]      # the rollout records what raised
        assert not errors, errors[:3]
    tools = set(out.steps["tool"].drop_nulls())
    assert sum(w.steps for w in wrapped) > 500
    assert out.episodes["success"].any() and not out.episodes["success"].all()
    assert {"write_file", "move", "delete", "send_mail", "read_mail", "create_event"} <= tools


class _ReferenceThenRandom:
    name, model = "reference-then-random", "-"

    def __init__(self) -> None:
        self.random = RandomPolicy(seed=2, finish_prob=0.0)

    def act(self, contexts):
        out = self.random.act(contexts)
        for i, ctx in enumerate(contexts):
            ref = ctx.task.reference_solution
            mail_ids = [m["id"] for m in ctx.task.initial_state.get("mail", [])]
            if ctx.t < len(ref) and (ctx.t + ctx.seed) % 4:
                out[i] = ActionOutput(text=format_call(ref[ctx.t]))
            elif mail_ids and ctx.seed % 2:     # marks a mail read: a change of one flag
                out[i] = ActionOutput(text=f'read_mail(mail_id="{mail_ids[(ctx.t + ctx.seed) % len(mail_ids)]}")')
        return out


def test_close_removes_the_sandbox(tmp_path, tasks):
    env = StageEnv(root=str(tmp_path))
    env.reset(tasks[0])
    root = env.root
    assert root.exists()
    env.close()
    assert not root.exists()


def test_drafts_are_pure_functions_of_their_coordinates():
    a = draft_task("forward_mail", "train", "default", 3, seed=7, max_steps=15)
    b = draft_task("forward_mail", "train", "default", 3, seed=7, max_steps=15)
    c = draft_task("forward_mail", "train", "default", 4, seed=7, max_steps=15)
    assert a.to_row() == b.to_row() and a.to_row() != c.to_row()


def test_profiles_change_what_the_checks_enforce():
    d = draft_task("file_invoice", "test", "default", 0, seed=0, max_steps=15)
    a = draft_task("file_invoice", "test", "alex", 0, seed=0, max_steps=15)
    assert d.checks[0]["path"].startswith("finance/invoices/")
    assert a.checks[0]["path"].startswith("paperwork/bills/")
    assert a.preferences and a.preferences != d.preferences
    assert "paperwork" not in a.instruction
