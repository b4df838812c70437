"""StageEnv: a personal-computing environment with real files and a real SQLite database.

One instance runs one episode at a time and is reused across episodes (reset rebuilds the
state from the task's data). A bad action — unparseable text, an unknown tool, a path that
leaves the sandbox, a search term with SQL metacharacters, an oversized payload, a missing
file, text that is not UTF-8, nesting beyond any real call, something that is not a string at
all — comes back as an observation that says what was wrong, with `valid=False`; nothing
raises and nothing outside the episode's directory and database changes. Arguments are
checked before state is touched, and a file is truncated only once its new content is
ready and every check on the file has passed.

The state (the files, and the database's rows) is read back after every change a tool makes,
only the part that tool changed, and the state hash and `verify` use that read-back: anything
that changes the sandbox other than through the tools must call `forget_state()`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from distillery.envs.actions import parse_action
from distillery.envs.stage.checks import verify_checks
from distillery.envs.stage.state import (
    BuildPlan,
    Snapshot,
    ToolError,
    Workspace,
    clean_text,
    plan_build,
    split_addresses,
)
from distillery.envs.stage.tools import TOOL_SPECS
from distillery.types import StepResult, Task, Verification

MAX_PAYLOAD_CHARS = 20_000      # file contents and mail bodies an agent may write
MAX_SHOWN_CHARS = 1_500         # longest file or mail text shown in one observation
INITIAL_CACHE_SIZE = 512       # tasks whose build plan and read-back initial state are kept (a few KB each)
MAX_LISTED = 40                 # most entries one listing or search shows
_SQL_META = re.compile(r"[;'\"\\%*]|--|/\*")
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):[0-5]\d$")
_FOLDER = re.compile(r"^[\w-]{1,40}$")


def default_sandbox_root() -> str:
    """Episodes live in RAM when /dev/shm is usable (much faster), else the temp dir."""
    env = os.environ.get("DISTILLERY_SANDBOX")
    if env:
        return env
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


class StageEnv:
    name = "stage"

    def __init__(self, root: str | None = None) -> None:
        base = Path(root or default_sandbox_root())
        base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="stage-", dir=base))
        self.ws = Workspace(self.root)
        self.task: Task | None = None
        self.initial: Snapshot | None = None
        self.today = ""
        self.user_email = ""
        # The state as last read back, and which of its two parts a tool has changed since:
        # only a changed part is read again (every change goes through a tool).
        self._state: Snapshot | None = None
        self._hash = ""
        self._files_stale = self._records_stale = True
        self._next_id = 0
        self._initial_cache: dict[str, tuple[dict[str, Any], BuildPlan, tuple[Snapshot, str, list[str]]]] = {}

    # ---- protocol -------------------------------------------------------------------

    def reset(self, task: Task) -> str:
        self.task = self._state = None      # a build that fails leaves no episode to step
        state = task.initial_state
        self._next_id = 1000
        self.initial, self._hash, top = self._build(task)
        self.task = task
        self._state = self.initial
        self._files_stale = self._records_stale = False
        user = state.get("user", {})
        self.today = state.get("today", "")
        self.user_email = user.get("email", "")
        return (f"Workspace of {user.get('name', 'the user')} <{self.user_email}>. "
                f"Today is {self.today}. Home folder: {' '.join(top) or '(empty)'}")

    def _build(self, task: Task) -> tuple[Snapshot, str, list[str]]:
        """Build the task's initial state; return it read back: (snapshot, its digest, the
        home's folders).

        Building is deterministic, so a task's plan and read-back are kept and reused when
        the same task (the same `initial_state` object: tasks are never modified) is reset
        again, as it is for every sample of a group. Snapshots are only read, never changed."""
        hit = self._initial_cache.get(task.task_id)
        if hit is not None:
            built_from, plan, value = hit
            if built_from is task.initial_state:
                self.ws.build(plan)
                return value
        plan = plan_build(task.initial_state)
        self.ws.build(plan)
        snap = self.ws.snapshot()
        with os.scandir(self.ws.home) as it:
            top = sorted(e.name + "/" for e in it if e.is_dir())
        value = (snap, snap.digest(), top)
        if len(self._initial_cache) >= INITIAL_CACHE_SIZE:
            self._initial_cache.clear()
        self._initial_cache[task.task_id] = (task.initial_state, plan, value)
        return value

    def step(self, action_text: str) -> StepResult:
        if self.task is None:
            return StepResult("No task: call reset first.", 0.0, True, valid=False, error="no task")
        parsed = parse_action(action_text, TOOL_SPECS)
        if not parsed.valid or parsed.call is None:
            return StepResult(f"Invalid action: {parsed.error}", 0.0, False, valid=False,
                              error=parsed.error, state_hash=self.state_hash())
        call = parsed.call
        args_json = json.dumps(call.args, ensure_ascii=False, sort_keys=True)
        if call.tool == "finish":
            return StepResult("Finished.", 0.0, True, tool="finish", args_json=args_json,
                              state_hash=self.state_hash())
        try:
            obs = getattr(self, f"_t_{call.tool}")(**call.args)
            valid, error = True, ""
        except ToolError as e:
            obs, valid, error = f"Error: {e}", False, str(e)
        except OSError as e:
            # The sandbox refused at the OS level (e.g. writing over a folder): say so.
            obs, valid, error = f"Error: {e.strerror or e}", False, str(e.strerror or e)
        return StepResult(obs, 0.0, False, tool=call.tool, args_json=args_json, valid=valid,
                          error=error, state_hash=self.state_hash())

    def verify(self) -> Verification:
        assert self.task is not None and self.initial is not None, "verify before reset"
        return verify_checks(self.task.checks, self.initial, self._read_back())

    def state_hash(self) -> str:
        self._read_back()
        return self._hash

    def forget_state(self) -> None:
        """Read the whole state back from disk and database next time: for whoever changes the
        sandbox other than through the tools (tests planting files, an operator)."""
        self._files_stale = self._records_stale = True

    def _read_back(self) -> Snapshot:
        """The state now: the last read-back, with the parts the tools changed read again."""
        last = self._state
        if last is not None and not (self._files_stale or self._records_stale):
            return last
        if last is None:
            state = self.ws.snapshot()
        else:
            state = last.with_files(*self.ws.read_files()) if self._files_stale else last
            state = state.with_records(*self.ws.read_records()) if self._records_stale else state
        self._state = state
        self._hash = state.digest()
        self._files_stale = self._records_stale = False
        return self._state

    def close(self) -> None:
        self.ws.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __del__(self) -> None:  # a forgotten env must not leave its sandbox behind
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to do
            pass

    # ---- helpers --------------------------------------------------------------------

    def _payload(self, name: str, text: str) -> str:
        if len(text) > MAX_PAYLOAD_CHARS:
            raise ToolError(f"{name} is {len(text)} characters; the limit is {MAX_PAYLOAD_CHARS}")
        return text

    def _new_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}{self._next_id}"

    def _mail_row(self, mail_id: str) -> tuple[Any, ...]:
        assert self.ws.db is not None
        row = self.ws.db.execute(
            "SELECT id, folder, sender, recipients, cc, subject, body, date FROM mail WHERE id = ?",
            (mail_id.strip(),)).fetchone()
        if row is None:
            raise ToolError(f"no mail with id '{mail_id}'; search_mail shows ids")
        return row

    @staticmethod
    def _terms(query: str, what: str) -> list[str]:
        if _SQL_META.search(query):
            raise ToolError(f"{what} may not contain quotes, ';', '%', '*', '\\\\' or comment markers")
        terms = [t for t in re.split(r"[\s,]+", query.lower()) if t]
        if not terms:
            raise ToolError(f"empty {what}")
        if len(query) > 200:
            raise ToolError(f"{what} is longer than 200 characters")
        return terms

    # ---- files ----------------------------------------------------------------------

    def _t_list_dir(self, path: str = ".") -> str:
        p = self.ws.resolve(path, must_exist=True)
        if not p.is_dir():
            raise ToolError(f"{path} is a file, not a folder")
        entries = sorted(clean_text(e.name) + ("/" if e.is_dir() else "") for e in p.iterdir())
        shown = entries[:MAX_LISTED]
        more = f" (+{len(entries) - len(shown)} more)" if len(entries) > len(shown) else ""
        where = self.ws.rel(p) if p != self.ws.home else "."
        return f"{where}: " + (" ".join(shown) if shown else "(empty)") + more

    def _t_read_file(self, path: str) -> str:
        p = self.ws.resolve(path, must_exist=True)
        if p.is_dir():
            raise ToolError(f"{path} is a folder; use list_dir")
        if not p.is_file():     # a FIFO or device: reading it could block or never end
            raise ToolError(f"{path} is not a regular file")
        if not self.ws.own_file(p):
            raise ToolError(f"{path} is shared with something outside the home folder (a hard link "
                            "or another device); refusing to read it")
        text = p.read_text(encoding="utf-8", errors="replace")
        return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + " …(truncated)"

    def _t_write_file(self, path: str, content: str) -> str:
        p = self.ws.resolve(path)
        if p == self.ws.home or p.is_dir():
            raise ToolError(f"{path} is a folder")
        self._payload("content", content)
        data = content.encode("utf-8")      # before anything on disk changes
        self._files_stale = True      # from here on, folders may be made even if the write fails
        p.parent.mkdir(parents=True, exist_ok=True)
        self.ws.resolve(path)  # re-check: a parent we just created cannot be a link, but be sure
        existed = p.exists()
        self.ws.write_file(p, data)
        return f"{'Overwrote' if existed else 'Wrote'} {self.ws.rel(p)} ({len(content)} characters)."

    def _t_move(self, src: str, dst: str) -> str:
        s = self.ws.resolve(src, must_exist=True)
        if s == self.ws.home:
            raise ToolError("cannot move the home folder")
        if s.is_dir() or s.is_symlink():
            raise ToolError(f"{src} is not a regular file; only files can be moved")
        d = self.ws.resolve(dst)
        if dst.strip().endswith("/") or d.is_dir():
            d = d / s.name
            self.ws.resolve(self.ws.rel(d))
        if d.exists():
            raise ToolError(f"{self.ws.rel(d)} already exists; delete it first or pick another name")
        self._files_stale = True      # the folders below are made even if the rename fails
        d.parent.mkdir(parents=True, exist_ok=True)
        os.rename(s, d)
        return f"Moved {self.ws.rel(s)} to {self.ws.rel(d)}."

    def _t_delete(self, path: str) -> str:
        p = self.ws.resolve(path, must_exist=True)
        if p == self.ws.home or p.is_dir():
            raise ToolError(f"{path} is a folder; only files can be deleted")
        p.unlink()
        self._files_stale = True
        return f"Deleted {self.ws.rel(p)}."

    # ---- mail -----------------------------------------------------------------------

    def _t_search_mail(self, query: str, folder: str = "") -> str:
        terms = self._terms(query, "the query")
        assert self.ws.db is not None
        sql = "SELECT id, folder, sender, subject, date, lower(sender || ' ' || subject || ' ' || body) FROM mail"
        params: tuple[Any, ...] = ()
        if folder:
            sql += " WHERE folder = ?"
            params = (folder.strip().lower(),)
        hits = []
        for mid, fold, sender, subject, date, text in self.ws.db.execute(sql + " ORDER BY seq", params):
            if all(t in text for t in terms):
                atts = [r[0] for r in self.ws.db.execute(
                    "SELECT name FROM attachment WHERE mail_id = ? ORDER BY name", (mid,))]
                extra = f" | attached: {', '.join(atts)}" if atts else ""
                hits.append(f"{mid} | {fold} | from {sender} | {subject} | {date}{extra}")
        if not hits:
            return f"No mail matches '{query}'."
        return f"{len(hits)} found:\n" + "\n".join(hits[:MAX_LISTED])

    def _t_read_mail(self, mail_id: str) -> str:
        mid, folder, sender, to, cc, subject, body, date = self._mail_row(mail_id)
        assert self.ws.db is not None
        self.ws.db.execute("UPDATE mail SET read = 1 WHERE id = ?", (mid,))
        self._records_stale = True
        atts = [r[0] for r in self.ws.db.execute("SELECT name FROM attachment WHERE mail_id = ? ORDER BY name", (mid,))]
        text = body if len(body) <= MAX_SHOWN_CHARS else body[:MAX_SHOWN_CHARS] + " …(truncated)"
        lines = [f"{mid} in {folder}", f"From: {sender}", f"To: {to}"]
        if cc:
            lines.append(f"Cc: {cc}")
        lines += [f"Date: {date}", f"Subject: {subject}"]
        if atts:
            lines.append(f"Attachments: {', '.join(atts)}")
        return "\n".join(lines) + "\n\n" + text

    def _t_send_mail(self, to: str, subject: str, body: str, cc: str = "") -> str:
        rcpt, copies = split_addresses(to), split_addresses(cc)
        if not rcpt:
            raise ToolError("no recipient")
        bad = [a for a in rcpt + copies if not _EMAIL.match(a)]
        if bad:
            raise ToolError(f"not an e-mail address: {', '.join(bad)}; find_contact looks addresses up")
        self._payload("subject", subject)
        self._payload("body", body)
        mid = self._new_id("m")
        assert self.ws.db is not None
        seq = self.ws.db.execute("SELECT coalesce(max(seq), 0) + 1 FROM mail").fetchone()[0]
        self.ws.db.execute("INSERT INTO mail VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (mid, "sent", self.user_email, ", ".join(rcpt), ", ".join(copies), subject,
                            body, self.today, 1, seq))
        self._records_stale = True
        return f"Sent {mid} to {', '.join(rcpt)}."

    def _t_move_mail(self, mail_id: str, folder: str) -> str:
        mid = self._mail_row(mail_id)[0]
        folder = folder.strip().lower()
        if not _FOLDER.match(folder):
            raise ToolError("a mail folder name is one word of letters, digits, '-' or '_'")
        if folder == "sent":
            raise ToolError("mail cannot be moved into 'sent'")
        assert self.ws.db is not None
        self.ws.db.execute("UPDATE mail SET folder = ? WHERE id = ?", (folder, mid))
        self._records_stale = True
        return f"Moved {mid} to {folder}."

    def _t_save_attachment(self, mail_id: str, name: str, path: str) -> str:
        mid = self._mail_row(mail_id)[0]
        assert self.ws.db is not None
        row = self.ws.db.execute("SELECT content FROM attachment WHERE mail_id = ? AND name = ?",
                                 (mid, name.strip())).fetchone()
        if row is None:
            names = [r[0] for r in self.ws.db.execute("SELECT name FROM attachment WHERE mail_id = ?", (mid,))]
            raise ToolError(f"{mid} has no attachment '{name}'" + (f"; it has {', '.join(names)}" if names else ""))
        target = self.ws.resolve(path)
        if path.strip().endswith("/") or target.is_dir():
            path = f"{path.rstrip('/')}/{name.strip()}"
        self._t_write_file(path, row[0])
        return f"Saved {name.strip()} to {self.ws.rel(self.ws.resolve(path))}."

    # ---- calendar and contacts ------------------------------------------------------

    def _t_list_events(self, date: str = "") -> str:
        assert self.ws.db is not None
        if date:
            if not _DATE.match(date.strip()):
                raise ToolError(f"'{date}' is not a date like 2026-03-02")
            rows = self.ws.db.execute("SELECT id, title, date, start, duration, attendees FROM event "
                                      "WHERE date = ? ORDER BY start", (date.strip(),)).fetchall()
        else:
            rows = self.ws.db.execute("SELECT id, title, date, start, duration, attendees FROM event "
                                      "WHERE date >= ? ORDER BY date, start", (self.today,)).fetchall()
        if not rows:
            return f"No events{' on ' + date if date else ''}."
        return "\n".join(f"{d} {s} ({m} min) {t}" + (f" with {a}" if a else "")
                         for _id, t, d, s, m, a in rows[:MAX_LISTED])

    def _t_create_event(self, title: str, date: str, start: str, duration: int = 30,
                        attendees: str = "") -> str:
        if not title.strip():
            raise ToolError("empty title")
        self._payload("title", title)
        if not _DATE.match(date.strip()):
            raise ToolError(f"'{date}' is not a date like 2026-03-02")
        if not _TIME.match(start.strip()):
            raise ToolError(f"'{start}' is not a time like 09:30")
        if not 5 <= int(duration) <= 24 * 60:
            raise ToolError("duration must be between 5 and 1440 minutes")
        people = split_addresses(attendees)
        bad = [a for a in people if not _EMAIL.match(a)]
        if bad:
            raise ToolError(f"not an e-mail address: {', '.join(bad)}")
        h, m = start.strip().split(":")
        eid = self._new_id("e")
        assert self.ws.db is not None
        self.ws.db.execute("INSERT INTO event VALUES (?,?,?,?,?,?)",
                           (eid, title.strip(), date.strip(), f"{int(h):02d}:{m}", int(duration), ", ".join(people)))
        self._records_stale = True
        return f"Created {eid}: {date.strip()} {int(h):02d}:{m} ({int(duration)} min) {title.strip()}."

    def _t_find_contact(self, query: str) -> str:
        terms = self._terms(query, "the query")
        assert self.ws.db is not None
        hits = []
        for name, email, phone, company in self.ws.db.execute(
                "SELECT name, email, phone, company FROM contact ORDER BY name"):
            text = f"{name} {email} {company}".lower()
            if all(t in text for t in terms):
                hits.append(f"{name} | {email}" + (f" | {phone}" if phone else "") + (f" | {company}" if company else ""))
        if not hits:
            return f"No contact matches '{query}'."
        return "\n".join(hits[:MAX_LISTED])

    def _t_add_contact(self, name: str, email: str, phone: str = "", company: str = "") -> str:
        if not name.strip():
            raise ToolError("empty name")
        for field_name, v in (("name", name), ("phone", phone), ("company", company)):
            if len(v) > 200:
                raise ToolError(f"{field_name} is longer than 200 characters")
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise ToolError(f"not an e-mail address: {email}")
        assert self.ws.db is not None
        if self.ws.db.execute("SELECT 1 FROM contact WHERE email = ?", (email,)).fetchone():
            raise ToolError(f"a contact with {email} already exists")
        cid = self._new_id("c")
        self.ws.db.execute("INSERT INTO contact VALUES (?,?,?,?,?)",
                           (cid, name.strip(), email, phone.strip(), company.strip()))
        self._records_stale = True
        return f"Added {name.strip()} <{email}>."


