"""The environment protocol (design section 3), tool specifications, and how environments
and task families are found by name.

An environment plugin is an `EnvSpec`: a constructor, its tools, and the hooks that let the
rest of the library serve an environment it has never seen (the text a tokenizer should
know, how mined lessons read). A task family is a `Family`: a function from a random
generator and a user profile to a `Draft` (pure data). Both are registered through entry
points (`distillery.registry`); `make_env`, `tool_specs`, `env_spec`, `families` and
`family` resolve them.
"""

from __future__ import annotations

import random
import reprlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from distillery import registry
from distillery.types import StepResult, Task, ToolCall, Verification

if TYPE_CHECKING:
    from distillery.envs.phrasebook import Phrasebook


@runtime_checkable
class Environment(Protocol):
    """A real, sandboxed environment that one episode runs in.

    `reset` builds the task's initial state from scratch and returns the first observation;
    `verify` reads the final state back and scores the task's declarative checks.

    `step` is total: for *any* input — text that is not valid UTF-8, JSON or expressions
    nested thousands deep, numbers too long to convert, paths of a thousand components, not a
    string at all — it returns a `StepResult` whose observation says what was wrong, and
    never raises. Arguments are validated before state is touched, nothing outside the
    episode's sandbox changes, and `verify` and `state_hash` keep working whatever the
    agent (or anything planted in the sandbox) left behind. `tests/envs/test_hostile_actions.py`
    holds every registered environment to this with generated hostile actions.
    """

    name: str

    def reset(self, task: Task) -> str: ...

    def step(self, action_text: str) -> StepResult: ...

    def verify(self) -> Verification: ...

    def state_hash(self) -> str: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------
# Tool specifications: one source for the JSON schema (function-calling LLMs), the compact
# text syntax (small models) and the random policy's argument sampling.
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolParam:
    name: str
    type: str = "string"          # "string" | "integer"
    description: str = ""
    required: bool = True
    kind: str = "text"            # sampling hint: path | folder | mail_id | email | date | time | name | text


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    params: tuple[ToolParam, ...] = field(default_factory=tuple)
    mutates: bool = False         # changes the state (drives state hashing and failure analysis)

    def json_schema(self) -> dict[str, Any]:
        """The OpenAI function-calling form: {"type": "function", "function": {...}}."""
        props = {p.name: {"type": p.type, "description": p.description} for p in self.params}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": props,
                    "required": [p.name for p in self.params if p.required],
                    "additionalProperties": False,
                },
            },
        }

    def signature(self) -> str:
        """Compact text syntax shown to small models: send_mail(to, subject, body, cc?)."""
        ps = ", ".join(p.name + ("" if p.required else "?") for p in self.params)
        return f"{self.name}({ps})"


# ---------------------------------------------------------------------------------------
# Plugins: environments and task families by name
# ---------------------------------------------------------------------------------------


def _no_texts(state: dict[str, Any]) -> list[str]:
    return []


def _any_profile(name: str) -> None:
    return None


# The JSON Schema `format` an environment puts on every path a draft may name (state keys,
# check and tool arguments): `distillery.tasks.schema` refuses any such value that could
# leave the episode's sandbox (absolute, `..`, a drive, `~`, control characters).
PATH_FORMAT = "sandbox-path"


@dataclass(frozen=True)
class DraftFormat:
    """What a model may write when it drafts a task for this environment: data only.

    `state_schema` is the JSON Schema of a task's `initial_state`; `check_schemas` maps each
    declarative check type the verifier knows to the JSON Schema of one check object (its
    `type` included). Paths carry `"format": PATH_FORMAT`. `required_checks` must appear in
    every draft (e.g. a collateral-damage check); `example` is a complete draft that
    validates, shown to drafting models; `max_state_chars` bounds the state's JSON text.
    """

    state_schema: dict[str, Any]
    check_schemas: dict[str, dict[str, Any]]
    required_checks: tuple[str, ...] = ()
    example: dict[str, Any] = field(default_factory=dict)
    example_hint: str = ""
    max_state_chars: int = 60_000

    @property
    def check_types(self) -> tuple[str, ...]:
        return tuple(self.check_schemas)


@dataclass(frozen=True)
class EnvSpec:
    """What an environment plugin registers under `distillery.envs`."""

    name: str
    factory: Callable[..., Environment]          # factory(**env_kwargs) -> a fresh environment
    tools: tuple[ToolSpec, ...]
    description: str = ""
    # The text of a task's initial state that a model reads (a tokenizer's corpus).
    state_texts: Callable[[dict[str, Any]], list[str]] = _no_texts
    # Words the environment's tasks can use that no generated task may show yet (held-out
    # users' values): trained into tokenizers so they are familiar tokens when they appear.
    vocabulary: Callable[[], str] = str
    # Raises ValueError naming the known profiles when a task generator is asked for an
    # unknown one (so a typo in params.yaml fails before any work starts).
    check_profile: Callable[[str], None] = _any_profile
    # How lessons mined from this environment's episodes read (None: the miner's neutral wording).
    phrasebook: Phrasebook | None = None
    # The state and check vocabularies a model drafts tasks in (None: tasks cannot be drafted
    # from hints for this environment; `distillery tasks draft` says so).
    draft_format: DraftFormat | None = None
    # The rewards a step can carry, (low, high): the steps gate rejects any outside it.
    reward_range: tuple[float, float] = (0.0, 1.0)
    # Python modules the environment needs beyond Distillery's own dependencies (an optional
    # extra, imported lazily): where one is missing, tests of the environment are skipped.
    requires: tuple[str, ...] = ()
    # The most environments of this kind one worker process may hold at once (0: no limit),
    # e.g. simulators that each start a large JVM. Building one more raises; code that plays
    # episodes in batches caps its batch here (`batch_limit`).
    max_instances: int = 0

    def batch_limit(self, wanted: int, held: int = 0) -> int:
        """`wanted` episodes at once, capped so that with `held` environments already built
        the worker stays within `max_instances` (at least 1)."""
        return wanted if not self.max_instances else max(1, min(wanted, self.max_instances - held))

    def __post_init__(self) -> None:
        low, high = self.reward_range
        if not low <= high:
            raise ValueError(f"EnvSpec {self.name!r}: reward_range {self.reward_range} needs low <= high")


@dataclass(frozen=True)
class Draft:
    """One task as a family drafts it: data only, checked before it is kept."""

    instruction: str
    state: dict[str, Any]
    solution: list[ToolCall]
    checks: list[dict[str, Any]]
    preferences: list[str] = field(default_factory=list)  # the profile's standing preferences the checks enforce, as text


class EngineUnavailable(RuntimeError):
    """An environment's engine cannot start on this machine (its optional package or Java is
    missing): the message says what to install. Not a bug of the environment, so commands
    report it in one line and the task generator does not wrap it as a family's failure."""


def require_java(engine: str) -> None:
    """EngineUnavailable, naming `engine`, unless `java` is on PATH. Checked before a py4j
    engine launches its JVM from there: a launch that fails leaves the package's half-built
    object, whose destructor then prints a second, unrelated error."""
    if shutil.which("java") is None:
        raise EngineUnavailable(f"{engine} needs Java 17 or later: no `java` on PATH")


def jvm_failure(engine: str, error: BaseException) -> EngineUnavailable:
    """What a JVM that would not start (an old or broken Java) is reported as."""
    return EngineUnavailable(f"{engine} cannot start its JVM ({error}): it needs Java 17 or later on PATH")


class NoDraft(Exception):
    """What a family's `draft` raises when it has no task at these coordinates (e.g. no
    question of its template held on the databases it tried): the task generator rejects the
    attempt with this message as the reason, instead of validating a placeholder."""


@dataclass(frozen=True)
class Family:
    """What a task-family plugin registers under `distillery.families` (one, or a collection)."""

    name: str
    env: str
    hint: str
    draft: Callable[[random.Random, str], Draft]   # (rng, profile name) -> draft (or NoDraft); pure
    areas: tuple[str, ...] = ()


def _what(obj: Any) -> str:
    """A loaded object in a few words, for a message about a broken entry point (a repr can
    run to pages, and a function's names its memory address, not where it is)."""
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        kind = "class" if isinstance(obj, type) else "function"
        return f"{kind} {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__} ({reprlib.repr(obj)})"


def env_spec(name: str) -> EnvSpec:
    """The registered environment `name`."""
    spec = registry.load(registry.ENVS, name)
    where = f"{registry.ENVS} entry point {name!r}"
    if not isinstance(spec, EnvSpec):
        raise registry.RegistryError(f"{where} ({registry.origin(registry.ENVS, name)}) holds {_what(spec)}, "
                                     "not an EnvSpec")
    if spec.name != name:
        raise registry.RegistryError(f"{where} ({registry.origin(registry.ENVS, name)}): its EnvSpec is named "
                                     f"{spec.name!r}; the entry-point name and EnvSpec.name must match")
    return spec


def env_names() -> list[str]:
    return registry.entry_names(registry.ENVS)


# The calls every environment must answer (`Environment`); checked where one is built, so a
# plugin that lacks one hears it there, not from deep inside whatever first calls it.
PROTOCOL_METHODS = ("reset", "step", "verify", "state_hash", "close")


def make_env(name: str, **kwargs: Any) -> Environment:
    """A fresh environment of the registered kind `name` (imported on first use)."""
    env = env_spec(name).factory(**kwargs)
    missing = [m for m in PROTOCOL_METHODS if not callable(getattr(env, m, None))]
    if missing:
        raise registry.RegistryError(
            f"environment {name!r} ({registry.origin(registry.ENVS, name)}) builds {_what(type(env))}, which "
            f"lacks {', '.join(m + '()' for m in missing)}: an environment implements every method of the "
            f"Environment protocol ({', '.join(PROTOCOL_METHODS)}; distillery.envs.base.Environment)")
    return env


def tool_specs(env_name: str) -> list[ToolSpec]:
    """The tools of an environment, without building one."""
    return list(env_spec(env_name).tools)


def families(env: str | None = None) -> list[Family]:
    """Every registered family (of environment `env`), by entry-point name, then in the order
    each entry declares them."""
    out: dict[str, Family] = {}
    for entry in registry.entry_names(registry.FAMILIES):
        for fam in registry.members(registry.load(registry.FAMILIES, entry)):
            if not isinstance(fam, Family):
                raise registry.RegistryError(
                    f"{registry.FAMILIES} entry point {entry!r} ({registry.origin(registry.FAMILIES, entry)}) "
                    f"holds {_what(fam)}, not a Family (an entry holds a Family, or a list or dict of them)")
            if fam.name in out and out[fam.name] is not fam:
                raise registry.RegistryError(f"task family {fam.name!r} is registered twice (entry {entry!r})")
            out[fam.name] = fam
    return [f for f in out.values() if env is None or f.env == env]


def family(name: str) -> Family:
    """The registered task family `name`."""
    by_name = {f.name: f for f in families()}
    if name not in by_name:
        raise registry.RegistryError(f"unknown task family {name!r}; registered: {', '.join(by_name) or 'none'}")
    return by_name[name]
