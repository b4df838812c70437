"""The environment protocol (design section 3) and the name -> constructor table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from distillery.types import StepResult, Task, Verification


@runtime_checkable
class Environment(Protocol):
    """A real, sandboxed environment that one episode runs in.

    `reset` builds the task's initial state from scratch and returns the first observation;
    `step` takes raw action text and never raises for a bad action (the observation says what
    was wrong); `verify` reads the final state back and scores the task's declarative checks.
    """

    name: str

    def reset(self, task: Task) -> str: ...

    def step(self, action_text: str) -> StepResult: ...

    def verify(self) -> Verification: ...

    def state_hash(self) -> str: ...

    def close(self) -> None: ...


def make_env(name: str, **kwargs: Any) -> Environment:
    """Build an environment by name. Imports lazily so a worker loads only what it runs."""
    if name == "stage":
        from distillery.envs.stage import StageEnv

        return StageEnv(**kwargs)
    raise ValueError(f"unknown environment {name!r}; known: 'stage'")


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


def tool_specs(env_name: str) -> list[ToolSpec]:
    """The tools of an environment, without building one."""
    if env_name == "stage":
        from distillery.envs.stage.tools import TOOL_SPECS

        return list(TOOL_SPECS)
    raise ValueError(f"unknown environment {env_name!r}; known: 'stage'")
