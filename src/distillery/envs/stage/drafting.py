"""What a model may write when it drafts a STAGE task: the state and check vocabularies as
JSON Schemas, and one worked example. Data only: `distillery.tasks` validates a draft
against these before anything is built, then runs it in a real sandbox.

The schemas follow what `state.Workspace.build` reads and what `checks.CHECKS` verifies;
ids are bounded below the ones the environment gives new mail, events and contacts
(m1001, e1001, c1001, ...), so a drafted state can never collide with what an agent creates.
"""

from __future__ import annotations

from typing import Any

from distillery.envs.base import PATH_FORMAT, DraftFormat

MAX_TEXT = 20_000        # a file's or a mail's text (the tools' own payload limit)
MAX_SHORT = 300          # names, subjects, titles, addresses

DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "YYYY-MM-DD"}
TIME = {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "description": "HH:MM, 24-hour"}
EMAIL = {"type": "string", "pattern": r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$", "maxLength": MAX_SHORT}
PATH = {"type": "string", "format": PATH_FORMAT, "minLength": 1, "maxLength": 200,
        "description": "relative to the home folder, e.g. documents/plan.txt"}
SHORT = {"type": "string", "maxLength": MAX_SHORT}
NEEDLE = {"type": "string", "minLength": 1, "maxLength": MAX_SHORT}
MAIL_FOLDER = {"type": "string", "pattern": r"^[a-z0-9_-]{1,40}$", "description": "one lower-case word"}


def _id(prefix: str) -> dict[str, Any]:
    return {"type": "string", "pattern": rf"^{prefix}[1-9]\d{{0,2}}$", "description": f"{prefix}1 ... {prefix}999"}


def _obj(props: dict[str, Any], required: list[str], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "required": required,
                           "additionalProperties": False}
    if description:
        out["description"] = description
    return out


STATE_SCHEMA: dict[str, Any] = _obj({
    "user": _obj({"name": SHORT, "email": EMAIL}, ["name", "email"], "whose computer it is"),
    "today": dict(DATE, description="today's date, YYYY-MM-DD"),
    "files": {"type": "object", "maxProperties": 60, "propertyNames": PATH,
              "additionalProperties": {"type": "string", "maxLength": MAX_TEXT},
              "description": "the user's files: {path: text}"},
    "dirs": {"type": "array", "maxItems": 30, "items": PATH, "description": "empty folders that exist"},
    "mail": {"type": "array", "maxItems": 60, "description": "mailbox, oldest first", "items": _obj({
        "id": _id("m"), "folder": dict(MAIL_FOLDER, description="inbox (default), sent, or a folder word"),
        "sender": EMAIL, "to": SHORT, "cc": SHORT, "subject": SHORT,
        "body": {"type": "string", "maxLength": MAX_TEXT}, "date": DATE, "read": {"type": "boolean"},
        "attachments": {"type": "array", "maxItems": 5, "items": _obj(
            {"name": {"type": "string", "pattern": r"^[\w][\w .-]{0,99}$"},
             "content": {"type": "string", "maxLength": MAX_TEXT}}, ["name", "content"])},
    }, ["id", "sender", "subject", "body", "date"])},
    "events": {"type": "array", "maxItems": 40, "description": "calendar", "items": _obj({
        "id": _id("e"), "title": dict(SHORT, minLength=1), "date": DATE, "start": TIME,
        "duration": {"type": "integer", "minimum": 5, "maximum": 1440, "description": "minutes"},
        "attendees": {"type": "array", "maxItems": 20, "items": EMAIL},
    }, ["id", "title", "date", "start", "duration"])},
    "contacts": {"type": "array", "maxItems": 60, "description": "address book", "items": _obj({
        "id": _id("c"), "name": dict(SHORT, minLength=1), "email": EMAIL, "phone": SHORT, "company": SHORT,
    }, ["name", "email"])},
}, ["user", "today", "files"], "the workspace before the agent starts")


def _check(type_: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return _obj({"type": {"const": type_}, **props}, ["type", *required], description)


CHECK_SCHEMAS: dict[str, dict[str, Any]] = {
    "file_exists": _check("file_exists", "a file exists at path", {"path": PATH}, ["path"]),
    "file_absent": _check("file_absent", "no file exists at path", {"path": PATH}, ["path"]),
    "file_contains": _check("file_contains", "the file at path contains text (case-insensitive)",
                            {"path": PATH, "text": NEEDLE}, ["path", "text"]),
    "mail_sent": _check(
        "mail_sent", "a new mail in 'sent' reaches every address in `to` (to or cc), with subject_contains "
        "in its subject and each body_contains text in its body (case-insensitive)",
        {"to": {"type": "array", "minItems": 1, "maxItems": 20, "items": EMAIL},
         "subject_contains": NEEDLE, "body_contains": {"type": "array", "maxItems": 10, "items": NEEDLE}}, ["to"]),
    "mail_in_folder": _check("mail_in_folder", "the mail mail_id of the initial state is in folder",
                             {"mail_id": _id("m"), "folder": MAIL_FOLDER}, ["mail_id", "folder"]),
    "event_exists": _check(
        "event_exists", "a new event on date, with the given start, duration, attendees and title words",
        {"date": DATE, "start": TIME, "duration": {"type": "integer", "minimum": 5, "maximum": 1440},
         "attendees": {"type": "array", "maxItems": 20, "items": EMAIL}, "title_contains": NEEDLE}, ["date"]),
    "contact_exists": _check(
        "contact_exists", "a contact with email exists, with the given name, phone and company",
        {"email": EMAIL, "name": SHORT, "phone": SHORT, "company": SHORT}, ["email"]),
    "unchanged_except": _check(
        "unchanged_except", "nothing changed but the listed file paths and mail ids, and at most new_mail "
        "sent mails, new_events events and new_contacts contacts (collateral damage fails it)",
        {"paths": {"type": "array", "maxItems": 30, "items": PATH},
         "mail_ids": {"type": "array", "maxItems": 30, "items": _id("m")},
         "new_mail": {"type": "integer", "minimum": 0, "maximum": 10},
         "new_events": {"type": "integer", "minimum": 0, "maximum": 10},
         "new_contacts": {"type": "integer", "minimum": 0, "maximum": 10}}, []),
}

EXAMPLE_HINT = "save the attachment a colleague sent about the audit where attachments go"

EXAMPLE: dict[str, Any] = {
    "instruction": "Ben sent me the audit report; keep a copy of the attachment with my saved attachments.",
    "initial_state": {
        "user": {"name": "Sam Reed", "email": "sam.reed@home.net"},
        "today": "2026-03-10",
        "files": {"documents/attachments/pricing-sheet.pdf": "PRICING SHEET 2025",
                  "documents/budget-plan.txt": "Plan: notes on the budget.",
                  "downloads/setup-4411.zip": "binary data"},
        "dirs": ["photos"],
        "mail": [
            {"id": "m1", "sender": "cara.novak@globex.com", "subject": "Audit slides",
             "body": "Slides for the audit talk. Cara", "date": "2026-03-08",
             "attachments": [{"name": "audit-slides.pdf", "content": "AUDIT SLIDES by Cara Novak"}]},
            {"id": "m2", "sender": "ben.ortiz@acme.com", "subject": "Audit report",
             "body": "Here is the audit report. Ben", "date": "2026-03-09",
             "attachments": [{"name": "audit-report.pdf", "content": "AUDIT REPORT by Ben Ortiz"}]},
            {"id": "m3", "sender": "ben.ortiz@acme.com", "subject": "Lunch",
             "body": "Lunch on friday? Ben", "date": "2026-03-09", "read": True},
        ],
        "events": [],
        "contacts": [{"id": "c1", "name": "Ben Ortiz", "email": "ben.ortiz@acme.com", "company": "Acme"},
                     {"id": "c2", "name": "Cara Novak", "email": "cara.novak@globex.com"}],
    },
    "reference_solution": [
        {"tool": "search_mail", "args": {"query": "audit report"}},
        {"tool": "save_attachment", "args": {"mail_id": "m2", "name": "audit-report.pdf",
                                             "path": "documents/attachments/audit-report.pdf"}},
        {"tool": "finish", "args": {}},
    ],
    "checks": [
        {"type": "file_exists", "path": "documents/attachments/audit-report.pdf"},
        {"type": "file_contains", "path": "documents/attachments/audit-report.pdf", "text": "AUDIT REPORT by Ben"},
        {"type": "unchanged_except", "paths": ["documents/attachments/audit-report.pdf"]},
    ],
    "preferences": ["Saved attachments go in documents/attachments/."],
}

DRAFT_FORMAT = DraftFormat(state_schema=STATE_SCHEMA, check_schemas=CHECK_SCHEMAS,
                           required_checks=("unchanged_except",), example=EXAMPLE, example_hint=EXAMPLE_HINT)
