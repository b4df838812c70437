"""STAGE: a personal-computing environment (files on disk; mail, calendar and contacts in
SQLite) with generated, validated, state-checked tasks. See env.py, families.py.

`ENV` is what the `stage` entry point of `distillery.envs` registers."""

from __future__ import annotations

from typing import Any

from distillery.envs.base import EnvSpec
from distillery.envs.stage.drafting import DRAFT_FORMAT
from distillery.envs.stage.env import StageEnv
from distillery.envs.stage.phrasebook import PHRASEBOOK
from distillery.envs.stage.profiles import get_profile, vocabulary_text
from distillery.envs.stage.tools import TOOL_SPECS

DESCRIPTION = "You operate a user's personal computer (files, mail, calendar, contacts) through tools."


def state_texts(state: dict[str, Any]) -> list[str]:
    """The text of an initial state a model reads: file names and contents, mail, contacts, events."""
    texts: list[str] = []
    texts.extend(state.get("files", {}).keys())
    texts.extend(state.get("files", {}).values())
    for m in state.get("mail", []):
        texts.append(f"{m['id']} {m['sender']} {m['subject']} {m['body']}")
        texts.extend(a["name"] for a in m.get("attachments", []))
    for c in state.get("contacts", []):
        texts.append(f"{c['name']} {c['email']} {c.get('phone', '')} {c.get('company', '')}")
    for e in state.get("events", []):
        texts.append(f"{e['date']} {e['start']} {e['title']} {' '.join(e.get('attendees', []))}")
    return texts


def check_profile(name: str) -> None:
    get_profile(name)


ENV = EnvSpec(
    name="stage", factory=StageEnv, tools=tuple(TOOL_SPECS), description=DESCRIPTION,
    state_texts=state_texts, vocabulary=vocabulary_text, check_profile=check_profile,
    phrasebook=PHRASEBOOK, draft_format=DRAFT_FORMAT,
    reward_range=(0.0, 1.0),      # steps carry 0, the last one the episode's score
)

__all__ = ["ENV", "TOOL_SPECS", "StageEnv"]
