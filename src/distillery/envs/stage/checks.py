"""Declarative checks over the final state: data in, verdicts out, nothing executed.

Each check is a dict with a `type` and its arguments; `CHECKS` maps a type to a pure
function `(check, initial, final) -> (passed, detail)` over two `Snapshot`s. Text matches
are case-insensitive substrings. Every task carries one `unchanged_except` check: whatever
the task does not allow to change must be exactly as it was (AppWorld's collateral damage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distillery.envs.stage.state import Snapshot, split_addresses
from distillery.types import CheckResult, Verification

Check = dict[str, Any]
CheckFn = Callable[[Check, Snapshot, Snapshot], tuple[bool, str]]


def _has(text: str, needle: str) -> bool:
    return needle.lower() in text.lower()


def file_exists(c: Check, _i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    ok = c["path"] in f.files
    return ok, "" if ok else f"no file at {c['path']}"


def file_absent(c: Check, _i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    ok = c["path"] not in f.files
    return ok, "" if ok else f"{c['path']} still exists"


def file_contains(c: Check, _i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    text = f.files.get(c["path"])
    if text is None:
        return False, f"no file at {c['path']}"
    ok = _has(text, c["text"])
    return ok, "" if ok else f"{c['path']} does not contain '{c['text']}'"


def _new_sent(i: Snapshot, f: Snapshot) -> list[dict[str, Any]]:
    return [m for mid, m in f.mail.items() if mid not in i.mail and m["folder"] == "sent"]


def mail_sent(c: Check, i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    want = {a.lower() for a in c["to"]}
    sent = _new_sent(i, f)
    if not sent:
        return False, "no mail was sent"
    to_ok = [m for m in sent if want <= set(split_addresses(m["to"]) + split_addresses(m["cc"]))]
    if not to_ok:
        return False, f"no sent mail reached {', '.join(sorted(want))}"
    subj = c.get("subject_contains", "")
    subj_ok = [m for m in to_ok if _has(m["subject"], subj)]
    if not subj_ok:
        return False, f"the mail to {', '.join(sorted(want))} lacks '{subj}' in its subject"
    needles = c.get("body_contains", [])
    for m in subj_ok:
        if all(_has(m["body"], n) for n in needles):
            return True, ""
    missing = [n for n in needles if not _has(subj_ok[0]["body"], n)]
    return False, f"the mail to {', '.join(sorted(want))} lacks {missing} in its body"


def mail_in_folder(c: Check, _i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    m = f.mail.get(c["mail_id"])
    if m is None:
        return False, f"mail {c['mail_id']} is gone"
    ok = m["folder"] == c["folder"]
    return ok, "" if ok else f"mail {c['mail_id']} is in '{m['folder']}', not '{c['folder']}'"


def event_exists(c: Check, i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    new = [e for eid, e in f.events.items() if eid not in i.events]
    on_day = [e for e in new if e["date"] == c["date"]]
    if not on_day:
        return False, f"no new event on {c['date']}"
    problems = []
    for e in on_day:
        p = []
        if "start" in c and e["start"] != c["start"]:
            p.append(f"starts {e['start']}, not {c['start']}")
        if "duration" in c and e["duration"] != c["duration"]:
            p.append(f"lasts {e['duration']} min, not {c['duration']}")
        missing = {a.lower() for a in c.get("attendees", [])} - set(split_addresses(e["attendees"]))
        if missing:
            p.append(f"does not invite {', '.join(sorted(missing))}")
        if c.get("title_contains") and not _has(e["title"], c["title_contains"]):
            p.append(f"title lacks '{c['title_contains']}'")
        if not p:
            return True, ""
        problems.append("; ".join(p))
    return False, f"the event on {c['date']} " + problems[0]


def contact_exists(c: Check, i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    hits = [x for x in f.contacts.values() if x["email"].lower() == c["email"].lower()]
    if not hits:
        return False, f"no contact with {c['email']}"
    x = hits[0]
    for key in ("name", "phone", "company"):
        if key in c and x[key].strip().lower() != str(c[key]).strip().lower():
            return False, f"the contact {c['email']} has {key} '{x[key]}', not '{c[key]}'"
    return True, ""


def unchanged_except(c: Check, i: Snapshot, f: Snapshot) -> tuple[bool, str]:
    """Everything outside the allowed changes is as it was; read flags may change."""
    allowed = set(c.get("paths", []))
    changed = sorted(p for p in set(i.files) | set(f.files)
                     if p not in allowed and i.files.get(p) != f.files.get(p))
    if changed:
        return False, f"files changed that the task did not ask for: {', '.join(changed[:5])}"
    allowed_mail = set(c.get("mail_ids", []))
    for mid, m in i.mail.items():
        fm = f.mail.get(mid)
        if fm is None:
            return False, f"mail {mid} disappeared"
        if mid not in allowed_mail and {k: v for k, v in fm.items() if k != "read"} != \
                {k: v for k, v in m.items() if k != "read"}:
            return False, f"mail {mid} was changed (now in '{fm['folder']}')"
    n_new = len(set(f.mail) - set(i.mail))
    if n_new > c.get("new_mail", 0):
        return False, f"{n_new} mail(s) sent, the task allows {c.get('new_mail', 0)}"
    for kind, key in (("events", "new_events"), ("contacts", "new_contacts")):
        before, after = getattr(i, kind), getattr(f, kind)
        if any(after.get(k) != v for k, v in before.items()):
            return False, f"existing {kind} were changed"
        n = len(set(after) - set(before))
        if n > c.get(key, 0):
            return False, f"{n} new {kind}, the task allows {c.get(key, 0)}"
    return True, ""


CHECKS: dict[str, CheckFn] = {
    "file_exists": file_exists,
    "file_absent": file_absent,
    "file_contains": file_contains,
    "mail_sent": mail_sent,
    "mail_in_folder": mail_in_folder,
    "event_exists": event_exists,
    "contact_exists": contact_exists,
    "unchanged_except": unchanged_except,
}


def check_name(c: Check) -> str:
    """Human-readable name, e.g. file_exists(path=finance/invoices/x.pdf)."""
    keys = {k: v for k, v in c.items() if k != "type" and k not in ("paths", "mail_ids")}
    inner = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in keys.items())
    return f"{c['type']}({inner})"


def verify_checks(checks: list[Check], initial: Snapshot, final: Snapshot) -> Verification:
    results = []
    for c in checks:
        fn = CHECKS.get(c.get("type", ""))
        if fn is None:
            results.append(CheckResult(check_name(c) if "type" in c else str(c), str(c.get("type")), False,
                                       f"unknown check type; known: {', '.join(CHECKS)}"))
            continue
        try:
            ok, detail = fn(c, initial, final)
        except KeyError as e:
            ok, detail = False, f"check is missing its argument {e}"
        results.append(CheckResult(check_name(c), c["type"], ok, detail))
    n_pass = sum(r.passed for r in results)
    score = n_pass / len(results) if results else 0.0
    return Verification(score=score, success=bool(results) and n_pass == len(results), checks=results)
