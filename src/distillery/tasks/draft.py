"""Draft tasks from hints with a model, keep only those that validate (STAGE-Claw's loop).

For each hint, a model behind any OpenAI-compatible endpoint (`llm.ChatEndpoint`) is asked
for a task as JSON (`draft_prompts`). Its reply is judged:
1. screened as data, nothing run (`screen.screen_reply`: JSON found, sizes, the draft
   schema, paths that stay in the sandbox, no code);
2. built in a real environment and checked like every generated task
   (`generate.static_checks`: deterministic reset, the untouched state fails a check, the
   reference solution passes them all), and not a duplicate of a kept task;
3. probed with `probes` random-policy episodes (`generate.random_probe`), none may succeed.
A rejected draft's reasons are fed back for up to `max_repairs` more replies. After every
hint, each drafted family's kept tasks get the family-level check: random episodes pooled
over the family, topped up until a random success rate of `power_rate` would have shown
(with confidence 1 - power_alpha); a task those episodes solve is rejected too.

Every reply becomes a `DraftAttempt` (hint, draft, verdict, reasons, round, tokens, cost);
`tasks.drafted.write_outputs` stores and gates them.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distillery.agents.openai import Price
from distillery.envs.base import Environment, make_env
from distillery.io import json_error
from distillery.journal import JournalHeader, last_finished
from distillery.llm import ChatEndpoint, EndpointError, reply_choice, reply_usage
from distillery.tasks.draft_prompts import first_messages, repair_message
from distillery.tasks.drafted import FamilyPower, episodes_needed, rate_bound
from distillery.tasks.generate import content_key, random_probe, static_checks
from distillery.tasks.schema import Reason, draft_format
from distillery.tasks.screen import screen_reply
from distillery.types import SPLITS, DraftAttempt, Task, ToolCall

FAMILY_PREFIX = "drafted_"
DRAFT_JOURNAL = "drafts.partial.jsonl"   # in the output folder, while a run is under way


# ---------------------------------------------------------------------------------------
# Hints
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    """A hint and where its kept tasks go: their family (default: from the hint's words),
    their split, and how many drafts (conversations) to ask for."""

    text: str
    family: str = ""
    split: str = "train"
    n: int = 1

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("a hint is empty")
        if self.split not in SPLITS:
            raise ValueError(f"hint {self.text[:40]!r}: split must be one of {SPLITS}, not {self.split!r}")
        if self.n < 1:
            raise ValueError(f"hint {self.text[:40]!r}: n must be at least 1, not {self.n}")
        if self.family and not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", self.family):
            raise ValueError(f"family {self.family!r}: lower-case letters, digits and '_', starting with a letter")

    @property
    def family_name(self) -> str:
        """`family`, else `drafted_` and the hint's first Latin words and digits. A hint without
        a Latin letter ("日本語", "中文 2") gets `h` and a hash of its text after them (or alone),
        so that such hints do not share one family, and each keeps its name from run to run;
        the name of a hint with Latin letters depends on those words alone, as it always has
        (kept tables carry it)."""
        if self.family:
            return self.family
        words = re.findall(r"[a-z0-9]+", self.text.lower().replace("'", ""))
        slug = "_".join(words[:6])[:48]
        if not re.search(r"[a-z]", slug):
            digest = hashlib.sha256(self.text.strip().encode("utf-8")).hexdigest()[:10]
            slug = f"{slug[:36]}_h{digest}" if slug else f"h{digest}"
        return FAMILY_PREFIX + slug


def read_hints(path: str | Path, split: str = "train", n: int = 1) -> list[Hint]:
    """Hints from a file: `.txt` (one per line; `#` starts a comment) or `.json`/`.jsonl`/
    `.yaml` (a list of {text, family?, split?, n?}; a bare string is a hint). `split` and
    `n` apply where a hint does not say."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such hints file")
    if not p.is_file():
        raise ValueError(f"{p}: a folder, not a hints file")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from e
    if p.suffix == ".txt":
        lines = [line.strip() for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise ValueError(f"{p}: the file holds no hints")
        return [Hint(line, split=split, n=n) for line in lines]
    where: list[str] = []               # per item: where it is in the file
    if p.suffix == ".jsonl":
        items: Any = []
        for no, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{no}: not valid JSON ({e.msg} at column {e.colno})") from e
            except ValueError as e:     # a number too long to convert
                raise ValueError(f"{p}:{no}: not valid JSON ({json_error(e)})") from e
            where.append(f"{p}:{no}")
    elif p.suffix in (".json", ".yaml", ".yml"):
        import yaml

        try:
            items = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"{p}{at}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} ({problem})") from e
        except ValueError as e:         # a number too long to convert
            raise ValueError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} ({json_error(e)})") from e
    else:
        raise ValueError(f"{p}: hints come as .txt, .json, .jsonl or .yaml, not {p.suffix or 'no suffix'}")
    if items is None or items == []:   # an empty list, or a YAML file of nothing but comments
        raise ValueError(f"{p}: the file holds no hints")
    if not isinstance(items, list):
        raise ValueError(f"{p}: expected a list of hints")
    out = []
    for i, item in enumerate(items):
        at = where[i] if where else f"{p}: hint {i}"
        if isinstance(item, str):
            item = {"text": item}
        unknown = set(item) - {"text", "family", "split", "n"} if isinstance(item, dict) else {"?"}
        if unknown:
            raise ValueError(f"{at} must be a string or {{text, family?, split?, n?}}, got {item!r}")
        if "text" not in item:
            raise ValueError(f"{at}: no \"text\" (the hint itself)")
        for key, kind in (("text", str), ("family", str), ("split", str), ("n", int)):
            if key in item and (not isinstance(item[key], kind) or isinstance(item[key], bool)):
                raise ValueError(f"{at}: {key} must be {'an integer' if kind is int else 'a string'}, "
                                 f"got {item[key]!r}")
        try:
            out.append(Hint(**{"split": split, "n": n, **item}))
        except ValueError as e:
            raise ValueError(f"{at}: {e}") from e
    return out


# ---------------------------------------------------------------------------------------
# Judging one reply
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftConfig:
    """How drafts are asked for and judged."""

    env: str = "stage"
    max_repairs: int = 2           # replies after the first, each told why the last was rejected
    probes: int = 8                # random episodes per draft; one success rejects it
    power_rate: float = 0.05       # family-level: random success rate the pooled probes must rule out
    power_alpha: float = 0.05      # ... with confidence 1 - power_alpha
    max_steps: int = 15            # step limit of a kept task
    profile: str = "default"       # the profile recorded on kept tasks
    temperature: float = 0.0
    max_tokens: int = 4096
    seed: int = 0
    price: Price | None = None     # US dollars per million tokens; None costs 0

    def __post_init__(self) -> None:
        if self.max_repairs < 0 or self.probes < 0 or self.max_steps < 2 or self.max_tokens < 1:
            raise ValueError("need max_repairs >= 0, probes >= 0, max_steps >= 2 and max_tokens >= 1")
        if not (0 < self.power_rate < 1 and 0 < self.power_alpha < 1):
            raise ValueError("power_rate and power_alpha must lie strictly between 0 and 1")
        if self.price is not None:
            # Costs add up across runs in report.json: one inf or NaN would stay there for good
            # (and is not standard JSON).
            for name, value in (("input", self.price.input_per_mtok), ("output", self.price.output_per_mtok)):
                if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < math.inf):
                    raise ValueError(f"price: {name} tokens must cost a finite number of US dollars per "
                                     f"million, at least 0, not {value!r}")


@dataclass
class Judged:
    """A reply's verdict: the task when kept, else the reasons."""

    task: Task | None
    reasons: list[Reason]
    draft_json: str


# What `generate.static_checks` says, by the start of its words, and the kind it is.
_STATIC_KINDS: tuple[tuple[str, str], ...] = (
    ("generator is not deterministic", "nondeterministic"),
    ("two resets", "nondeterministic"),
    ("the untouched initial state already passes", "trivial"),
)


_HOST_DIRS = re.compile(r"(?<![\w.-])(?:/[^/\s'\"]+)+/")


def _error_text(e: Exception) -> str:
    """An exception as a reason: its type and words, host folders left out (a model needs
    the file's place in the workspace, not where the sandbox lives)."""
    return f"{type(e).__name__}: {_HOST_DIRS.sub('', str(e))[:200]}"


def _static_kind(text: str) -> str:
    return next((kind for prefix, kind in _STATIC_KINDS if text.startswith(prefix)), "unsolvable")


def duplicate_keys(task: Task) -> list[str]:
    """Keys under which two tasks count as the same: instruction and state (as for generated
    tasks), or the same request (instruction words) verified the same way."""
    words = " ".join(re.findall(r"\w+", task.instruction.lower()))
    same_ask = hashlib.sha256(json.dumps([words, task.checks], sort_keys=True).encode()).hexdigest()
    return [content_key(task), same_ask]


def build_task(draft: dict[str, Any], hint: Hint, cfg: DraftConfig) -> Task:
    """The task a screened draft describes; its id and seed come from its content."""
    task = Task(task_id="", family=hint.family_name, split=hint.split, profile=cfg.profile, hint=hint.text,
                instruction=draft["instruction"], initial_state=draft["initial_state"],
                reference_solution=[ToolCall.from_dict(c) for c in draft["reference_solution"]],
                checks=draft["checks"], preferences=list(draft.get("preferences", [])), seed=0,
                max_steps=cfg.max_steps, env=cfg.env)
    key = content_key(task)
    return replace(task, task_id=f"{task.family}-{key[:10]}", seed=int(key[:12], 16))


class Judge:
    """Judges replies in one environment it owns; remembers the tasks it kept (duplicates)."""

    def __init__(self, cfg: DraftConfig, known: Sequence[Task] = ()) -> None:
        fmt = draft_format(cfg.env)  # fails early for an environment with no draft vocabularies
        self.cfg = cfg
        self.env: Environment = make_env(cfg.env)
        self.seen: dict[str, str] = {}   # duplicate key -> what it duplicates, in words
        if fmt.example:   # a model that copies the prompt's example has drafted nothing
            self.remember(build_task(fmt.example, Hint(fmt.example_hint or "example"), cfg),
                          "the example in the prompt")
        for t in known:
            self.remember(t)

    def remember(self, task: Task, what: str = "") -> None:
        for key in duplicate_keys(task):
            self.seen.setdefault(key, what or f"{task.task_id}, already kept")

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def judge(self, reply: str, hint: Hint) -> Judged:
        screened = screen_reply(reply, self.cfg.env)
        if not screened.passed or screened.draft is None:
            return Judged(None, screened.reasons, screened.draft_json)
        task = build_task(screened.draft, hint, self.cfg)
        reasons = self._run(task)
        if not reasons:
            dup = next((self.seen[k] for k in duplicate_keys(task) if k in self.seen), None)
            if dup is not None:
                reasons = [Reason("duplicate", f"the same task as {dup}")]
        if not reasons:
            solved = random_probe([task], self.cfg.probes, self.cfg.seed).get(task.task_id, 0)
            if solved:
                reasons = [Reason("random_solved", f"a random policy solved it in {solved} of {self.cfg.probes} "
                                                   "episodes: make the target harder to hit by chance "
                                                   "(distractors, exact values, a stricter unchanged_except)")]
        if reasons:
            return Judged(None, reasons, screened.draft_json)
        self.remember(task)
        return Judged(task, [], screened.draft_json)

    def _run(self, task: Task) -> list[Reason]:
        """Build the state and run the reference solution (validation checks (a)-(c))."""
        try:
            self.env.reset(task)
        except Exception as e:  # noqa: BLE001 - a draft the environment cannot build is a rejection
            self._fresh_env()
            return [Reason("build_failed", f"the environment could not build initial_state: {_error_text(e)}")]
        try:
            found = static_checks(task, self.env, task)
        except Exception as e:  # noqa: BLE001 - likewise while the reference solution runs
            self._fresh_env()
            return [Reason("build_failed", f"the environment failed while running the reference solution: "
                                           f"{_error_text(e)}")]
        return [Reason(_static_kind(r), r[:400]) for r in found]

    def _fresh_env(self) -> None:
        self.env.close()
        self.env = make_env(self.cfg.env)


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


@dataclass
class DraftResult:
    run_id: str
    model: str
    attempts: list[DraftAttempt]
    kept: list[Task]
    power: list[FamilyPower] = field(default_factory=list)


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _ask(endpoint: ChatEndpoint, messages: list[dict[str, str]], cfg: DraftConfig,
         seed: int) -> tuple[str, int, int]:
    resp = endpoint.create(messages=messages, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=seed)
    tokens_in, tokens_out = reply_usage(resp, endpoint.where)
    return reply_choice(resp, endpoint.where).text, tokens_in, tokens_out


@dataclass
class FinishedDraft:
    """One draft (conversation) played to its end: its attempts and the task it kept, if any."""

    draft_no: int
    attempts: list[DraftAttempt]
    kept: list[Task]

    @property
    def errored(self) -> bool:
        """It ended because the endpoint did not answer: a resumed run asks again."""
        return self.attempts[-1].verdict == "error"

    def to_line(self) -> dict[str, Any]:
        return {"draft_no": self.draft_no, "attempts": [a.to_row() for a in self.attempts],
                "kept": [t.to_row() for t in self.kept]}

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> FinishedDraft:
        """A journal line as the draft it records; TypeError, KeyError or ValueError for a line
        of another shape (a draft has at least one attempt)."""
        attempts = [DraftAttempt(**a) for a in line["attempts"]]
        if not attempts:
            raise ValueError("a draft without attempts")
        return cls(int(line["draft_no"]), attempts, [Task.from_row(t) for t in line["kept"]])


def finished_drafts(records: Sequence[FinishedDraft]) -> dict[int, FinishedDraft]:
    """The journaled drafts a resumed run keeps: the last line of each draft number, unless it
    ended in an endpoint error (asked again)."""
    return last_finished(records, lambda r: r.draft_no, lambda r: r.errored)


def draft_journal_header(hints: Sequence[Hint], cfg: DraftConfig, endpoint: ChatEndpoint) -> JournalHeader:
    """What decides a drafting run's attempts, as a journal header: the hints, the drafting
    settings, and the model and its endpoint. The endpoint's transport (timeout, retries, key)
    is left out, so a run interrupted by timeouts may resume with a longer one; so are the
    tasks already kept in the output folder, which a run interrupted while writing its tables
    has joined (the drafts it resumes were judged against them, or are them)."""
    settings = {"hints": [asdict(h) for h in hints], "cfg": asdict(cfg), "model": endpoint.model,
                "base_url": endpoint.base_url}
    about = {"hints": len(hints), "drafts": sum(h.n for h in hints), "env": cfg.env, "model": endpoint.model,
             "base_url": endpoint.base_url, "max_repairs": cfg.max_repairs, "temperature": cfg.temperature,
             "seed": cfg.seed}
    return JournalHeader.of(settings, about)


def draft_tasks(hints: Sequence[Hint], endpoint: ChatEndpoint, cfg: DraftConfig, *,
                known: Sequence[Task] = (), run_id: str = "", done: Mapping[int, FinishedDraft] | None = None,
                on_attempt: Callable[[DraftAttempt], None] | None = None,
                on_draft: Callable[[int], None] | None = None,
                on_finished: Callable[[FinishedDraft], None] | None = None) -> DraftResult:
    """Ask for `hint.n` drafts of every hint, judge and repair them, and run the family-level
    probes. `known` tasks count for duplicates; `on_attempt` sees every judged reply,
    `on_draft(1)` each draft as it is passed (a progress bar's update), `on_finished` each
    draft played here (a journal's record). The drafts in `done` (by number, from an
    interrupted run of the same `run_id`) are taken as they are, not asked again; their kept
    tasks count for duplicates from where they stand in the order, as in one whole run."""
    run_id = run_id or new_run_id()
    done = done or {}
    attempts: list[DraftAttempt] = []
    kept: list[Task] = []
    draft_no = 0
    with Judge(cfg, known) as judge:
        for hint in hints:
            for _ in range(hint.n):
                if draft_no in done:
                    attempts += done[draft_no].attempts
                    kept += done[draft_no].kept
                    for task in done[draft_no].kept:
                        judge.remember(task)
                else:
                    first = len(attempts)
                    new = _one_draft(judge, endpoint, hint, draft_no, run_id, cfg, attempts, on_attempt)
                    kept += new
                    if on_finished is not None:
                        on_finished(FinishedDraft(draft_no, attempts[first:], new))
                draft_no += 1
                if on_draft is not None:
                    on_draft(1)
    power = family_power_check(kept, attempts, cfg, on_attempt)
    still_kept = {a.task_id for a in attempts if a.verdict == "kept"}
    kept = [t for t in kept if t.task_id in still_kept]
    return DraftResult(run_id, endpoint.model, attempts, kept, power)


def _one_draft(judge: Judge, endpoint: ChatEndpoint, hint: Hint, draft_no: int, run_id: str, cfg: DraftConfig,
               attempts: list[DraftAttempt], on_attempt: Callable[[DraftAttempt], None] | None) -> list[Task]:
    messages = first_messages(hint.text, cfg.env)
    for rnd in range(cfg.max_repairs + 1):
        t0 = time.perf_counter()
        seed = int.from_bytes(hashlib.blake2b(f"{cfg.seed}:{run_id}:{draft_no}:{rnd}".encode(),
                                              digest_size=4).digest(), "little")
        base = dict(attempt_id=f"{run_id}-d{draft_no:03d}-r{rnd}", run_id=run_id, env=cfg.env,
                    family=hint.family_name, hint=hint.text, draft_no=draft_no, round=rnd,
                    model=endpoint.model, base_url=endpoint.base_url)
        try:
            reply, tin, tout = _ask(endpoint, messages, cfg, seed)
        except EndpointError as e:
            attempt = DraftAttempt(**base, verdict="error", reasons=[str(e)], reason_kinds=["endpoint_error"],
                                   task_id="", reply="", draft_json="", tokens_in=0, tokens_out=0, cost_usd=0.0,
                                   wall_s=time.perf_counter() - t0)
            _record(attempt, attempts, on_attempt)
            return []
        judged = judge.judge(reply, hint)
        cost = cfg.price.cost(tin, tout) if cfg.price else 0.0
        attempt = DraftAttempt(
            **base, verdict="kept" if judged.task else "rejected", reasons=[r.detail for r in judged.reasons],
            reason_kinds=[r.kind for r in judged.reasons], task_id=judged.task.task_id if judged.task else "",
            reply=reply, draft_json=judged.draft_json, tokens_in=tin, tokens_out=tout, cost_usd=cost,
            wall_s=time.perf_counter() - t0)
        _record(attempt, attempts, on_attempt)
        if judged.task is not None:
            return [judged.task]
        messages = [*messages, {"role": "assistant", "content": reply}, repair_message(judged.reasons)]
    return []


def _record(attempt: DraftAttempt, attempts: list[DraftAttempt],
            on_attempt: Callable[[DraftAttempt], None] | None) -> None:
    attempts.append(attempt)
    if on_attempt is not None:
        on_attempt(attempt)


def family_power_check(kept: list[Task], attempts: list[DraftAttempt], cfg: DraftConfig,
                       on_attempt: Callable[[DraftAttempt], None] | None = None) -> list[FamilyPower]:
    """Pool each drafted family's random probes and top them up until they could have shown a
    random success rate of `cfg.power_rate`; a kept task the extra episodes solve turns into
    a rejection (its attempt is rewritten and passed to `on_attempt` again), and the tasks
    left are topped up again until they alone carry the episodes the bound needs."""
    needed = episodes_needed(cfg.power_rate, cfg.power_alpha)
    by_family: dict[str, list[Task]] = {}
    for t in kept:
        by_family.setdefault(t.family, []).append(t)
    out = []
    for fam, tasks in by_family.items():
        left, per_task, seed = list(tasks), cfg.probes, cfg.seed + 1   # another seed: no replayed episodes
        while left and per_task * len(left) < needed:
            extra = -(-(needed - per_task * len(left)) // len(left))
            solved = random_probe(left, extra, seed)
            per_task, seed = per_task + extra, seed + 1
            for i, a in enumerate(attempts):
                if a.verdict == "kept" and a.task_id in solved:
                    attempts[i] = replace(a, verdict="rejected", task_id="", reason_kinds=["random_solved"], reasons=[
                        f"a random policy solved it in {solved[a.task_id]} of {extra} family-level episodes "
                        f"(family {fam}: {len(left)} task(s) probed together)"])
                    if on_attempt is not None:
                        on_attempt(attempts[i])
            left = [t for t in left if t.task_id not in solved]
        episodes = per_task * len(left)
        out.append(FamilyPower(fam, len(left), episodes, needed, len(tasks) - len(left),
                               rate_bound(episodes, cfg.power_alpha) if left else None, cfg.power_alpha))
    return out
