"""An append-only journal of finished episodes, so that an interrupted rollout resumes.

A benchmark against an endpoint can run for hours; a Ctrl-C, a dropped connection or a
killed process should cost the episodes in flight, not the ones already played. The journal
is a JSON-lines file: its first line describes the run (a fingerprint of everything that
decides its episodes, and a readable summary for messages), and every later line is one
finished episode with its steps and the policy's notes so far, written and flushed as the
episode ends. Reading it back keeps the lines before the first one that does not parse (the
line a kill cut short) and cuts the file there, so the next episode is appended cleanly.

An episode that ended in an error (an endpoint that timed out, an environment that raised)
is not counted as finished: a resumed run plays it again.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.types import Episode, Step

JOURNAL_FORMAT = 1


class JournalMismatch(ValueError):
    """A journal left by an interrupted run of other settings: resuming it would mix two runs."""


@dataclass
class JournalHeader:
    fingerprint: str           # a digest of what decides the episodes (policy, tasks, k, seed, ...)
    about: dict[str, Any]      # the same, readable: what a message shows

    def to_line(self) -> str:
        return json.dumps({"journal": JOURNAL_FORMAT, "fingerprint": self.fingerprint, "about": self.about})


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """How two runs' readable summaries differ, for a message: "k 3 there, 2 here; ..."."""
    keys = [k for k in ours if k in theirs] + [k for k in theirs if k not in ours] + \
        [k for k in ours if k not in theirs]
    missing = "(none)"
    said = [f"{k} {theirs.get(k, missing)} there, {ours.get(k, missing)} here"
            for k in keys if theirs.get(k, missing) != ours.get(k, missing)]
    return "; ".join(said) or "the same names and counts, but other task contents or model files"


@dataclass
class EpisodeJournal:
    """The journal at `path` for the run `header` describes; `open_journal` makes one."""

    path: Path
    header: JournalHeader
    finished: dict[str, tuple[Episode, list[Step]]] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)   # the policy's notes up to the last line read
    dropped_tail: bool = False                             # a cut-short last line was removed
    on_disk: bool = False                                  # the header is written


    def record(self, episode: Episode, steps: list[Step], notes: dict[str, int] | None = None) -> None:
        """Append one finished episode (and the policy's notes so far, added to those read) and
        flush it, so that a kill after this call loses nothing of it."""
        line = {"episode": episode.to_row(), "steps": [s.to_row() for s in steps],
                "notes": dict(self.notes + Counter(notes or {}))}
        if not self.on_disk:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(self.header.to_line() + "\n", encoding="utf-8")
            self.on_disk = True
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
        if episode.failure_mode != "error":
            self.finished[episode.episode_id] = (episode, list(steps))

    def remove(self) -> None:
        """Forget the journal: the run it recorded has been written out whole."""
        self.path.unlink(missing_ok=True)


def open_journal(path: str | Path, header: JournalHeader, *, resume: bool = True) -> EpisodeJournal:
    """The journal at `path`: its finished episodes when it records the run `header` describes
    and `resume` is true, else a new one, written from its first episode on (an existing
    journal is discarded only when `resume` is false). Raises JournalMismatch, naming both
    runs, for a journal of other settings."""
    path = Path(path)
    if resume and path.exists():
        journal = _read(path, header)
        if journal is not None:
            return journal
    path.unlink(missing_ok=True)
    return EpisodeJournal(path, header)


def _read(path: Path, header: JournalHeader) -> EpisodeJournal | None:
    """The journal's episodes, or None when the file holds no header (an empty or unreadable
    first line: nothing to resume)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    first = _parse(lines[0])
    if not isinstance(first, dict) or first.get("journal") != JOURNAL_FORMAT or "fingerprint" not in first:
        return None
    if first["fingerprint"] != header.fingerprint:
        recorded = sum(1 for line in lines[1:] if line.strip())
        raise JournalMismatch(
            f"{path}: holds {recorded} episodes of an interrupted run with other settings "
            f"({differences(first.get('about') or {}, header.about)})")
    journal = EpisodeJournal(path, header, on_disk=True)
    good = len(lines[0]) + 1
    # The last element is what follows the final newline: empty, or a line a kill cut short.
    for raw in lines[1:-1]:
        record = _parse(raw)
        try:
            episode = Episode(**record["episode"])
            steps = [Step(**s) for s in record["steps"]]
            notes = Counter({str(k): int(v) for k, v in record.get("notes", {}).items()})
        except (TypeError, KeyError, ValueError, AttributeError):
            break
        journal.notes = notes
        if episode.failure_mode == "error":
            journal.finished.pop(episode.episode_id, None)
        else:
            journal.finished[episode.episode_id] = (episode, steps)
        good += len(raw) + 1
    if good < len(data):
        journal.dropped_tail = True
        with path.open("r+b") as f:
            f.truncate(good)
    return journal


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:      # not JSON, not UTF-8, or a number too long to convert
        return None
