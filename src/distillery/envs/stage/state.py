"""The real state of one STAGE episode: a directory of files and a SQLite database.

`Workspace` owns both. It builds them from a task's `initial_state` (JSON data), answers the
tools' reads and writes, and reads everything back as a canonical `Snapshot` for
verification and hashing. Every path an agent names goes through `resolve()`, which refuses
anything that could leave the sandbox: absolute paths, `..`, symlinks pointing outside, text
that is not UTF-8, more components than any real folder has. `write_file` refuses to write
through anything that could reach outside all the same: a symlink, a file with a second hard
link, a file on another device, anything not a regular file. SQL always uses bound
parameters; search terms with SQL metacharacters are refused before that anyway, so the
agent is told why rather than silently matching nothing.

Reading back never trusts the disk either: names that are not UTF-8 are escaped, and only
regular files are read (a planted FIFO would block), so `snapshot()` and the state hash work
whatever is in the home folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE mail (
    id TEXT PRIMARY KEY, folder TEXT NOT NULL, sender TEXT NOT NULL, recipients TEXT NOT NULL,
    cc TEXT NOT NULL DEFAULT '', subject TEXT NOT NULL, body TEXT NOT NULL, date TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL
);
CREATE TABLE attachment (
    mail_id TEXT NOT NULL REFERENCES mail(id), name TEXT NOT NULL, content TEXT NOT NULL,
    PRIMARY KEY (mail_id, name)
);
CREATE TABLE event (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, date TEXT NOT NULL, start TEXT NOT NULL,
    duration INTEGER NOT NULL, attendees TEXT NOT NULL DEFAULT ''
);
CREATE TABLE contact (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT ''
);
"""


@functools.cache
def _empty_database() -> bytes:
    """The file image of a database with SCHEMA and no rows."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        return bytes(db.serialize())
    finally:
        db.close()


# A real home folder is a few levels deep; `Path.mkdir(parents=True)` recurses once per
# missing level, and ~1,000 would exhaust the interpreter's stack.
MAX_PATH_PARTS = 128
MAX_NAME_BYTES = 255    # NAME_MAX on Linux file systems: checked before any folder is made


class ToolError(Exception):
    """A bad action: the message is shown to the agent as the observation."""


def clean_text(text: str) -> str:
    """`text` itself if it is valid UTF-8, else with the undecodable parts as backslash escapes
    (a file name on disk need not be UTF-8: Python hands it over with surrogates)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:    # the bytes the name has on disk, shown as \xff escapes
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# The state's parts in sorted order: the digest is the JSON of the whole state with sorted keys.
_PARTS = ("contacts", "dirs", "events", "files", "mail")
_FILE_PARTS = ("dirs", "files")


@dataclass
class Snapshot:
    """The whole state, read back from disk and database, in canonical form. Only read, never
    changed: a later state shares the parts no tool changed (`with_files`, `with_records`)."""

    files: dict[str, str]
    mail: dict[str, dict[str, Any]]
    events: dict[str, dict[str, Any]]
    contacts: dict[str, dict[str, Any]]
    dirs: list[str] = field(default_factory=list)
    # Each part's JSON once encoded, taken over by the snapshots that share the part.
    _encoded: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def digest(self) -> str:
        # The text of json.dumps({...the five parts...}, sort_keys=True, ensure_ascii=False),
        # put together from each part's text.
        blob = "{" + ", ".join(f'"{k}": {self._json(k)}' for k in _PARTS) + "}"
        # surrogatepass: the same bytes as plain UTF-8 for any valid text, and no exception
        # for task data that is not.
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def _json(self, part: str) -> str:
        text = self._encoded.get(part)
        if text is None:
            text = self._encoded[part] = json.dumps(getattr(self, part), sort_keys=True, ensure_ascii=False)
        return text

    def with_files(self, files: dict[str, str], dirs: list[str]) -> Snapshot:
        """This state with the home folder's part read again."""
        return Snapshot(files, self.mail, self.events, self.contacts, dirs,
                        {k: v for k, v in self._encoded.items() if k not in _FILE_PARTS})

    def with_records(self, mail: dict[str, dict[str, Any]], events: dict[str, dict[str, Any]],
                     contacts: dict[str, dict[str, Any]]) -> Snapshot:
        """This state with the database's part read again."""
        return Snapshot(self.files, mail, events, contacts, self.dirs,
                        {k: v for k, v in self._encoded.items() if k in _FILE_PARTS})


def split_addresses(text: str) -> list[str]:
    return [a.strip().lower() for a in text.replace(";", ",").split(",") if a.strip()]


def _parts(rel: str) -> tuple[str, ...]:
    """The components of a path in a task's initial state, empty and '.' ones dropped."""
    parts = tuple(p for p in rel.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError(f"the initial state names the path '{rel}', which leaves the home folder")
    return parts


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (os.write may write less than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# O_NOFOLLOW: opening a folder that a symlink has replaced fails instead of entering it.
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_contents(folder_fd: int) -> None:
    """Remove everything in the open folder `folder_fd`, relative to it (`dir_fd`), so no path
    is looked up twice and no symlink followed: shutil.rmtree's way, without its extra stat
    calls, which O_NOFOLLOW makes redundant on Linux."""
    with os.scandir(folder_fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if is_dir:
            fd = os.open(name, _FOLDER_FLAGS, dir_fd=folder_fd)
            try:
                _remove_contents(fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=folder_fd)
        else:
            os.unlink(name, dir_fd=folder_fd)


@dataclass(frozen=True)
class BuildPlan:
    """An initial state worked out once, so that building it again (every reset of the same
    task) is only the writes: the folders to make, parents first; each file's bytes; and the
    database's rows. Made by `plan_build`; building a plan is the same as building its state."""

    folders: tuple[tuple[str, ...], ...]
    files: tuple[tuple[tuple[str, ...], bytes], ...]
    mail: list[tuple[Any, ...]]
    attachments: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    contacts: list[tuple[Any, ...]]


def plan_build(state: dict[str, Any]) -> BuildPlan:
    """The plan of a task's `initial_state`; a malformed state fails here, before anything
    on disk changes."""
    files = tuple((_parts(rel), text.encode("utf-8")) for rel, text in state.get("files", {}).items())
    folders: set[tuple[str, ...]] = set()
    for parts in [_parts(d) for d in state.get("dirs", [])] + [f[:-1] for f, _ in files]:
        folders.update(parts[:i] for i in range(1, len(parts) + 1))
    mail = state.get("mail", [])
    return BuildPlan(
        folders=tuple(sorted(folders)),      # a folder's parents sort before it
        files=files,
        mail=[(m["id"], m.get("folder", "inbox"), m["sender"], m.get("to", ""), m.get("cc", ""),
               m["subject"], m["body"], m["date"], int(bool(m.get("read", False))), i)
              for i, m in enumerate(mail)],
        attachments=[(m["id"], a["name"], a["content"]) for m in mail for a in m.get("attachments", [])],
        events=[(e["id"], e["title"], e["date"], e["start"], int(e["duration"]),
                 ", ".join(e.get("attendees", []))) for e in state.get("events", [])],
        contacts=[(c.get("id", f"c{i + 1}"), c["name"], c["email"], c.get("phone", ""),
                   c.get("company", "")) for i, c in enumerate(state.get("contacts", []))],
    )


class Workspace:
    """Files under `root/home`, mail/calendar/contacts in `root/state.sqlite`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.db_path = root / "state.sqlite"
        self.db: sqlite3.Connection | None = None
        self._home_real = ""
        self._home_dev = -1

    # ---- building -------------------------------------------------------------------

    def build(self, plan: BuildPlan) -> None:
        """Replace whatever was here with the state `plan` was made from (`plan_build`)."""
        self._empty_home()
        home = str(self.home)
        join = os.path.join
        for parts in plan.folders:
            os.mkdir(join(home, *parts))
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        for parts, data in plan.files:
            fd = os.open(join(home, *parts), flags, 0o666)     # open(..., "w")'s mode
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        new = self.db is None
        db = self._open_db() if new else self.db
        self.db = None      # until the new state is in: a failed build leaves no half state
        db.execute("BEGIN")
        try:
            # The tools only ever write rows through bound parameters, never the schema:
            # emptying the tables gives the same database as a new file, without re-parsing
            # the schema.
            if not new:
                for table in ("attachment", "mail", "event", "contact"):
                    db.execute(f"DELETE FROM {table}")
            db.executemany("INSERT INTO mail VALUES (?,?,?,?,?,?,?,?,?,?)", plan.mail)
            db.executemany("INSERT INTO attachment VALUES (?,?,?)", plan.attachments)
            db.executemany("INSERT INTO event VALUES (?,?,?,?,?,?)", plan.events)
            db.executemany("INSERT INTO contact VALUES (?,?,?,?,?)", plan.contacts)
        except BaseException:
            # journal_mode=OFF leaves ROLLBACK undefined: drop the file, the next build makes a new one.
            db.close()
            raise
        db.execute("COMMIT")
        self.db = db

    def _empty_home(self) -> None:
        """Leave the home folder empty: the folder kept, everything in it removed, no symlink
        followed (a link is removed, never what it points at)."""
        if self.home.is_symlink():
            self.home.unlink()
        elif self.home.is_dir():
            try:
                fd = os.open(self.home, _FOLDER_FLAGS)
                try:
                    _remove_contents(fd)
                finally:
                    os.close(fd)
                return
            except OSError:     # what the short way cannot remove, shutil.rmtree tries and names
                shutil.rmtree(self.home)
        os.makedirs(self.home)
        self._home_real = os.path.realpath(self.home)
        self._home_dev = os.stat(self.home).st_dev

    def _open_db(self) -> sqlite3.Connection:
        """A new database with the schema and no rows, written as a copy of one made once
        per process (writing its 36 KB took 0.28 ms where executing the schema took 0.73;
        a rollout opens one per episode)."""
        if self.db_path.exists():
            self.db_path.unlink()
        fd = os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, _empty_database())
        finally:
            os.close(fd)
        # A per-episode scratch database: durability buys nothing, speed matters.
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        return db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    # ---- paths ----------------------------------------------------------------------

    def resolve(self, rel: str, *, must_exist: bool = False) -> Path:
        """The real path of `rel` inside the sandbox, or ToolError saying why not."""
        if not isinstance(rel, str):
            raise ToolError("a path must be text")
        if clean_text(rel) != rel:
            raise ToolError(f"the path '{clean_text(rel)}' is not valid UTF-8 text")
        rel = rel.strip()
        if rel in ("", ".", "./", "~", "~/"):
            return self.home
        if "\x00" in rel:
            raise ToolError("path contains a NUL byte")
        if rel.startswith(("/", "\\", "~")) or (len(rel) > 1 and rel[1] == ":"):
            raise ToolError(f"'{rel}' is an absolute path; paths are relative to the home folder")
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ToolError(f"'{rel}' leaves the home folder ('..' is not allowed)")
        if len(parts) > MAX_PATH_PARTS:
            raise ToolError(f"the path has {len(parts)} components; at most {MAX_PATH_PARTS} are allowed")
        for part in parts:
            if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise ToolError(f"the name '{part[:40]}...' is longer than the {MAX_NAME_BYTES} bytes "
                                "a file or folder name may have")
        path = self.home.joinpath(*parts)
        # realpath follows every symlink on the way: a link inside the sandbox that points
        # outside it is caught here, whatever component it sits at.
        real = os.path.realpath(path)
        if real != self._home_real and not real.startswith(self._home_real + os.sep):
            raise ToolError(f"'{rel}' points outside the home folder")
        if must_exist and not path.exists():
            raise ToolError(f"no such file or folder: {rel}")
        return path

    def rel(self, path: Path) -> str:
        return path.relative_to(self.home).as_posix()

    def own_file(self, path: Path) -> bool:
        """Whether the file at `path` (followed, as reading follows it) is the sandbox's
        alone: one link, on the home folder's device. A hard link planted in the home would
        otherwise hand out (or take in) a file that lives outside it."""
        st = path.stat()
        return st.st_nlink == 1 and st.st_dev == self._home_dev

    def write_file(self, path: Path, data: bytes) -> None:
        """Write `data` as the whole content of the file at `path`, refusing anything that
        could reach outside the sandbox. Nothing is truncated until every check passed; a
        file this call created is removed again if a check fails."""
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        created = True
        try:
            # O_NOFOLLOW: never through a symlink; O_NONBLOCK: a FIFO without a reader
            # fails instead of blocking (a regular file ignores it).
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            created = False
            fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            problem = ""
            if not stat.S_ISREG(st.st_mode):
                problem = "is not a regular file"
            elif st.st_nlink > 1:
                problem = f"has {st.st_nlink} hard links; refusing to write through a shared file"
            elif st.st_dev != self._home_dev:
                problem = "is on another device than the home folder; refusing to write to it"
            if problem:
                if created:
                    os.unlink(path)
                raise ToolError(f"{self.rel(path)} {problem}")
            os.ftruncate(fd, 0)
            _write_all(fd, data)
        finally:
            os.close(fd)

    # ---- reading back ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        files, dirs = self.read_files()
        mail, events, contacts = self.read_records()
        return Snapshot(files, mail, events, contacts, dirs)

    def read_files(self) -> tuple[dict[str, str], list[str]]:
        """The home folder read back: (every file's text by path, the empty folders)."""
        files: dict[str, str] = {}
        dirs: list[str] = []
        try:
            self._read_tree(str(self.home), "", files, dirs)
        except OSError:     # the home folder itself unreadable: an empty tree, as os.walk says
            pass
        return files, sorted(dirs)

    def read_records(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The database read back: (mail, events, contacts), each by id."""
        assert self.db is not None
        mail = {}
        for row in self.db.execute(
                "SELECT id, folder, sender, recipients, cc, subject, body, date, read FROM mail ORDER BY seq"):
            mid, folder, sender, to, cc, subject, body, date, read = row
            mail[mid] = {"folder": folder, "sender": sender, "to": to, "cc": cc, "subject": subject,
                         "body": body, "date": date, "read": bool(read)}
        for mid, name, content in self.db.execute("SELECT mail_id, name, content FROM attachment ORDER BY mail_id, name"):
            mail[mid].setdefault("attachments", {})[name] = content
        events = {
            r[0]: {"title": r[1], "date": r[2], "start": r[3], "duration": r[4], "attendees": r[5]}
            for r in self.db.execute("SELECT id, title, date, start, duration, attendees FROM event ORDER BY id")
        }
        contacts = {
            r[0]: {"name": r[1], "email": r[2], "phone": r[3], "company": r[4]}
            for r in self.db.execute("SELECT id, name, email, phone, company FROM contact ORDER BY id")
        }
        return mail, events, contacts

    def _read_tree(self, path: str, prefix: str, files: dict[str, str], dirs: list[str]) -> None:
        """`os.walk`'s view of the tree under `path` (symlinked folders listed, not entered;
        a folder with nothing in it recorded in `dirs`), read with `os.scandir` and plain
        strings: the state is read back after every change, so this is the environment's
        hot loop."""
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry)
                continue
            name = clean_text(prefix + entry.name)
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    files[name] = "<symlink>"
                elif not stat.S_ISREG(mode):
                    files[name] = "<not a regular file>"      # a FIFO would block a read
                else:
                    with open(entry.path, "rb") as f:
                        files[name] = f.read().decode("utf-8", errors="replace")
            except OSError as e:    # vanished or unreadable: the state says so
                files[name] = f"<unreadable: {e.strerror or e}>"
        if not entries and prefix:
            dirs.append(clean_text(prefix[:-1]))
        for entry in subdirs:
            if entry.is_symlink():
                continue
            try:
                self._read_tree(entry.path, prefix + entry.name + "/", files, dirs)
            except OSError:     # vanished or unreadable between listing and reading
                pass
