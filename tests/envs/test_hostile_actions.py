"""Every registered environment's `step` is total (envs.base.Environment): generated hostile
actions — over every tool, in every syntax, with text that is not UTF-8, nesting thousands
deep, numbers too long to convert, paths of a thousand components, links planted in the
sandbox, and values that are not strings at all — come back as observations. Nothing raises,
nothing outside the sandbox changes (a canary directory is checked byte for byte), `verify`
and `state_hash` keep working and the episode's database stays intact.

Hypothesis draws the actions with a fixed seed (`derandomize`), so a run is deterministic;
each run steps at least `MIN_ACTIONS` hostile actions per environment. An environment that
keeps state somewhere the harness can look at (STAGE: a home folder and a SQLite file)
registers a planting hook and a database check below; the rest of the harness needs nothing
but the registry."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.envs.conftest import checkout_env_names, tree_digest

from distillery.envs.actions import format_call
from distillery.envs.base import (
    Environment,
    NoDraft,
    ToolSpec,
    env_names,
    env_spec,
    families,
    make_env,
    tool_specs,
)
from distillery.tasks.generate import draft_task
from distillery.types import StepResult, Task, Verification

N_EXAMPLES = 100            # episodes per environment
ACTIONS_PER_EXAMPLE = (10, 16)
MIN_ACTIONS = 1000          # hostile actions per environment per run, asserted


def make_canary(root: Path) -> Path:
    canary = root / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "secret.txt").write_text("secret")
    (canary / "hard.txt").write_text("outside the sandbox")
    (canary / "sub" / "deep.txt").write_text("deep")
    return canary


# ---------------------------------------------------------------------------------------
# Environment-specific hooks: what to plant in a sandbox, how to check its database
# ---------------------------------------------------------------------------------------


def _plant_stage(env: Any, canary: Path) -> None:
    """What a compromised file system might hold: links out, a hard link to a file outside,
    a FIFO (a read would block), a name that is not UTF-8."""
    home: Path = env.ws.home
    os.symlink(canary, home / "link")
    os.symlink(canary / "secret.txt", home / "evil.txt")
    os.link(canary / "hard.txt", home / "hard.txt")
    os.mkfifo(home / "fifo")
    fd = os.open(os.fsencode(home) + b"/bad-\xff\xfe.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"not utf-8 \xff")
    os.close(fd)


def _check_stage_db(env: Any, task: Task) -> None:
    with sqlite3.connect(env.ws.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"mail", "attachment", "event", "contact"}
        assert db.execute("SELECT count(*) FROM mail").fetchone()[0] >= len(task.initial_state.get("mail", []))
        assert db.execute("SELECT count(*) FROM contact").fetchone()[0] >= len(task.initial_state.get("contacts", []))


PLANT: dict[str, Callable[[Any, Path], None]] = {"stage": _plant_stage}
CHECK_DB: dict[str, Callable[[Any, Task], None]] = {"stage": _check_stage_db}


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

SPECIAL = ["\x00", "\n", "\r", "\t", "/", "\\", ".", "..", "~", "'", '"', ";", "%", "*", "--", "/*",
           "\u202e", "\ufeff", "\u2028", "\udcff", "\ud800", "\udfff", "²", "٤", "é", "😀"]
hostile_piece = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from(SPECIAL))
hostile_text = st.lists(hostile_piece, max_size=30).map("".join)

PATH_PIECES = ["..", ".", "", "~", "link", "evil.txt", "hard.txt", "fifo", "bad-\udcff\udcfe.txt",
               "documents", "downloads", "notes", "a", "n" * 300, "\udcff", "\ud800", "x\x00y", " "]
BIG_PATHS = ["a/" * 1500 + "x", "/".join(["b"] * 129), "../" * 40 + "etc/passwd", "/etc/passwd",
             "~/x", "C:\\x", "\\\\server\\share", "link/sub/deep.txt", "link/../x"]


def hostile_path(canary: Path) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(PATH_PIECES), hostile_text)
    return st.one_of(
        st.lists(piece, max_size=6).map("/".join),
        st.sampled_from(BIG_PATHS + [str(canary), str(canary / "secret.txt"), f"../../{canary.name}"]),
    )


HUGE_INTS = [10 ** 4300, -(10 ** 4300), 16 ** 6000, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 0, -1]
NUMBER_STRINGS = ["²", "--5", "-", "٤٥", " 45 ", "9" * 5000, "-0", "1e3", "0x10", "1_000", "+5", "",
                  " ", "45\x00", "4\u200b5", "¹²³", "-" * 50 + "5"]
EXPRESSIONS = [
    "open('x')", "__import__('os').system('touch /tmp/distillery-pwned')", "lambda: 0", "x", "None",
    "True", "1.5", "b'x'", "f'{1}'", "...", "[1]", "{}", "-" * 250 + "1", "(" * 250 + "1" + ")" * 250,
    "a" + ".a" * 300, "[" * 150 + "]" * 150, "1" + "+1" * 300, "not " * 300 + "x", "-(" * 90 + "1" + ")" * 90,
    "x" + "[0]" * 120, "0x" + "f" * 6000, "9" * 5000,
]
OBJECTS = [None, b"finish()", bytearray(b"x"), {"tool": "finish"}, ["finish()"], 42, 3.5, True, object()]
DEEP_TEXT = [
    '{"tool": "finish", "args": ' + "[" * 5000, "[" * 8000, '{"a":' * 2000 + "1" + "}" * 2000,
    "{" + '"tool": "list_dir", "args": {"path": ' + "[" * 3000 + "]" * 3000 + "}}",
    "finish(" + "(" * 3000 + ")" * 3000 + ")", "x" * 9000, "finish()" + "\n" * 5000,
]


def value(canary: Path) -> st.SearchStrategy[Any]:
    return st.one_of(
        hostile_text, hostile_path(canary), st.integers(), st.sampled_from(HUGE_INTS),
        st.sampled_from(NUMBER_STRINGS), st.sampled_from(["a" * 20_001, "b" * 7000]),
    )


def literal(v: Any, how: int) -> str:
    """`v` as Python source: JSON escapes, repr, or raw between quotes (surrogates and
    newlines left in the text itself)."""
    if isinstance(v, int):
        return hex(v) if abs(v) >= 10 ** 4000 else str(v)
    if how == 0:
        return json.dumps(v)
    if how == 1:
        return repr(v)
    return '"' + v + '"'


HUGE = "<huge>"


def json_value(v: Any) -> Any:
    """`v` for json.dumps; an integer too long for it becomes a marker that `json_text`
    replaces with 5,000 digits (JSON has no length limit, Python's int() has)."""
    return v if not isinstance(v, int) or abs(v) < 10 ** 4000 else HUGE


def json_text(obj: Any, ensure_ascii: bool = True) -> str:
    return json.dumps(obj, ensure_ascii=ensure_ascii).replace(json.dumps(HUGE), "9" * 5000)


@st.composite
def hostile_action(draw: st.DrawFn, specs: tuple[ToolSpec, ...], canary: Path) -> tuple[str, Any]:
    """(the tool aimed at, the action: text or not)."""
    spec = draw(st.sampled_from(specs))
    vals = value(canary)
    args = {p.name: draw(vals) for p in spec.params if p.required or draw(st.booleans())}
    if draw(st.integers(0, 5)) == 0:
        args[draw(st.sampled_from(["bogus", "", "\ud800", "path", "__class__"]))] = draw(vals)
    form = draw(st.sampled_from(["call", "call", "call", "positional", "json", "json-args-text",
                                 "expression", "deep", "raw", "object"]))
    how = draw(st.integers(0, 2))
    if form == "call":
        return spec.name, f"{spec.name}({', '.join(f'{k}={literal(v, how)}' for k, v in args.items())})"
    if form == "positional":
        return spec.name, f"{spec.name}({', '.join(literal(v, how) for v in args.values())})"
    if form == "json":
        return spec.name, json_text({"tool": spec.name, "args": {k: json_value(v) for k, v in args.items()}},
                                    ensure_ascii=draw(st.booleans()))
    if form == "json-args-text":
        inner = json_text({k: json_value(v) for k, v in args.items()})
        return spec.name, json.dumps({"name": spec.name, "arguments": inner})
    if form == "expression":
        name = spec.params[0].name if spec.params else "x"
        return spec.name, f"{spec.name}({name}={draw(st.sampled_from(EXPRESSIONS))})"
    if form == "deep":
        return spec.name, draw(st.sampled_from(DEEP_TEXT))
    if form == "raw":
        return spec.name, spec.name + draw(hostile_text)
    return spec.name, draw(st.sampled_from(OBJECTS))


def tasks_of(env_name: str) -> list[Task]:
    """Two tasks of each of the environment's families (the default profile; the first two
    attempts the family drafts at: a family may have none at some, `NoDraft`)."""
    tasks = []
    for f in families(env_name):
        drafted = []
        for attempt in range(20):
            with contextlib.suppress(NoDraft):
                drafted.append(draft_task(f.name, "test", "default", attempt, seed=0, max_steps=15))
            if len(drafted) == 2:
                break
        assert drafted, f"{f.name}: no task drafted in 20 attempts"
        tasks += drafted
    return tasks


def _text_ok(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    text.encode("utf-8")            # storable: parquet, SQLite and tokenizers need UTF-8
    return True


# ---------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------


def _env_param(name: str) -> Any:
    """An environment with an optional engine (`EnvSpec.requires`: a JVM, generated games) is
    a `heavy_env` test, so `-m 'not heavy_env'` leaves it out with the engine's other tests."""
    try:
        heavy = bool(env_spec(name).requires)
    except Exception:  # noqa: BLE001 - not installed here: the test registers it and decides
        heavy = False
    return pytest.param(name, marks=[pytest.mark.heavy_env] if heavy else [])


# Installed environments and this checkout's own (whose entry points `checkout_plugins` registers
# where the installed metadata is another checkout's).
@pytest.mark.parametrize("env_name", [_env_param(n) for n in sorted(set(env_names()) | set(checkout_env_names()))])
def test_hostile_actions_are_observations_and_change_nothing_outside(env_name, tmp_path, monkeypatch,
                                                                      checkout_plugins):
    for module in env_spec(env_name).requires:     # an optional extra that is not installed
        pytest.importorskip(module, reason=f"{env_name} needs the optional package {module} (docs/environments.md)")
    monkeypatch.setenv("DISTILLERY_SANDBOX", str(tmp_path / "sandboxes"))
    canary = make_canary(tmp_path)
    canary_before = tree_digest(canary)
    specs = tuple(tool_specs(env_name))
    tasks = tasks_of(env_name)
    assert tasks, f"environment {env_name!r} has no registered task family to draw a task from"
    env: Environment = make_env(env_name)
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    stepped: Counter[str] = Counter()
    refs = {t.task_id: [format_call(c) for c in t.reference_solution] for t in tasks}

    @settings(max_examples=N_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(task=st.sampled_from(tasks), data=st.data())
    def episode(task: Task, data: st.DataObject) -> None:
        env.reset(task)
        if env_name in PLANT:
            PLANT[env_name](env, canary)
        n = data.draw(st.integers(*ACTIONS_PER_EXAMPLE))
        for i in range(n):
            # Valid calls between the hostile ones, so the state they meet varies.
            if refs[task.task_id] and i % 4 == 3:
                env.step(refs[task.task_id][(i // 4) % len(refs[task.task_id])])
            tool, action = data.draw(hostile_action(specs, canary))
            res = env.step(action)
            assert isinstance(res, StepResult), (action, res)
            assert all(_text_ok(x) for x in (res.observation, res.error, res.tool, res.args_json,
                                             res.state_hash)), res
            assert res.observation and (res.valid or res.error)
            stepped[tool] += 1
        ver = env.verify()
        assert isinstance(ver, Verification) and 0.0 <= ver.score <= 1.0
        assert all(_text_ok(c.name) and _text_ok(c.detail) for c in ver.checks)
        assert _text_ok(env.state_hash()) and env.state_hash()
        if env_name in CHECK_DB:
            CHECK_DB[env_name](env, task)
        assert tree_digest(canary) == canary_before, "something outside the sandbox changed"

    try:
        episode()
    finally:
        env.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before
    assert not Path("/tmp/distillery-pwned").exists()
    assert sum(stepped.values()) >= MIN_ACTIONS, stepped
    assert set(stepped) == {s.name for s in specs}, f"tools never aimed at: {set(s.name for s in specs) - set(stepped)}"
    print(f"{env_name}: {sum(stepped.values())} hostile actions over {len(stepped)} tools")
