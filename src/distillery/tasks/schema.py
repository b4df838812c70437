"""The draft format: the JSON a model writes when it drafts a task from a hint.

A draft is the part of a `Task` a model authors (`DRAFT_FIELDS`); the drafting loop sets
every other field (`LOOP_FIELDS`: ids, family, split, profile, hint, seed, step limit). Its
JSON Schema is generated from those fields and the environment's declared vocabularies
(`EnvSpec.draft_format`: the state schema and one schema per check type) and its tools
(`EnvSpec.tools`: one call schema per tool). `draft_schema(env)` is the published schema;
`structure_problems(obj, env)` checks a parsed draft part by part, so each problem comes
back as a `Reason` that names the field and says what is wrong, in words a model can act on.

Nothing here runs anything a draft contains: it is JSON checked against JSON Schemas.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

from distillery.envs.base import PATH_FORMAT, DraftFormat, ToolSpec, env_spec
from distillery.types import Task

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_INSTRUCTION_CHARS = 1_000
MAX_SOLUTION_CALLS = 30
MAX_CHECKS = 30
MAX_ARG_CHARS = 20_000
MAX_REASONS = 8               # problems reported per draft (a model fixes the first ones first)


@dataclass(frozen=True)
class Reason:
    """Why a draft was rejected: a kind from `types.DRAFT_REASON_KINDS` and the words."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


# The Task fields a draft writes, with what the published schema says about each.
DRAFT_FIELDS: dict[str, str] = {
    "instruction": "what the user asks, as the user would say it; it does not spell out the solution",
    "initial_state": "the environment's state before the agent acts",
    "reference_solution": "tool calls that do the task, in order",
    "checks": "declarative checks over the final state: all pass after the reference solution, "
              "at least one fails on the untouched state",
    "preferences": "standing preferences of the user that the checks enforce and the instruction "
                   "does not state",
}
REQUIRED_FIELDS: tuple[str, ...] = ("instruction", "initial_state", "reference_solution", "checks")
LOOP_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task) if f.name not in DRAFT_FIELDS)


def draft_of(task: Task) -> dict[str, Any]:
    """The draft a task was (or could have been) written as: its `DRAFT_FIELDS`."""
    return {"instruction": task.instruction, "initial_state": task.initial_state,
            "reference_solution": [c.to_dict() for c in task.reference_solution], "checks": task.checks,
            "preferences": list(task.preferences)}


def draft_format(env: str) -> DraftFormat:
    """The environment's draft vocabularies, or ValueError saying it declares none."""
    fmt = env_spec(env).draft_format
    if fmt is None:
        raise ValueError(f"environment {env!r} declares no draft format (EnvSpec.draft_format): "
                         "tasks cannot be drafted from hints for it")
    return fmt


def sandbox_path_problem(path: Any) -> str:
    """Why `path` could reach outside an episode's sandbox, or "" when it cannot."""
    if not isinstance(path, str):
        return "is not text"
    if not path.strip():
        return "is empty"
    if path != path.strip():
        return "has spaces at its ends"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "contains a control character"
    if path.startswith(("/", "~")):
        return "is absolute; paths are relative to the home folder"
    if "\\" in path:
        return "contains a backslash; separate folders with '/'"
    if len(path) > 1 and path[1] == ":":
        return "names a drive; paths are relative to the home folder"
    if ".." in path.split("/"):
        return "climbs out of the home folder with '..'"
    return ""


def tool_call_schema(spec: ToolSpec) -> dict[str, Any]:
    """One reference-solution call of `spec`: {"tool": name, "args": {...}}."""
    props: dict[str, Any] = {}
    for p in spec.params:
        if p.type == "integer":
            props[p.name] = {"type": "integer", "description": p.description}
        else:
            props[p.name] = {"type": "string", "maxLength": MAX_ARG_CHARS, "description": p.description}
            if p.kind in ("path", "folder"):
                props[p.name]["format"] = PATH_FORMAT
    return {
        "type": "object",
        "description": f"{spec.signature()}: {spec.description}",
        "properties": {
            "tool": {"const": spec.name},
            "args": {"type": "object", "properties": props, "required": [p.name for p in spec.params if p.required],
                     "additionalProperties": False},
        },
        "required": ["tool"],
        "additionalProperties": False,
    }


def _field_schemas(env: str) -> dict[str, dict[str, Any]]:
    fmt = draft_format(env)
    specs = env_spec(env).tools
    return {
        "instruction": {"type": "string", "minLength": 1, "maxLength": MAX_INSTRUCTION_CHARS},
        "initial_state": fmt.state_schema,
        "reference_solution": {"type": "array", "minItems": 1, "maxItems": MAX_SOLUTION_CALLS,
                               "items": {"oneOf": [tool_call_schema(s) for s in specs]}},
        "checks": {"type": "array", "minItems": 1, "maxItems": MAX_CHECKS,
                   "items": {"oneOf": list(fmt.check_schemas.values())}},
        "preferences": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 300}},
    }


def draft_schema(env: str) -> dict[str, Any]:
    """The published JSON Schema of a draft for environment `env`."""
    fmt = draft_format(env)
    fields = _field_schemas(env)
    props = {name: {**fields[name], "description": DRAFT_FIELDS[name]} for name in DRAFT_FIELDS}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"A task draft for the {env!r} environment",
        "description": (f"Data only: nothing in it is executed. The drafting loop sets {', '.join(LOOP_FIELDS)}. "
                        f"Every draft carries the check(s) {', '.join(fmt.required_checks) or '(none)'}; paths "
                        f"have format {PATH_FORMAT!r}: relative to the home folder, no '..', not absolute."),
        "type": "object",
        "properties": props,
        "required": list(REQUIRED_FIELDS),
        "additionalProperties": False,
    }


# ---------------------------------------------------------------------------------------
# Checking a parsed draft, part by part
# ---------------------------------------------------------------------------------------


@functools.cache
def _format_checker() -> Any:
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    checker.checks(PATH_FORMAT)(lambda value: not isinstance(value, str) or not sandbox_path_problem(value))
    return checker


@functools.lru_cache(maxsize=256)
def _cached_validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json), format_checker=_format_checker())


def draft_validator(env: str) -> Any:
    """A `jsonschema` validator of the published schema, paths checked (its `sandbox-path`
    format), for tools that take the schema as a whole."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(draft_schema(env), format_checker=_format_checker())


def _where(prefix: str, path: Any) -> str:
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if str(part).isidentifier() else f"[{part!r}]")
    return out


_SIZE_VALIDATORS = {"maxLength", "maxItems", "maxProperties"}


def schema_problems(value: Any, schema: dict[str, Any], where: str) -> list[Reason]:
    """`value` against `schema`: one Reason per violation (outside_sandbox for a path that
    could leave the sandbox, oversized for a length or count over its bound, else schema)."""
    validator = _cached_validator(json.dumps(schema, sort_keys=True))
    out = []
    for err in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]):
        at = _where(where, err.absolute_path)
        if err.validator == "format" and err.validator_value == PATH_FORMAT:
            out.append(Reason("outside_sandbox", f"{at}: path {str(err.instance)[:80]!r} "
                                                 f"{sandbox_path_problem(err.instance)}"))
        elif err.validator in _SIZE_VALIDATORS:
            limit = err.validator_value
            out.append(Reason("oversized", f"{at}: over the limit of {limit} "
                                           f"{'characters' if err.validator == 'maxLength' else 'items'}"))
        else:
            out.append(Reason("schema", f"{at}: {_short(err.message)}"))
    return out


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + " …"


def structure_problems(obj: Any, env: str) -> list[Reason]:
    """Every way the parsed draft `obj` departs from the environment's draft format.

    Checked part by part (fields, then each call against its tool's schema and each check
    against its type's schema), so an unknown check type or tool is named as such rather
    than drowned in the alternatives of a combined schema.
    """
    if not isinstance(obj, dict):
        return [Reason("schema", f"the draft must be a JSON object, not {type(obj).__name__}")]
    fmt = draft_format(env)
    fields = _field_schemas(env)
    out: list[Reason] = []
    unknown = sorted(set(obj) - set(DRAFT_FIELDS))
    if unknown:
        out.append(Reason("schema", f"unknown field(s) {unknown[:5]}; a draft has {', '.join(DRAFT_FIELDS)}"))
    missing = [f for f in REQUIRED_FIELDS if f not in obj]
    if missing:
        out.append(Reason("schema", f"missing field(s) {missing}"))
    for name in ("instruction", "initial_state", "preferences"):
        if name in obj:
            out += schema_problems(obj[name], fields[name], name)
    tools = {s.name: s for s in env_spec(env).tools}
    out += _items(obj.get("reference_solution"), "reference_solution", "tool", fields["reference_solution"],
                  {n: tool_call_schema(s) for n, s in tools.items()}, "unknown_tool", "tool")
    out += _items(obj.get("checks"), "checks", "type", fields["checks"], fmt.check_schemas, "unknown_check",
                  "check type")
    if isinstance(obj.get("checks"), list):
        present = {c.get("type") for c in obj["checks"] if isinstance(c, dict)}
        for required in fmt.required_checks:
            if required not in present:
                out.append(Reason("missing_check", f"checks: every {env} task carries a {required!r} check "
                                                   f"({fmt.check_schemas[required].get('description', '')})"))
    return out


def _items(items: Any, field: str, key: str, list_schema: dict[str, Any], by_name: dict[str, dict[str, Any]],
           unknown_kind: str, what: str) -> list[Reason]:
    if items is None:
        return []
    bounds = {k: v for k, v in list_schema.items() if k != "items"}
    out = schema_problems(items, bounds, field)
    if not isinstance(items, list):
        return out
    for i, item in enumerate(items[: list_schema.get("maxItems", len(items))]):
        at = f"{field}[{i}]"
        name = item.get(key) if isinstance(item, dict) else None
        if not isinstance(name, str):
            out.append(Reason("schema", f"{at}: an object with a {key!r} string is expected"))
        elif name not in by_name:
            out.append(Reason(unknown_kind, f"{at}: unknown {what} {_short(name, 60)!r}; "
                                            f"known: {', '.join(by_name)}"))
        else:
            out += schema_problems(item, by_name[name], at)
    return out
