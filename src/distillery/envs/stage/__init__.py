"""STAGE: a personal-computing environment (files on disk; mail, calendar and contacts in
SQLite) with generated, validated, state-checked tasks. See env.py, families.py, generate.py."""

from distillery.envs.stage.env import StageEnv
from distillery.envs.stage.tools import TOOL_SPECS

__all__ = ["TOOL_SPECS", "StageEnv"]
