"""`params.yaml` sections -> one validated dataclass per stage.

Every field has a default and a one-line help (`metadata={"help": ...}`); `load_section`
rejects unknown keys and wrong types with a message that names the key and says what to
change, so a typo in `params.yaml` or in `dvc exp run -S` fails before any work starts
(`read_params` also refuses a YAML error, naming the line, and a key given twice).
A field with a fixed set of choices is annotated `Literal[...]`: `from_dict` checks the
value, and `check_choices` (called by the config's `__post_init__`) checks a config built
in code.

A section may start from another: ``base: <section>`` takes that section (itself resolved
the same way) and deep-merges the section's own keys over it, so a variant of a recipe
lists only what it changes::

    student_weak:
      base: warmup
      train: {max_steps: 400}     # every other key is warmup's
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from distillery.io import MissingInput
from distillery.types import SPLITS

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A params.yaml section that cannot be turned into its config dataclass."""


def exit_on_config_error(prog: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a command line's `main(argv)`. A ConfigError (its message names the params.yaml key
    and what to change) ends it as argparse ends a usage error, with one line and exit 2,
    rather than a traceback: it is the user's to fix, and nothing has been done yet. A missing
    input (`io.MissingInput`: the path, and the stage that makes it) is one line too, exit 1."""
    try:
        return main(argv) or 0
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except MissingInput as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (plain YAML keeps the
    last one silently: `tasks: {seed: 0, seed: 1}` would run seed 1). Otherwise the same."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *anchor` may repeat keys by design
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    mark = first.setdefault(key, key_node.start_mark)
                except TypeError:                                 # unhashable: SafeLoader says so itself
                    continue
                if mark is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {mark.line + 1}; YAML would "
                        "silently keep the last)", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(p: Path, e: yaml.YAMLError) -> ConfigError:
    """A YAML error as one line naming the file, the line and the column."""
    if isinstance(e, yaml.MarkedYAMLError) and (e.problem_mark or e.context_mark):
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "error"
        if e.context and e.problem and e.context_mark is not None and e.context_mark is not mark:
            what += f" ({e.context} on line {e.context_mark.line + 1})"
        return ConfigError(f"{p}: not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {what}")
    return ConfigError(f"{p}: not valid YAML: {e}")


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: not found; run from the repository root")
    try:
        with p.open("rb") as f:
            data = yaml.load(f, Loader=_UniqueKeyLoader) or {}   # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return data


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Validate (and gently coerce int->float) one value against a field's annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            if a is type(None) and value is None:
                return None
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_check_type(k, kt, where): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping (None: every default), validating every key and type."""
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of keys, got {type(data).__name__} "
                          f"{data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(fields)}"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


@functools.cache
def _choices(cls: type) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """(field, allowed values) of each `Literal[...]` field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, typing.get_args(hints[f.name])) for f in dataclasses.fields(cls)
                 if typing.get_origin(hints[f.name]) is typing.Literal)


def check_choices(cfg: Any, where: str) -> None:
    """Raise ValueError if a `Literal[...]` field of dataclass `cfg` holds a value outside
    its choices (for configs built in code: `from_dict` already checks what params.yaml says)."""
    for name, allowed in _choices(type(cfg)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{where}.{name} must be one of {list(allowed)}, not {getattr(cfg, name)!r}")


BASE_KEY = "base"


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over`'s keys on top of `base`'s: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_section(params: dict[str, Any], section: str) -> dict[str, Any] | None:
    """`params[section]` with its `base:` chain merged in (None when the section is absent)."""
    if params.get(section) is None:
        return None
    return _resolved(params, section, [])


def _resolved(params: dict[str, Any], name: str, seen: list[str]) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(f"{seen[0]}: circular base ({' -> '.join([*seen, name])}); a section cannot "
                          "start from itself")
    body = params[name]
    if not isinstance(body, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {type(body).__name__}")
    base = body.get(BASE_KEY)
    own = {k: v for k, v in body.items() if k != BASE_KEY}
    if base is None:
        return own
    if not isinstance(base, str) or not isinstance(params.get(base), dict):
        raise ConfigError(f"{name}.{BASE_KEY}: {base!r} is not a section of params.yaml; "
                          f"sections: {sorted(params)}")
    return _deep_merge(_resolved(params, base, [*seen, name]), own)


def load_section(cls: type[T], section: str, params: dict[str, Any] | None = None,
                 path: str | Path = PARAMS_FILE) -> T:
    """Read `section` of params.yaml into `cls` (`base:` resolved); a missing section uses every default."""
    params = read_params(path) if params is None else params
    return from_dict(cls, resolve_section(params, section), where=section)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def help_of(cls: type) -> dict[str, str]:
    """Field name -> help text, for `--help` output and docs."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses.field
    """A field with a default and a help line. Lists, dicts and config classes are copied
    per instance (dataclasses forbid shared mutable defaults)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# ---------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------


@dataclass
class ExecutorConfig:
    """Where rollout and evaluation shards run."""

    kind: Literal["process", "thread", "inline"] = _f(
        "process", "'process' (a local process pool), 'thread', or 'inline' (no pool)")
    workers: int = _f(2, "pool size for 'process'/'thread'; ignored when `address` is set")
    address: str = _f("", "a dask.distributed scheduler address (tcp://host:8786); empty = local pool")

    def __post_init__(self) -> None:
        check_choices(self, "executor")
        if self.workers < 1:
            raise ValueError("executor.workers must be at least 1")


# ---------------------------------------------------------------------------------------
# Stage configs (one per stage; later stages add theirs below)
# ---------------------------------------------------------------------------------------


@dataclass
class TasksConfig:
    """`tasks` stage: draft tasks from an environment's registered families and keep those that validate."""

    env: str = _f("stage", "the registered environment whose families are drafted")
    seed: int = _f(0, "master seed; every task's own seed derives from it")
    families: list[str] = _f([], "task families to generate; empty = every registered family of `env`")
    n_train_per_family: int = _f(25, "kept train tasks per family")
    n_test_per_family: int = _f(12, "kept test tasks per family")
    train_profiles: list[str] = _f(["default"], "workspace profiles the train split is drawn under")
    test_profiles: list[str] = _f(["default"], "workspace profiles the test split is drawn under")
    heldout_profiles: list[str] = _f([], "held-out users (never in train): splits heldout_train (met after "
                                     "deployment, learned from) and heldout_test")
    n_heldout_train_per_family: int = _f(20, "kept heldout_train tasks per family")
    n_heldout_test_per_family: int = _f(12, "kept heldout_test tasks per family")
    max_steps: int = _f(15, "step limit of every generated task")
    random_probes: int = _f(3, "random-policy episodes a task must survive unsolved to be kept; 0 turns "
                            "every random-policy check off, the family check included")
    # The family check (tasks.generate.family_check_plan): random episodes over a family's kept
    # tasks, as many as it takes to fail a family this solvable with this probability.
    family_detect_rate: float = _f(0.02, "a family whose kept tasks a random policy solves at this rate "
                                   "or more fails the family check with probability >= family_power; "
                                   "0 turns the check off")
    family_power: float = _f(0.95, "probability that a family at family_detect_rate fails the check")
    family_tolerated_rate: float = _f(0.002, "a family solved at this rate or less passes the check with "
                                      "probability >= 1 - family_false_alarm")
    family_false_alarm: float = _f(0.01, "probability that a family at family_tolerated_rate fails")
    max_attempts_factor: int = _f(4, "give up on a family after this many x the wanted tasks")
    drafted: str = _f("", "kept drafted tasks to merge into the task table (`distillery tasks draft` writes "
                          "data/tasks/drafted/kept.parquet); empty = none")
    # Inline by default (a library call stays in its process); params.yaml runs the stage's
    # families on a process pool. The tasks are the same either way.
    executor: ExecutorConfig = field(default_factory=lambda: ExecutorConfig(kind="inline", workers=1),
                                     metadata={"help": "where families are generated (one family per shard)"})

    def __post_init__(self) -> None:
        if min(self.n_train_per_family, self.n_test_per_family, self.n_heldout_train_per_family,
               self.n_heldout_test_per_family) < 0:
            raise ValueError("tasks.n_*_per_family must be >= 0")
        if set(self.heldout_profiles) & set(self.train_profiles):
            raise ValueError(f"tasks.heldout_profiles {sorted(set(self.heldout_profiles) & set(self.train_profiles))} "
                             "are also train profiles: a held-out user must be unseen in training")
        if self.max_steps < 2:
            raise ValueError("max_steps must be at least 2 (one action and finish)")
        if self.family_detect_rate and not (
                0 <= self.family_tolerated_rate < self.family_detect_rate < 1
                and 0 < self.family_power < 1 and 0 < self.family_false_alarm < 1):
            raise ValueError("tasks.family_*: need 0 <= family_tolerated_rate < family_detect_rate < 1 and "
                             "family_power, family_false_alarm in (0, 1) (family_detect_rate: 0 turns the "
                             "family check off)")


@dataclass
class CollectConfig:
    """`collect`, `play` and `rollout` stages: run named policies on tasks, record gated
    trajectories (`collect`: the scripted teachers; `play`: model policies on the test
    split; `rollout`: a student sampling K episodes per train task)."""

    policies: list[str] = _f(["oracle", "random"], "entries of `policies:` that `collect@<name>` runs")
    splits: list[str] = _f(["train", "test"], "task splits to run")
    k: int = _f(1, "episodes per task (a group); >1 needs a sampling policy")
    seed: int = _f(0, "rollout seed")
    batch_size: int = _f(64, "episodes advanced together per shard")
    executor: ExecutorConfig = _f(ExecutorConfig, "where shards run")
    policy_overrides: dict[str, Any] = _f({}, "constructor arguments that override the policy's own "
                                          "(e.g. temperature: 1.0 to sample groups)")
    tasks_per_family: int = _f(0, "run only the first N tasks of each family and split (by id); 0 = all")
    continuous_batching: bool = _f(False, "a local model carries each batch's last few unfinished actions into "
                                          "its next call instead of decoding them alone (fewer passes; the same "
                                          "actions, log-probs differ in their last bits)")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.splits or any(s not in SPLITS for s in self.splits):
            raise ValueError(f"splits must name some of {', '.join(SPLITS)}; got {self.splits}")
        if self.tasks_per_family < 0:
            raise ValueError(f"tasks_per_family must be >= 0 (0 = all), got {self.tasks_per_family}")


@dataclass
class EvaluateConfig:
    """`evaluate` stage: benchmark every policy's trajectories on the test split."""

    split: str = _f("test", "which split the benchmark reports")
    policies: list[str] = _f(["oracle", "random"], "trajectory folders under data/trajectories to compare")


BUILT_IN_POLICY_KINDS = ("oracle", "random", "hf", "openai")


@dataclass
class PolicyEntry:
    """One named policy under `policies:` in params.yaml (what `collect <name>` runs)."""

    # Any string: besides the built-in kinds, an installed plugin may register one. Whether it
    # does is checked where the policy is built (`agents.base.policy_spec`), since this module
    # loads no plugins.
    kind: str = _f("oracle", "oracle | random | hf | openai, or a kind an installed plugin registers")
    kwargs: dict[str, Any] = _f({}, "keyword arguments of the policy's constructor")

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind.strip():
            raise ValueError(f"policy.kind must name a policy kind, got {self.kind!r}")


def load_policy(name: str, params: dict[str, Any] | None = None) -> PolicyEntry:
    """Entry `name` of params.yaml's `policies:` table: a mapping with `kind` (and `kwargs`)."""
    params = read_params() if params is None else params
    table = params.get("policies")
    table = {} if table is None else table
    kinds = list(BUILT_IN_POLICY_KINDS)
    if not isinstance(table, dict):
        raise ConfigError(f"policies: expected a mapping of policy name -> {{kind: ..., kwargs: {{...}}}}, "
                          f"got {type(table).__name__} {table!r}")
    if name not in table:
        raise ConfigError(f"policies.{name}: not defined in params.yaml; defined: {sorted(table)}")
    entry = table[name]
    if not isinstance(entry, dict):
        raise ConfigError(f"policies.{name}: expected a mapping such as {{kind: {kinds[0]}, kwargs: {{...}}}}, "
                          f"got {type(entry).__name__} {entry!r}")
    if "kind" not in entry:
        raise ConfigError(f"policies.{name}.kind: missing; say which policy it is, one of {kinds} "
                          "or a kind an installed plugin registers")
    return from_dict(PolicyEntry, entry, where=f"policies.{name}")


# ---------------------------------------------------------------------------------------
# PGHS: group-level user simulation
# ---------------------------------------------------------------------------------------


@dataclass
class PghsDataConfig:
    """`pghs_data` stage: generate (or import) merchant-user trajectories and gate them."""

    source: str = _f("generate", "'generate' for the synthetic world, or a parquet path with the documented schema")
    groups_file: str = _f("", "with an imported source: JSON list of group descriptions (name, description, stated_*)")
    seed: int = _f(0, "seed of the synthetic world (merchants, hidden factors, noise)")
    n_merchants: int = _f(101, "merchants in the synthetic world")
    n_periods: int = _f(52, "weekly periods per merchant; rows = merchants x periods x groups")
    groups: list[str] = _f(["students", "office_workers", "families", "night_owls", "seniors"],
                           "user groups to simulate (each must be a built-in profile)")
    n_strategy_templates: int = _f(48, "candidate strategies in the catalog the ranking test draws from")
    strategies_per_merchant: int = _f(6, "strategies (continuous, its own) each merchant runs over its periods")
    n_cities: int = _f(4, "cities: merchants in one city share the weather")
    traffic: float = _f(60000.0, "median weekly exposures of a merchant (all groups)")
    merchant_effect_sd: float = _f(0.05, "sd of the hidden merchant quality (logit/log scale)")
    affinity_sd: float = _f(0.03, "sd of the hidden merchant x group affinity")
    confounding: float = _f(1.0, "how strongly weaker merchants pick deeper discounts and more ads (0 = none)")

    def __post_init__(self) -> None:
        if self.n_merchants < 4 or self.n_periods < 2:
            raise ValueError("pghs_data needs n_merchants >= 4 and n_periods >= 2")
        if not self.groups:
            raise ValueError("pghs_data.groups must name at least one group")
        if self.strategies_per_merchant < 1 or self.n_strategy_templates < 1:
            raise ValueError("pghs_data.strategies_per_merchant and n_strategy_templates must be >= 1")


@dataclass
class PghsPoliciesConfig:
    """How decision policies are mined from training trajectories."""

    max_bins: int = _f(8, "most condition ranges per feature (leaves of a shallow tree)")
    min_support: int = _f(40, "fewest training trajectories a response policy's condition must cover")
    min_confidence: float = _f(0.7, "least share of merchant-bootstrap refits agreeing on the direction")
    n_bootstrap: int = _f(30, "merchant-bootstrap refits behind each confidence")
    ridge: float = _f(1.0, "ridge penalty of the within-merchant effect fit")
    min_merchants: int = _f(5, "fewest merchants a context (merchant attribute) policy must cover")

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"pghs.policies.min_confidence must be in [0, 1] (a share of refits), "
                             f"got {self.min_confidence}")


@dataclass
class PghsLLMConfig:
    """An OpenAI-compatible endpoint for the `llm` reasoning backend."""

    base_url: str = _f("http://127.0.0.1:8000/v1", "endpoint root, e.g. vLLM, Ollama or `distillery serve`")
    model: str = _f("default", "model name sent with each request")
    api_key_env: str = _f("OPENAI_API_KEY", "environment variable holding the key ('EMPTY' if unset)")
    temperature: float = _f(0.0, "sampling temperature")
    max_tokens: int = _f(400, "completion budget per request")
    concurrency: int = _f(4, "requests in flight at once")
    timeout_s: float = _f(60.0, "per-request timeout")
    max_retries: int = _f(2, "client retries on transient errors")


@dataclass
class PghsReasonConfig:
    """The reasoning branch."""

    backend: Literal["rules", "llm"] = _f(
        "rules", "'rules' (deterministic policy composition) or 'llm' (OpenAI-compatible endpoint)")
    llm: PghsLLMConfig = _f(PghsLLMConfig, "endpoint for backend 'llm'")

    def __post_init__(self) -> None:
        check_choices(self, "pghs.reason")


@dataclass
class PghsFitConfig:
    """The fitting branch (LightGBM at group level)."""

    n_estimators: int = _f(400, "boosting rounds")
    learning_rate: float = _f(0.05, "shrinkage")
    num_leaves: int = _f(31, "leaves per tree")
    min_child_samples: int = _f(20, "fewest trajectories per leaf")
    feature_fraction: float = _f(0.9, "share of features tried per tree")
    lambda_l2: float = _f(1.0, "L2 penalty on leaf values")
    anchor: bool = _f(True, "with policies: boost from the policy prediction (init_score) as well as using policy features")
    cross_fit_folds: int = _f(5, "merchant folds for out-of-fold policy features on training rows (<2: in-sample)")
    threads: int = _f(1, "LightGBM threads (OpenMP spin-waits: more threads than free cores is many times slower)")

    def __post_init__(self) -> None:
        if self.n_estimators < 1:
            raise ValueError(f"pghs.fit.n_estimators must be at least 1, got {self.n_estimators}")
        if self.learning_rate <= 0:
            raise ValueError(f"pghs.fit.learning_rate must be > 0, got {self.learning_rate}")
        if self.num_leaves < 2:
            raise ValueError(f"pghs.fit.num_leaves must be at least 2 (LightGBM's minimum), got {self.num_leaves}")
        if not 0 < self.feature_fraction <= 1:
            raise ValueError(f"pghs.fit.feature_fraction must be in (0, 1], got {self.feature_fraction}")
        if self.min_child_samples < 0 or self.lambda_l2 < 0:
            raise ValueError("pghs.fit.min_child_samples and pghs.fit.lambda_l2 must be >= 0")


@dataclass
class PghsConfig:
    """`pghs` stage: mine policies, fit both branches, fuse, evaluate over seeds."""

    seeds: list[int] = _f([0, 1, 2], "each seed redraws the merchant split, the held-out strategies and model randomness")
    targets: list[str] = _f(["order_rate", "ctr"], "outcome rates simulated; the first is the headline metric")
    folds: int = _f(4, "merchant folds per seed: every merchant is held out once (1 = one split of test_fraction)")
    val_fraction: float = _f(0.2, "share of merchants the fusion is fitted on (drawn from the non-test ones)")
    test_fraction: float = _f(0.25, "with folds = 1: share of merchants held out for evaluation")
    holdout_strategies: float = _f(0.2, "share of strategies removed from training (held-out strategies)")
    n_candidates: int = _f(8, "candidate strategies ranked per held-out merchant (counterfactual test)")
    fuse_method: Literal["weights", "stacking"] = _f(
        "weights", "'weights' (alpha per group) or 'stacking' (linear model per group)")
    policies: PghsPoliciesConfig = _f(PghsPoliciesConfig, "policy mining")
    reason: PghsReasonConfig = _f(PghsReasonConfig, "reasoning branch")
    fit: PghsFitConfig = _f(PghsFitConfig, "fitting branch")

    def __post_init__(self) -> None:
        check_choices(self, "pghs")
        if not self.seeds:
            raise ValueError("pghs.seeds must list at least one seed")
        bad = [t for t in self.targets if t not in ("order_rate", "ctr", "cvr")]
        if not self.targets or bad:
            raise ValueError(f"pghs.targets must be a non-empty subset of order_rate, ctr, cvr (bad: {bad})")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ValueError("pghs.val_fraction and test_fraction must be in (0, 1) and sum below 1")
        if not 0 <= self.holdout_strategies < 1:
            raise ValueError("pghs.holdout_strategies must be in [0, 1)")
        if self.folds < 1:
            raise ValueError("pghs.folds must be at least 1")
