"""What an environment tells the experience miner: how lessons about its tools read, and
what its failed checks say.

The rules miner (`distillery.mining.rules`) finds regularities in successful calls: one
aspect of one tool argument that always takes the same value, e.g. the last line of
`send_mail`'s body ("send_mail.body last_line"). An environment's `Phrasebook` words such a
lesson as its users word their preferences, and says which tools a failed check is about
and which value it wanted, so that failures teach too. It is data (and two parsers), offered
through `EnvSpec.phrasebook`; the miner, which sits above the environments, reads it there.
An environment without one gets the miner's neutral wording and no check-based corrections.

A game's failed check can say more than a value: which calls the episode still needed (the
rest of a gold path). `missing_calls` reads them from the check's name; the miner counts
each as a call the task wanted, with the failure as the contrast where it made no such call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from distillery.types import ToolCall

# How a check that states an exact value names the call it is about, and which of its keys
# gives which argument of that call: (match, {check key: call argument}). `match` is either a
# key the check and the call share (the same mail id, email, date...), or "basename": the
# file the check's `path` names has the same name as the call's argument that `path` maps to.
CheckArgs = tuple[str, Mapping[str, str]]
BASENAME = "basename"


def no_check_names(name: str) -> None:
    """A check-name parser for an environment whose check names say nothing readable."""
    return None


def no_missing_calls(name: str) -> list[ToolCall]:
    """For an environment whose failed checks name no calls still needed."""
    return []


@dataclass(frozen=True)
class Phrasebook:
    """An environment's words for mined lessons and its knowledge of its own checks.

    A phrase is a sentence template: ``{value}`` is the regularity's value, ``{tool}`` and
    ``{arg}`` may name the tool and its argument. Aspects are those the miner finds
    (`distillery.mining.rules.GENERIC_PHRASES` lists them with their neutral wording).
    """

    # (tool, argument, aspect) -> phrase.
    phrases: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    # (family, tool, argument, aspect) -> phrase: a task family's own words, looked up first.
    family_phrases: Mapping[tuple[str, str, str, str], str] = field(default_factory=dict)
    # check type -> the tools a failed check of that type speaks about.
    check_tools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # check type -> tool -> what a failed check of that type says that tool's call should
    # have been (only checks that state an exact value).
    check_args: Mapping[str, Mapping[str, CheckArgs]] = field(default_factory=dict)
    # A failed check's name as the environment reports it -> (check type, {key: value}),
    # or None when the name does not read that way.
    parse_check: Callable[[str], tuple[str, dict[str, str]] | None] = no_check_names
    # A failed check's name -> the calls it says the episode still needed, in order (e.g. the
    # gold commands a game's failed `won` check names); [] when it names none.
    missing_calls: Callable[[str], list[ToolCall]] = no_missing_calls

    def phrase(self, family: str, tool: str, arg: str, aspect: str) -> str | None:
        """The family's phrase for the aspect, else the environment's, else None."""
        return self.family_phrases.get((family, tool, arg, aspect)) or self.phrases.get((tool, arg, aspect))

    def check_type(self, name: str) -> str | None:
        """The type of a failed check, from its name (None when the name is unreadable)."""
        parsed = self.parse_check(name)
        return parsed[0] if parsed is not None else None
