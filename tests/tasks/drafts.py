"""Drafts a model might write for STAGE (good, broken, hostile), and a scripted
OpenAI-compatible endpoint on 127.0.0.1 that replies with them.

The endpoint is a real HTTP server (stdlib): the `openai` client inside `llm.ChatEndpoint`
makes real requests to it. It answers by the hint in the conversation's first user message
and the round (how many assistant turns the conversation already has), and records every
request it got.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.json_server import JsonServer

USER = {"name": "Sam Reed", "email": "sam.reed@home.net"}


def call(tool: str, **args: Any) -> dict[str, Any]:
    return {"tool": tool, "args": args}


FINISH = call("finish")

# ---------------------------------------------------------------------------------------
# Good drafts
# ---------------------------------------------------------------------------------------

SRC_A, SRC_G = "downloads/invoice-acme-2026-02.pdf", "downloads/invoice-globex-2026-02.pdf"
DST_A, DST_G = "finance/invoices/invoice-acme-2026-02.pdf", "finance/invoices/invoice-globex-2026-02.pdf"

INVOICES: dict[str, Any] = {
    "instruction": "File last month's invoices from my downloads with my other invoices.",
    "initial_state": {
        "user": USER, "today": "2026-03-10",
        "files": {SRC_A: "INVOICE Acme Ltd\nPeriod: February 2026\nAmount due: 420 EUR",
                  SRC_G: "INVOICE Globex Ltd\nPeriod: February 2026\nAmount due: 95 EUR",
                  "downloads/invoice-initech-2026-03.pdf": "INVOICE Initech\nPeriod: March 2026",
                  "downloads/photo-2231.jpg": "JPEG image",
                  "finance/invoices/invoice-hooli-2026-01.pdf": "INVOICE Hooli (paid)"},
        "dirs": ["documents"],
    },
    "reference_solution": [call("list_dir", path="downloads"), call("move", src=SRC_A, dst=DST_A),
                           call("move", src=SRC_G, dst=DST_G), FINISH],
    "checks": [{"type": "file_exists", "path": DST_A}, {"type": "file_exists", "path": DST_G},
               {"type": "file_absent", "path": SRC_A}, {"type": "file_absent", "path": SRC_G},
               {"type": "unchanged_except", "paths": [SRC_A, SRC_G, DST_A, DST_G]}],
    "preferences": ["Invoices are filed in finance/invoices/."],
}

NEWSLETTERS: dict[str, Any] = {
    "instruction": "Get the newsletters out of my inbox and into my reading folder.",
    "initial_state": {
        "user": USER, "today": "2026-03-10", "files": {"documents/roadmap.txt": "Roadmap notes."},
        "mail": [
            {"id": "m1", "sender": "news@acme.com", "subject": "Acme newsletter: pricing edition",
             "body": "This week's newsletter from Acme.", "date": "2026-03-08"},
            {"id": "m2", "sender": "ben.ortiz@acme.com", "subject": "Re: budget",
             "body": "Thanks for the budget update. Ben", "date": "2026-03-09"},
            {"id": "m3", "sender": "news@globex.com", "subject": "Globex newsletter: audit edition",
             "body": "All about the audit, from Globex.", "date": "2026-03-09"},
        ],
    },
    "reference_solution": [call("search_mail", query="newsletter", folder="inbox"),
                           call("move_mail", mail_id="m1", folder="reading"),
                           call("move_mail", mail_id="m3", folder="reading"), FINISH],
    "checks": [{"type": "mail_in_folder", "mail_id": "m1", "folder": "reading"},
               {"type": "mail_in_folder", "mail_id": "m3", "folder": "reading"},
               {"type": "unchanged_except", "mail_ids": ["m1", "m3"]}],
}

EMAIL: dict[str, Any] = {
    "instruction": "Tell Ann Lee from Acme that the budget review moves to friday.",
    "initial_state": {
        "user": USER, "today": "2026-03-10", "files": {},
        "contacts": [{"id": "c1", "name": "Ann Lee", "email": "ann.lee@acme.com", "company": "Acme"},
                     {"id": "c2", "name": "Ann Shah", "email": "ann.shah@globex.com", "company": "Globex"},
                     {"id": "c3", "name": "Ben Ortiz", "email": "ben.ortiz@acme.com"}],
    },
    "reference_solution": [call("find_contact", query="Ann Lee"),
                           call("send_mail", to="ann.lee@acme.com", subject="Budget review",
                                body="The budget review moves to friday.\n\nBest, Sam"), FINISH],
    "checks": [{"type": "mail_sent", "to": ["ann.lee@acme.com"], "subject_contains": "budget",
                "body_contains": ["friday"]},
               {"type": "unchanged_except", "new_mail": 1}],
}


def variant(draft: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(draft)
    edit(out)
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets a dotted path (list indices as numbers) to `value`."""
    def edit(d: dict[str, Any]) -> None:
        *head, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in head:
            d = d[p]
        d[last] = value
    return edit


# ---------------------------------------------------------------------------------------
# Broken and hostile drafts, one per rejection kind
# ---------------------------------------------------------------------------------------

# The reference solution files the invoices in the wrong folder.
UNSOLVABLE = variant(INVOICES, _set("reference_solution.2", call("move", src=SRC_G, dst="documents/")))
# Checks that the untouched state already meets; the solution does nothing.
TRIVIAL = variant(INVOICES, lambda d: d.update(
    reference_solution=[FINISH],
    checks=[{"type": "file_exists", "path": SRC_A}, {"type": "unchanged_except"}]))
NOT_JSON = "Sure! The user should file the invoices from February into finance/invoices. Let me know!"
BROKEN_JSON = '```json\n{"instruction": "File the invoices", "checks": [\n```'
SCHEMA = variant(INVOICES, lambda d: (d.pop("checks"), d.update(instruction=42, priority="high")))
UNKNOWN_CHECK = variant(INVOICES, lambda d: d["checks"].insert(
    0, {"type": "python_assert", "expr": "len(files) == 2"}))
UNKNOWN_TOOL = variant(INVOICES, lambda d: d["reference_solution"].insert(0, call("run_shell", cmd="ls")))
MISSING_CHECK = variant(INVOICES, lambda d: d["checks"].pop())
OUTSIDE = variant(INVOICES, lambda d: (
    d["initial_state"]["files"].update({"../../escaped-by-draft.txt": "gotcha"}),
    d["checks"].append({"type": "file_exists", "path": "/etc/passwd"}),
    d["reference_solution"].insert(0, call("write_file", path="~/escaped-by-draft.txt", content="x"))))
CODE = variant(INVOICES, lambda d: (
    d["initial_state"]["files"].update({"downloads/readme.txt": "__import__('os').system('rm -rf ~')"}),
    d.update(instruction="File the invoices {{ config.items() }}")))
OVERSIZED = variant(INVOICES, lambda d: d["initial_state"]["files"].update({"downloads/photo-2231.jpg": "x" * 25_000}))
DUPLICATE_MAIL_IDS = variant(NEWSLETTERS, _set("initial_state.mail.1.id", "m1"))
# A random agent writes some file at the one path the text names often enough: solved by chance.
RANDOM_SOLVABLE: dict[str, Any] = {
    "instruction": "Write anything into notes/todo.txt.",
    "initial_state": {"user": USER, "today": "2026-03-10", "files": {}, "dirs": ["notes"]},
    "reference_solution": [call("write_file", path="notes/todo.txt", content="todo"), FINISH],
    "checks": [{"type": "file_exists", "path": "notes/todo.txt"},
               {"type": "unchanged_except", "paths": ["notes/todo.txt"], "new_mail": 10, "new_events": 10,
                "new_contacts": 10}],
}

# The first reply saves the wrong mail's attachment; the repair fixes the mail id.
ATTACHMENT: dict[str, Any] = {
    "instruction": "Keep a copy of the pricing sheet Cara mailed me with my saved attachments.",
    "initial_state": {
        "user": USER, "today": "2026-03-10", "files": {"documents/attachments/old-memo.pdf": "MEMO 2025"},
        "mail": [
            {"id": "m1", "sender": "ben.ortiz@acme.com", "subject": "Pricing draft", "body": "Draft. Ben",
             "date": "2026-03-05", "attachments": [{"name": "pricing-draft.pdf", "content": "PRICING DRAFT by Ben"}]},
            {"id": "m2", "sender": "cara.novak@globex.com", "subject": "Pricing sheet", "body": "Final. Cara",
             "date": "2026-03-08", "attachments": [{"name": "pricing-sheet.pdf", "content": "PRICING SHEET by Cara"}]},
        ],
    },
    "reference_solution": [call("search_mail", query="pricing"),
                           call("save_attachment", mail_id="m2", name="pricing-sheet.pdf",
                                path="documents/attachments/pricing-sheet.pdf"), FINISH],
    "checks": [{"type": "file_contains", "path": "documents/attachments/pricing-sheet.pdf",
                "text": "PRICING SHEET by Cara"},
               {"type": "unchanged_except", "paths": ["documents/attachments/pricing-sheet.pdf"]}],
}
ATTACHMENT_WRONG_MAIL = variant(ATTACHMENT, _set("reference_solution.1.args.mail_id", "m1"))


def fenced(draft: dict[str, Any]) -> str:
    """A draft as a chatty model writes it: prose, a fenced block, more prose."""
    return f"Here is the task you asked for.\n\n```json\n{json.dumps(draft, indent=2)}\n```\nHope this helps!"


# ---------------------------------------------------------------------------------------
# The scripted endpoint
# ---------------------------------------------------------------------------------------

_HINT = re.compile(r"^Hint: (.*)$", re.M)


@dataclass
class Scripted:
    """Replies by hint: `replies[hint][round]` (the last one repeats); a reply that is an int
    is an HTTP status to answer with instead."""

    replies: dict[str, list[str | int]]
    usage: tuple[int, int] = (1200, 800)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        msgs = body["messages"]
        first_user = next(m["content"] for m in msgs if m["role"] == "user")
        hint = _HINT.search(first_user).group(1)
        rnd = sum(m["role"] == "assistant" for m in msgs)
        script = self.replies[hint]
        reply = script[min(rnd, len(script) - 1)]
        if isinstance(reply, int):
            return reply, {"error": {"message": "scripted failure", "type": "server_error"}}
        return 200, {"id": "chatcmpl-draft", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": reply}}],
                     "usage": {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1],
                               "total_tokens": sum(self.usage)}}


@contextmanager
def scripted_endpoint(replies: dict[str, list[str | int]]) -> Iterator[Scripted]:
    ep = Scripted(replies)

    def answer(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with ep.lock:
            ep.requests.append(body)
        return (*ep.answer(body), {})

    with JsonServer(answer) as srv:
        ep.base_url = srv.base_url
        yield ep


# What the tiny model in test_draft_serve.py is trained to write: short, and valid.
SMALL_INVOICE: dict[str, Any] = {
    "instruction": "File the Acme invoice from my downloads with my other invoices.",
    "initial_state": {"user": USER, "today": "2026-03-10",
                      "files": {"downloads/invoice-acme-7.pdf": "INVOICE Acme",
                                "downloads/invoice-hooli-3.pdf": "INVOICE Hooli",
                                "finance/invoices/invoice-wonka-1.pdf": "INVOICE Wonka"}},
    "reference_solution": [call("move", src="downloads/invoice-acme-7.pdf", dst="finance/invoices/invoice-acme-7.pdf"),
                           FINISH],
    "checks": [{"type": "file_exists", "path": "finance/invoices/invoice-acme-7.pdf"},
               {"type": "unchanged_except",
                "paths": ["downloads/invoice-acme-7.pdf", "finance/invoices/invoice-acme-7.pdf"]}],
}
