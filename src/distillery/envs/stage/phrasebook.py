"""STAGE's phrasebook for the experience miner: its checks, and how its users word their
preferences (`distillery.envs.phrasebook`)."""

from __future__ import annotations

import re

from distillery.envs.phrasebook import BASENAME, CheckArgs, Phrasebook

# Which tools a failed check's type speaks about (check types from checks.py).
CHECK_TOOLS: dict[str, tuple[str, ...]] = {
    "file_exists": ("move", "write_file", "save_attachment"),
    "file_contains": ("move", "write_file", "save_attachment"),
    "file_absent": ("move", "delete"),
    "mail_sent": ("send_mail",),
    "mail_in_folder": ("move_mail",),
    "event_exists": ("create_event",),
    "contact_exists": ("add_contact",),
}

# What a failed check says a call should have been. Only checks that state an exact value
# qualify: check type -> tool -> (how the check names the call it is about, and which check
# key gives which argument).
CHECK_ARGS: dict[str, dict[str, CheckArgs]] = {
    "file_exists": {"move": (BASENAME, {"path": "dst"}), "save_attachment": (BASENAME, {"path": "path"}),
                    "write_file": (BASENAME, {"path": "path"})},
    "mail_in_folder": {"move_mail": ("mail_id", {"folder": "folder"})},
    "event_exists": {"create_event": ("date", {"start": "start", "duration": "duration"})},
    "contact_exists": {"add_contact": ("email", {"name": "name", "phone": "phone", "company": "company"})},
}

_CHECK_NAME = re.compile(r"(\w+)\((.*)\)", re.S)


def parse_check_name(name: str) -> tuple[str, dict[str, str]] | None:
    """(type, arguments) of a check as `checks.check_name` writes it:
    "mail_in_folder(folder=reading, mail_id=m1)" -> ("mail_in_folder", {"folder": "reading",
    "mail_id": "m1"}); None when it does not read that way."""
    m = _CHECK_NAME.fullmatch(name.strip())
    if m is None:
        return None
    args: dict[str, str] = {}
    for part in re.split(r", (?=\w+=)", m[2]) if m[2] else []:
        key, eq, value = part.partition("=")
        if not eq:
            return None
        args[key] = value
    return m[1], args


# How a lesson reads: by (family, tool, argument, aspect), then (tool, argument, aspect).
# The wording is the profiles' own (profiles.py: "Saved attachments go in files/received/."),
# because that is the text the warm-up student learned to follow; the family lives in the
# record, not the sentence. Measured on the held-out user h01 (greedy, 120 test tasks, the
# same 4 mined lessons, family-scoped): these words 0.592, the same with "In <family> tasks, "
# in front 0.517; the earlier pool (ten rules, tool-centred words such as "attachments are
# saved in ...", with that prefix) 0.325; plain 0.475.
FAMILY_PHRASES: dict[tuple[str, str, str, str], str] = {
    ("file_invoice", "move", "dst", "dir"): "invoices are filed in {value}",
    ("sort_newsletters", "move_mail", "folder", "value"): "newsletters belong in the mail folder '{value}'",
    ("save_note", "write_file", "path", "dir"): "notes are saved as {value}",
}
PHRASES: dict[tuple[str, str, str], str] = {
    ("move", "dst", "dir"): "files are filed in {value}",
    ("save_attachment", "path", "dir"): "saved attachments go in {value}",
    ("write_file", "path", "dir"): "files are saved as {value}",
    ("move_mail", "folder", "value"): "mail belongs in the mail folder '{value}'",
    ("send_mail", "body", "last_line"): "every mail ends with the sign-off '{value}'",
    ("send_mail", "body", "first_line"): "every mail starts with '{value}'",
    ("send_mail", "subject", "template"): "the mail subject is '{value}'",
    ("create_event", "duration", "value"): "meetings last {value} minutes unless stated",
    ("create_event", "title", "template"): "the event title is '{value}'",
    ("delete", "path", "ext_set"): "temporary downloads are the {value} files",
    ("add_contact", "*", "presence"): "new contacts always record their {value}",
}

PHRASEBOOK = Phrasebook(phrases=PHRASES, family_phrases=FAMILY_PHRASES, check_tools=CHECK_TOOLS,
                        check_args=CHECK_ARGS, parse_check=parse_check_name)
