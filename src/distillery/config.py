"""`params.yaml` sections -> one validated dataclass per stage.

Every field has a default and a one-line help (`metadata={"help": ...}`); `load_section`
rejects unknown keys and wrong types with a message that names the key and says what to
change, so a typo in `params.yaml` or in `dvc exp run -S` fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A params.yaml section that cannot be turned into its config dataclass."""


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: not found; run from the repository root or pass --params")
    data = yaml.safe_load(p.read_text()) or {}
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
    """Build dataclass `cls` from a mapping, validating every key and type."""
    data = data or {}
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


def load_section(cls: type[T], section: str, params: dict[str, Any] | None = None,
                 path: str | Path = PARAMS_FILE) -> T:
    """Read `section` of params.yaml into `cls`; a missing section uses every default."""
    params = read_params(path) if params is None else params
    return from_dict(cls, params.get(section), where=section)


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

    kind: str = _f("process", "'process' (a local process pool), 'thread', or 'inline' (no pool)")
    workers: int = _f(2, "pool size for 'process'/'thread'; ignored when `address` is set")
    address: str = _f("", "a dask.distributed scheduler address (tcp://host:8786); empty = local pool")

    def __post_init__(self) -> None:
        if self.kind not in ("process", "thread", "inline"):
            raise ValueError(f"executor.kind must be 'process', 'thread' or 'inline', not {self.kind!r}")
        if self.workers < 1:
            raise ValueError("executor.workers must be at least 1")


# ---------------------------------------------------------------------------------------
# Stage configs (one per stage; later stages add theirs below)
# ---------------------------------------------------------------------------------------


@dataclass
class TasksConfig:
    """`tasks` stage: generate and validate STAGE tasks."""

    seed: int = _f(0, "master seed; every task's own seed derives from it")
    families: list[str] = _f([], "task families to generate; empty = all registered families")
    n_train_per_family: int = _f(25, "kept train tasks per family")
    n_test_per_family: int = _f(12, "kept test tasks per family")
    train_profiles: list[str] = _f(["default"], "workspace profiles the train split is drawn under")
    test_profiles: list[str] = _f(["default"], "workspace profiles the test split is drawn under")
    max_steps: int = _f(15, "step limit of every generated task")
    random_probes: int = _f(3, "random-policy episodes a task must survive unsolved to be kept")
    max_attempts_factor: int = _f(4, "give up on a family after this many x the wanted tasks")

    def __post_init__(self) -> None:
        if self.n_train_per_family < 0 or self.n_test_per_family < 0:
            raise ValueError("n_train_per_family and n_test_per_family must be >= 0")
        if self.max_steps < 2:
            raise ValueError("max_steps must be at least 2 (one action and finish)")


@dataclass
class CollectConfig:
    """`collect` stage: run named policies on tasks and record gated trajectories."""

    policies: list[str] = _f(["oracle", "random"], "entries of `policies:` that `collect@<name>` runs")
    splits: list[str] = _f(["train", "test"], "task splits to run")
    k: int = _f(1, "episodes per task (a group); >1 needs a sampling policy")
    seed: int = _f(0, "rollout seed")
    batch_size: int = _f(64, "episodes advanced together per shard")
    executor: ExecutorConfig = _f(ExecutorConfig, "where shards run")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("collect.k must be at least 1")


@dataclass
class EvaluateConfig:
    """`evaluate` stage: benchmark every policy's trajectories on the test split."""

    split: str = _f("test", "which split the benchmark reports")
    policies: list[str] = _f(["oracle", "random"], "trajectory folders under data/trajectories to compare")


@dataclass
class PolicyEntry:
    """One named policy under `policies:` in params.yaml (what `collect <name>` runs)."""

    kind: str = _f("oracle", "oracle | random | hf | openai")
    kwargs: dict[str, Any] = _f({}, "keyword arguments of the policy's constructor")

    def __post_init__(self) -> None:
        if self.kind not in ("oracle", "random", "hf", "openai"):
            raise ValueError(f"policy kind must be oracle, random, hf or openai, not {self.kind!r}")


def load_policy(name: str, params: dict[str, Any] | None = None) -> PolicyEntry:
    params = read_params() if params is None else params
    table = params.get("policies") or {}
    if name not in table:
        raise ConfigError(f"policies.{name}: not defined in params.yaml; defined: {sorted(table)}")
    return from_dict(PolicyEntry, table[name], where=f"policies.{name}")
