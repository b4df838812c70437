"""An append-only journal of a long run's finished pieces, so that an interrupted run resumes.

A benchmark against an endpoint, or a batch of task drafts, can run for hours; a Ctrl-C, a
dropped connection or a killed process should cost the piece in flight, not the ones done.
The journal is a JSON-lines file: its first line describes the run (a fingerprint of
everything that decides its results, and a readable summary for messages), and every later
line is one finished piece (an episode with its steps, a draft with its attempts), written
and flushed as it ends. Reading it back keeps the lines before the first one that does not
parse (the line a kill cut short) and cuts the file there, so the next piece is appended
cleanly. What a piece is, and how its line reads back, is the caller's: `parse`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

JOURNAL_FORMAT = 1
T = TypeVar("T")
K = TypeVar("K")


class JournalMismatch(ValueError):
    """A journal left by an interrupted run of other settings: resuming it would mix two runs."""


@dataclass
class JournalHeader:
    fingerprint: str           # a digest of what decides the results
    about: dict[str, Any]      # the same, readable: what a message shows

    @classmethod
    def of(cls, settings: dict[str, Any], about: dict[str, Any]) -> JournalHeader:
        """The header of a run decided by `settings` (anything JSON can write, `repr` for the rest)."""
        text = json.dumps(settings, sort_keys=True, default=repr)
        return cls(hashlib.sha256(text.encode()).hexdigest(), about)

    def to_line(self) -> str:
        return json.dumps({"journal": JOURNAL_FORMAT, "fingerprint": self.fingerprint, "about": self.about})


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """How two runs' readable summaries differ, for a message: "k 3 there, 2 here; ..."."""
    keys = [k for k in ours if k in theirs] + [k for k in theirs if k not in ours] + \
        [k for k in ours if k not in theirs]
    missing = "(none)"
    said = [f"{k} {theirs.get(k, missing)} there, {ours.get(k, missing)} here"
            for k in keys if theirs.get(k, missing) != ours.get(k, missing)]
    return "; ".join(said) or "the same names and counts, but other contents (tasks, hints or model files)"


class Journal(Generic[T]):
    """The journal at `path` of the run `header` describes; `open_journal` makes one. Its
    `records` are the lines read back and appended, each as `parse` made it."""

    def __init__(self, path: Path, header: JournalHeader, parse: Callable[[dict[str, Any]], T],
                 what: str = "records") -> None:
        self.path, self.header, self.parse, self.what = path, header, parse, what
        self.records: list[T] = []
        self.dropped_tail = False    # a line cut short was removed
        self.unreadable = 0          # whole lines that could not be read back (skipped)
        self.on_disk = False         # the header is written

    def append(self, line: dict[str, Any]) -> T:
        """Write one finished piece and flush it, so that a kill after this call loses nothing
        of it; the file (and its header) is made with the first piece."""
        record = self.parse(line)
        if not self.on_disk:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(self.header.to_line() + "\n", encoding="utf-8")
            self.on_disk = True
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
        self.records.append(record)
        return record

    @property
    def damaged(self) -> bool:
        """Something of the file was not read back: a user should be told, even if nothing was."""
        return self.dropped_tail or self.unreadable > 0

    def resuming(self, count: int) -> str:
        """The sentence that tells a user a run resumes with `count` of its pieces done (0: none
        could be kept, said when the journal was `damaged`)."""
        losses = ["what followed its last whole line, cut short by the interruption, was dropped"] * self.dropped_tail
        if self.unreadable:
            losses.append(f"{self.unreadable} line{'s' * (self.unreadable > 1)} that could not be read "
                          f"{'were' if self.unreadable > 1 else 'was'} skipped")
        said = (f"resuming: {count} {self.what} of an interrupted run are kept from {self.path}" if count
                else f"{self.path}: no {self.what} of an interrupted run could be kept")
        return said + (f" ({'; '.join(losses)})" if losses else "")

    def remove(self) -> None:
        """Forget the journal: the run it recorded has been written out whole."""
        self.path.unlink(missing_ok=True)


def last_finished(records: Iterable[T], key: Callable[[T], K], errored: Callable[[T], bool]) -> dict[K, T]:
    """The records a resumed run keeps: the last of each key, unless that one ended in an error
    (done again)."""
    finished: dict[K, T] = {}
    for r in records:
        if errored(r):
            finished.pop(key(r), None)
        else:
            finished[key(r)] = r
    return finished


def open_journal(path: str | Path, header: JournalHeader, parse: Callable[[dict[str, Any]], T], *,
                 what: str = "records", resume: bool = True) -> Journal[T]:
    """The journal at `path`: its records when it belongs to the run `header` describes and
    `resume` is true, else a new one, written from its first record on (an existing journal is
    discarded only when `resume` is false, or when it has no header: nothing to resume);
    `what` names its pieces in messages.
    Raises JournalMismatch, naming how the runs differ, for a journal of other settings. A
    whole line that is not JSON or that `parse` refuses (a KeyError, TypeError or ValueError)
    is skipped and counted (`unreadable`), and the lines after it are read; a last line cut
    short is removed from the file."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: not a file, where the journal of an interrupted run is kept: move it away")
    journal = Journal(path, header, parse, what)
    if resume and path.exists() and _read(journal):
        return journal
    path.unlink(missing_ok=True)
    return journal


def _read(journal: Journal[Any]) -> bool:
    """Read the journal's file into it; False when the file holds no journal header."""
    data = journal.path.read_bytes()
    lines = data.split(b"\n")
    first = _parse_json(lines[0])
    if not isinstance(first, dict) or first.get("journal") != JOURNAL_FORMAT or "fingerprint" not in first:
        return False
    if first["fingerprint"] != journal.header.fingerprint:
        recorded = sum(1 for line in lines[1:] if line.strip())
        about = first.get("about")
        raise JournalMismatch(
            f"{journal.path}: holds {recorded} {journal.what} of an interrupted run with other settings "
            f"({differences(about if isinstance(about, dict) else {}, journal.header.about)})")
    # The last element is what follows the final newline: empty, or a line a kill cut short.
    for raw in lines[1:-1]:
        try:
            journal.records.append(journal.parse(_parse_json(raw)))
        except (TypeError, KeyError, ValueError, AttributeError):
            journal.unreadable += 1     # damaged by hand or by the disk: the lines after it are whole
    if lines[-1]:
        journal.dropped_tail = True
        with journal.path.open("r+b") as f:
            f.truncate(len(data) - len(lines[-1]))
    journal.on_disk = True
    return True


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:      # not JSON, not UTF-8, or a number too long to convert
        return None
