"""Regression tests, one per class of input that used to raise out of `StageEnv.step` (or
reach outside the sandbox): each is now an observation, the state is as it was, and
`verify` and `state_hash` keep working. The property-based harness that found them is
tests/envs/test_hostile_actions.py."""

from __future__ import annotations

import os
import sys

import pytest
from tests.envs.test_hostile_actions import tree_digest
from tests.envs.test_stage_env import whole_state_digest

from distillery.envs.actions import MAX_JSON_DEPTH, MAX_OPERATORS, parse_action
from distillery.envs.stage import StageEnv
from distillery.envs.stage.tools import TOOL_SPECS
from distillery.rollout import RolloutConfig, make_jobs, run_batch
from distillery.tasks.generate import draft_task
from distillery.types import ActionOutput, Context


@pytest.fixture
def task():
    return draft_task("save_attachment", "test", "default", 0, seed=0, max_steps=15)


@pytest.fixture
def env(tmp_path, task):
    e = StageEnv(root=str(tmp_path / "sandboxes"))
    e.reset(task)
    yield e
    e.close()


def refused(env: StageEnv, action, *, changes: bool = False) -> str:
    """Step `action`; it must come back invalid, as an observation, with the state as it was."""
    before = env.state_hash()
    res = env.step(action)
    assert not res.valid and res.error, (action, res)
    assert res.observation.startswith(("Invalid action", "Error")), res.observation
    res.observation.encode("utf-8")          # storable as it is
    assert changes or env.state_hash() == before == env.ws.snapshot().digest()
    env.verify()
    return res.error


# ---------------------------------------------------------------------------------------
# Text that is not UTF-8 (lone surrogates)
# ---------------------------------------------------------------------------------------

SURROGATE_ACTIONS = [
    'read_file(path="\\ud800.txt")',
    'write_file(path="notes/\\udcff.txt", content="x")',
    'list_dir(path="\\udcff")',
    'move(src="documents/\\ud800", dst="x")',
    'delete(path="\\udfff")',
    'send_mail(to="ann.lee@acme.com", subject="hi \\ud800", body="b")',
    'send_mail(to="ann.lee@acme.com", subject="s", body="\\udcff")',
    'send_mail(to="\\ud800@acme.com", subject="s", body="b")',
    'search_mail(query="\\ud800")',
    'move_mail(mail_id="m1", folder="\\ud800")',
    'create_event(title="\\ud800", date="2026-03-03", start="10:00")',
    'list_events(date="\\ud800")',
    'add_contact(name="\\ud800", email="x.y@acme.com")',
    'find_contact(query="\\udcff")',
    '{"tool": "read_file", "args": {"path": "\\ud800"}}',
    '{"tool": "\\ud800", "args": {}}',
    '{"tool": "read_file", "args": {"\\ud800": "x"}}',
    'read_file(path="a\ud800b")',                       # the surrogate in the action text itself
    '\udcff',
]


@pytest.mark.parametrize("action", SURROGATE_ACTIONS)
def test_text_that_is_not_utf8_is_refused_with_a_clear_message(env, action):
    assert "UTF-8" in refused(env, action)


def test_write_file_with_bad_content_leaves_the_existing_file_as_it_was(env):
    target = env.ws.home / "notes" / "keep.md"
    assert env.step('write_file(path="notes/keep.md", content="precious")').valid
    h = env.state_hash()
    refused(env, 'write_file(path="notes/keep.md", content="bad \\ud800")')
    assert target.read_text() == "precious" and env.state_hash() == h


def test_a_file_whose_name_is_not_utf8_does_not_break_the_episode(env):
    path = os.fsencode(env.ws.home) + b"/documents/bad-\xff\xfe.txt"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\xff\xfe not utf-8")
    env.forget_state()                      # planted behind the tools' back
    h = env.state_hash()
    assert h and h == env.ws.snapshot().digest() == whole_state_digest(env.ws.snapshot())
    listing = env.step('list_dir(path="documents")')
    assert listing.valid and "bad-\\xff\\xfe.txt" in listing.observation
    listing.observation.encode("utf-8")
    assert "documents/bad-\\xff\\xfe.txt" in env.ws.snapshot().files
    env.verify()


# ---------------------------------------------------------------------------------------
# Nesting within the 8,192-character limit; paths of ~1,500 components
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [
    '{"tool": "finish", "args": ' + "[" * 8000,
    "[" * 8000,
    '{"tool": "list_dir", "args": "' + "[" * 4000 + '"}',        # the args' own JSON text
    '{"tool": "list_dir", "args": {"path": ' + "[" * 3000 + "]" * 3000 + "}}",
])
def test_deeply_nested_json_is_refused(env, action):
    error = refused(env, action)
    assert f"nested more than {MAX_JSON_DEPTH}" in error or f"more than {MAX_OPERATORS} operators" in error


@pytest.mark.parametrize("expression", [
    "-" * 7000 + "1", "not " * 1900 + "x", "+".join(["1"] * 3000), "a" + ".a" * 3000, "a" + "[0]" * 2500,
    "(" * 3000 + "1" + ")" * 3000,
])
def test_deeply_nested_expressions_are_refused(env, expression):
    assert f"more than {MAX_OPERATORS} operators" in refused(env, f"read_file(path={expression})")
    assert "operators" in refused(env, "finish" + "()" * 3000)


def _at_depth(depth: int, fn):
    return fn() if depth == 0 else _at_depth(depth - 1, fn)


def test_the_error_message_for_a_nested_argument_is_built_at_any_stack_depth():
    # Within the operator bound, but ast.unparse (the message) recurses several frames per
    # level: near the interpreter's limit it would raise; the source is quoted instead.
    action = "read_file(path=" + "-" * (MAX_OPERATORS - 3) + "x)"
    depth = sys.getrecursionlimit() - 120
    parsed = _at_depth(depth, lambda: parse_action(action, TOOL_SPECS))
    assert not parsed.valid and "string or integer literal" in parsed.error


@pytest.mark.parametrize("tool", ["read_file", "write_file", "delete", "list_dir"])
def test_paths_of_1500_components_are_refused(env, tool):
    path = "a/" * 1500 + "x.txt"
    action = f'{tool}(path="{path}", content="y")' if tool == "write_file" else f'{tool}(path="{path}")'
    assert "components" in refused(env, action)
    assert "components" in refused(env, f'move(src="{path}", dst="x")')
    assert not (env.ws.home / "a").exists()


# ---------------------------------------------------------------------------------------
# Integers: strings isdigit() admits but int() refuses, and numbers beyond 4,300 digits
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", ['"²"', '"--5"', '"¹²³"', '"' + "9" * 5000 + '"', "0x" + "f" * 6000,
                                      "-0x" + "f" * 6000])
def test_integers_are_parsed_strictly(env, duration):
    error = refused(env, f'create_event(title="x", date="2026-03-03", start="10:00", duration={duration})')
    assert "integer" in error


def test_a_json_number_beyond_the_conversion_limit_is_refused(env):
    action = ('{"tool": "create_event", "args": {"title": "x", "date": "2026-03-03", "start": "10:00", '
              '"duration": ' + "9" * 5000 + "}}")
    assert "malformed JSON" in refused(env, action)


def test_integers_python_accepts_still_work(env):
    res = env.step('create_event(title="x", date="2026-03-03", start="10:00", duration="٤٥")')
    assert res.valid and "(45 min)" in res.observation


# ---------------------------------------------------------------------------------------
# Actions that are not strings
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [None, b"finish()", {"tool": "finish", "args": {}}, 7, ["finish()"]])
def test_actions_that_are_not_strings_are_refused(env, action):
    assert "must be text" in refused(env, action)


# ---------------------------------------------------------------------------------------
# Files that are not the sandbox's own: hard links, other devices, FIFOs
# ---------------------------------------------------------------------------------------


def test_write_file_refuses_a_hard_link_to_a_file_outside(env, task, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("outside")
    before = tree_digest(outside)
    os.link(outside / "victim.txt", env.ws.home / "linked.txt")
    env.forget_state()
    assert "hard link" in refused(env, 'write_file(path="linked.txt", content="pwned")')
    assert "hard link" in refused(env, 'read_file(path="linked.txt")')
    save = next(c for c in task.reference_solution if c.tool == "save_attachment")
    assert "hard link" in refused(
        env, f'save_attachment(mail_id="{save.args["mail_id"]}", name="{save.args["name"]}", path="linked.txt")')
    assert tree_digest(outside) == before and (outside / "victim.txt").read_text() == "outside"


def test_write_file_refuses_a_file_on_another_device(env, monkeypatch):
    assert env.step('write_file(path="notes/a.md", content="one")').valid
    monkeypatch.setattr(env.ws, "_home_dev", -1)          # as if notes/a.md were a mount
    assert "another device" in refused(env, 'write_file(path="notes/a.md", content="two")')
    assert "another device" in refused(env, 'write_file(path="notes/new.md", content="two")')
    assert (env.ws.home / "notes" / "a.md").read_text() == "one"
    assert not (env.ws.home / "notes" / "new.md").exists()


@pytest.mark.timeout(60)
def test_a_planted_fifo_neither_blocks_reads_nor_the_state_hash(env):
    os.mkfifo(env.ws.home / "documents" / "pipe")
    env.forget_state()
    assert env.state_hash() == env.ws.snapshot().digest()
    assert "not a regular file" in refused(env, 'read_file(path="documents/pipe")')
    refused(env, 'write_file(path="documents/pipe", content="x")')
    assert env.verify() is not None


# ---------------------------------------------------------------------------------------
# Through the rollout engine: hostile actions give observations, not errored episodes
# ---------------------------------------------------------------------------------------


class _Replay:
    name, model = "hostile", "-"

    def __init__(self, actions):
        self.actions = actions

    def act(self, contexts: list[Context]) -> list[ActionOutput]:
        return [ActionOutput(text=self.actions[c.t % len(self.actions)]) for c in contexts]


def test_the_rollout_engine_records_no_errored_episode(task, tmp_path):
    # (Surrogates in the action text itself are left out: the rollout engine stores the text
    # as the policy wrote it, and parquet cannot hold them.)
    actions = [a for a in SURROGATE_ACTIONS if not any(0xD800 <= ord(c) < 0xE000 for c in a)]
    actions += ["[" * 8000, "-" * 7000, 'read_file(path="' + "a/" * 1500 + '")',
                                   'create_event(title="x", date="2026-03-03", start="10:00", duration="²")']
    cfg = RolloutConfig(k=1, max_steps=len(actions), env_kwargs={"root": str(tmp_path)})
    traj = run_batch(_Replay(actions), make_jobs([task], "hostile", cfg), cfg)
    ep = traj.episodes.row(0, named=True)
    assert ep["failure_mode"] != "error" and ep["error"] == "", ep["error"]
    assert ep["n_steps"] == len(actions) == ep["invalid_actions"]


# ---------------------------------------------------------------------------------------
# Known, kept for now: a write that fails after creating its folders leaves them
# ---------------------------------------------------------------------------------------


def test_a_failed_write_leaves_no_folders_behind(env):
    refused(env, f'write_file(path="fresh/{"n" * 300}", content="x")')
    assert not (env.ws.home / "fresh").exists()
