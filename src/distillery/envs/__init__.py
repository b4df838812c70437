"""Environments. `make_env(name)` and `tool_specs(name)` are the entry points."""

from distillery.envs.base import Environment, ToolParam, ToolSpec, make_env, tool_specs

__all__ = ["Environment", "ToolParam", "ToolSpec", "make_env", "tool_specs"]
