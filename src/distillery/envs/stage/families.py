"""STAGE's task families: each turns a hint, a profile and a random generator into one task draft.

A draft is data only — instruction, initial state, reference solution, declarative checks —
so task validation (`distillery.tasks`) can run it without trusting it. Parameters (people, files,
dates, counts, distractors) come from the finite vocabularies below, so names recur across
tasks and a small model can learn them as whole tokens.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distillery.envs.base import Draft, Family
from distillery.envs.stage.profiles import Profile, get_profile
from distillery.types import ToolCall

FIRST = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jade", "Kurt", "Lena",
         "Milo", "Nora", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vic", "Wen", "Yara", "Zoe"]
LAST = ["Lee", "Shah", "Novak", "Ortiz", "Berg", "Costa", "Dunn", "Fox", "Grant", "Hale", "Ito",
        "Khan", "Lund", "Moss", "Nash", "Pratt", "Quinn", "Roy", "Stone", "Tran", "Vance", "Wolfe"]
COMPANIES = ["acme", "globex", "initech", "umbrella", "hooli", "vandelay", "wonka", "stark",
             "wayne", "cyberdyne", "soylent", "tyrell"]
TOPICS = ["budget", "roadmap", "hiring", "launch", "offsite", "audit", "pricing", "contract",
          "design", "training", "migration", "survey"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
MESSAGES = [
    "the {topic} review moves to {day}",
    "I will send the {topic} numbers on {day}",
    "can we go over the {topic} on {day}",
    "the {topic} draft is ready for {day}",
]
OTHER_FILES = ["photo-{n}.jpg", "setup-{n}.zip", "slides-{n}.pptx", "scan-{n}.png", "song-{n}.mp3",
               "report-{n}.docx", "data-{n}.csv"]
TEMP_EXTS = [".tmp", ".part", ".bak", ".crdownload"]
HOURS = ["09:00", "10:00", "11:00"]
BASE_DATE = dt.date(2026, 3, 2)


@dataclass
class Person:
    first: str
    last: str
    company: str
    phone: str

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def email(self) -> str:
        return f"{self.first.lower()}.{self.last.lower()}@{self.company}.com"

    def contact(self) -> dict[str, str]:
        return {"name": self.full, "email": self.email, "phone": self.phone, "company": self.company.title()}


@dataclass
class StageDraft:
    instruction: str
    state: dict[str, Any]
    solution: list[ToolCall]
    checks: list[dict[str, Any]]
    preferences: list[str] = field(default_factory=list)  # profile dimensions the checks enforce


class World:
    """Builds one initial state: a lived-in workspace with distractors, ids assigned last
    (after shuffling) so a mail's id says nothing about its role."""

    def __init__(self, rng: random.Random, profile: Profile) -> None:
        self.rng = rng
        self.profile = profile
        self.today = BASE_DATE + dt.timedelta(days=rng.randrange(0, 60))
        self.files: dict[str, str] = {}
        self.dirs: set[str] = {"documents", "downloads", "photos"}
        self.mail: list[dict[str, Any]] = []
        self.contacts: list[Person] = []
        self.events: list[dict[str, Any]] = []
        self._names: set[tuple[str, str]] = set()
        self._n = 0

    def number(self) -> int:
        self._n += 1
        return self.rng.randrange(100, 999) * 10 + self._n % 10

    def person(self, first: str | None = None) -> Person:
        while True:
            p = Person(first or self.rng.choice(FIRST), self.rng.choice(LAST), self.rng.choice(COMPANIES),
                       f"+1 555 {self.rng.randrange(1000, 9999)}")
            if (p.first, p.last) not in self._names:
                self._names.add((p.first, p.last))
                return p

    def day(self, lo: int, hi: int) -> str:
        return (self.today + dt.timedelta(days=self.rng.randrange(lo, hi + 1))).isoformat()

    def add_mail(self, sender: str, subject: str, body: str, folder: str = "inbox",
                 attachments: list[dict[str, str]] | None = None, days_ago: int | None = None) -> dict[str, Any]:
        ago = days_ago if days_ago is not None else self.rng.randrange(0, 14)
        m = {"folder": folder, "sender": sender, "to": self.profile.user_email, "subject": subject,
             "body": body, "date": (self.today - dt.timedelta(days=ago)).isoformat(), "read": ago > 3,
             "attachments": attachments or []}
        self.mail.append(m)
        return m

    def background(self, n_contacts: int = 5, n_mail: int = 3, n_events: int = 3) -> None:
        p = self.profile
        for _ in range(n_contacts):
            self.contacts.append(self.person())
        for _ in range(self.rng.randint(1, 3)):
            n = self.number()
            self.files[f"documents/{self.rng.choice(TOPICS)}-plan-{n}.txt"] = f"Plan {n}: notes on the work."
        self.files[f"photos/photo-{self.number()}.jpg"] = "JPEG image"
        old = self.rng.choice(COMPANIES)
        self.files[f"{p.invoice_dir}/invoice-{old}-{self.number()}.pdf"] = f"INVOICE {old.title()} Ltd (paid)"
        self.files[f"{p.notes_dir}/groceries{p.note_ext}"] = "milk, eggs, bread"
        for _ in range(n_mail):
            who = self.rng.choice(self.contacts)
            topic = self.rng.choice(TOPICS)
            self.add_mail(who.email, f"Re: {topic}", f"Thanks for the {topic} update. {who.first}")
        for _ in range(n_events):
            who = self.rng.choice(self.contacts)
            self.events.append({"title": f"{self.rng.choice(TOPICS).title()} catch-up", "date": self.day(1, 10),
                                "start": self.rng.choice(["13:00", "14:30", "16:00"]), "duration": 30,
                                "attendees": [who.email]})

    def finalize(self) -> dict[str, Any]:
        """Shuffle and number mail, events and contacts; return the initial_state JSON."""
        self.rng.shuffle(self.mail)
        for i, m in enumerate(self.mail, 1):
            m["id"] = f"m{i}"
        self.rng.shuffle(self.events)
        for i, e in enumerate(self.events, 1):
            e["id"] = f"e{i}"
        self.rng.shuffle(self.contacts)
        return {
            "user": {"name": self.profile.user_name, "email": self.profile.user_email},
            "today": self.today.isoformat(),
            "files": dict(sorted(self.files.items())),
            "dirs": sorted(self.dirs),
            "mail": self.mail,
            "events": self.events,
            "contacts": [dict(c.contact(), id=f"c{i}") for i, c in enumerate(self.contacts, 1)],
        }


def _call(tool: str, **args: Any) -> ToolCall:
    return ToolCall(tool, args)


FINISH = ToolCall("finish", {})


# ---------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------


def file_invoice(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background()
    vendors = rng.sample(COMPANIES, 3)
    vendor = vendors[0]
    name = f"invoice-{vendor}-{w.number()}.pdf"
    src = f"downloads/{name}"
    w.files[src] = f"INVOICE {vendor.title()} Ltd\nAmount due: {rng.randrange(50, 5000)} EUR\nDue: {w.day(5, 30)}"
    for other in vendors[1:rng.randint(2, 3)]:
        w.files[f"downloads/invoice-{other}-{w.number()}.pdf"] = f"INVOICE {other.title()} Ltd"
    w.files["downloads/" + rng.choice(OTHER_FILES).format(n=w.number())] = "binary data"
    dst = f"{p.invoice_dir}/{name}"
    instruction = rng.choice(["File the {v} invoice that is in my downloads.",
                              "Please put away the invoice from {v} sitting in downloads.",
                              "The {v} invoice in downloads needs filing."]).format(v=vendor.title())
    return StageDraft(instruction, w.finalize(),
                 [_call("list_dir", path="downloads"), _call("move", src=src, dst=dst), FINISH],
                 [{"type": "file_exists", "path": dst},
                  {"type": "file_contains", "path": dst, "text": f"INVOICE {vendor.title()}"},
                  {"type": "file_absent", "path": src},
                  {"type": "unchanged_except", "paths": [src, dst]}],
                 ["invoice_dir"])


def save_attachment(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background()
    sender, other = w.person(), w.person()
    topic, other_topic = rng.sample(TOPICS, 2)
    kind = rng.choice(["report", "slides", "sheet", "memo"])
    name = f"{topic}-{kind}-{w.number()}.pdf"
    marker = f"{topic.upper()} {kind.upper()} by {sender.full}"
    target = w.add_mail(sender.email, f"{topic.title()} {kind}", f"Here is the {topic} {kind}. {sender.first}",
                        attachments=[{"name": name, "content": marker}])
    w.add_mail(other.email, f"{other_topic.title()} {kind}", f"Attached the {other_topic} {kind}. {other.first}",
               attachments=[{"name": f"{other_topic}-{kind}-{w.number()}.pdf", "content": other_topic.upper()}])
    w.add_mail(sender.email, "Lunch", f"Lunch on {rng.choice(WEEKDAYS)}? {sender.first}")
    state = w.finalize()
    path = f"{p.attachment_dir}/{name}"
    instruction = rng.choice(["Save the attachment {f} sent me about the {t}.",
                              "Keep a copy of the {t} file {f} mailed me.",
                              "{f} mailed me the {t} {k}; save the attachment."]).format(f=sender.first, t=topic, k=kind)
    return StageDraft(instruction, state,
                 [_call("search_mail", query=topic), _call("save_attachment", mail_id=target["id"], name=name, path=path),
                  FINISH],
                 [{"type": "file_exists", "path": path},
                  {"type": "file_contains", "path": path, "text": marker},
                  {"type": "unchanged_except", "paths": [path]}],
                 ["attachment_dir"])


def sort_newsletters(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background()
    letters = []
    for company in rng.sample(COMPANIES, rng.randint(2, 3)):
        topic = rng.choice(TOPICS)
        letters.append(w.add_mail(f"news@{company}.com", f"{company.title()} newsletter: {topic} edition",
                                  f"This week's newsletter from {company.title()}: all about {topic}."))
    state = w.finalize()
    instruction = rng.choice(["Tidy my inbox: get the newsletters out of it.",
                              "Move the newsletters out of my inbox.",
                              "My inbox is full of newsletters; sort them away."])
    solution = [_call("search_mail", query="newsletter", folder="inbox")]
    solution += [_call("move_mail", mail_id=m["id"], folder=p.newsletter_folder) for m in letters]
    checks = [{"type": "mail_in_folder", "mail_id": m["id"], "folder": p.newsletter_folder} for m in letters]
    checks.append({"type": "unchanged_except", "mail_ids": [m["id"] for m in letters]})
    return StageDraft(instruction, state, solution + [FINISH], checks, ["newsletter_folder"])


def _message(rng: random.Random, topic: str) -> tuple[str, str]:
    day = rng.choice(WEEKDAYS)
    return rng.choice(MESSAGES).format(topic=topic, day=day), day


def _mail_body(message: str, p: Profile) -> str:
    """The message as a sentence, then the profile's sign-off."""
    return f"{message[0].upper()}{message[1:]}.\n\n{p.signoff}"


def email_contact(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background(n_contacts=4)
    target = w.person()
    namesake = w.person(first=target.first)  # same first name: the lookup must use the full name
    w.contacts += [target, namesake]
    topic = rng.choice(TOPICS)
    message, day = _message(rng, topic)
    state = w.finalize()
    body = _mail_body(message, p)
    instruction = f"Email {target.full} about the {topic}: {message}."
    return StageDraft(instruction, state,
                 [_call("find_contact", query=target.full),
                  _call("send_mail", to=target.email, subject=topic.title(), body=body), FINISH],
                 [{"type": "mail_sent", "to": [target.email], "subject_contains": topic,
                   "body_contains": [day, p.signoff]},
                  {"type": "unchanged_except", "new_mail": 1}],
                 ["signoff"])


def forward_mail(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background(n_contacts=4)
    sender = w.person()
    recipient = w.person()
    w.contacts.append(recipient)
    code = str(w.number())
    subject = f"Order {code}"
    orig_body = f"Order {code} ships on {w.day(1, 9)}."
    target = w.add_mail(sender.email, subject, orig_body)
    w.add_mail(sender.email, f"Order {w.number()}", f"Order cancelled. {sender.first}")
    state = w.finalize()
    instruction = rng.choice(["Forward {s}'s mail about order {c} to {r}.",
                              "Send the order {c} mail from {s} on to {r}."]).format(
        s=sender.first, c=code, r=recipient.full)
    return StageDraft(instruction, state,
                 [_call("search_mail", query=code), _call("read_mail", mail_id=target["id"]),
                  _call("find_contact", query=recipient.full),
                  _call("send_mail", to=recipient.email, subject=f"Fwd: {subject}", body=f"{orig_body}\n\n{p.signoff}"),
                  FINISH],
                 [{"type": "mail_sent", "to": [recipient.email], "subject_contains": subject,
                   "body_contains": [orig_body.split(" ships")[0], "ships on", p.signoff]},
                  {"type": "unchanged_except", "new_mail": 1}],
                 ["signoff"])


def schedule_meeting(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background(n_contacts=4)
    who = w.person()
    w.contacts.append(who)
    date = w.day(1, 6)
    busy = rng.sample(HOURS, rng.randint(1, 2))
    for h in busy:
        other = rng.choice(w.contacts)
        w.events.append({"title": f"{rng.choice(TOPICS).title()} review", "date": date, "start": h,
                         "duration": 60, "attendees": [other.email]})
    free = next(h for h in HOURS if h not in busy)
    topic = rng.choice(TOPICS)
    state = w.finalize()
    instruction = (f"Set up a meeting about the {topic} with {who.full} on {date}, "
                   "in the first free hour between 09:00 and 12:00.")
    return StageDraft(instruction, state,
                 [_call("list_events", date=date), _call("find_contact", query=who.full),
                  _call("create_event", title=f"{topic.title()} meeting", date=date, start=free,
                        duration=p.meeting_minutes, attendees=who.email), FINISH],
                 [{"type": "event_exists", "date": date, "start": free, "duration": p.meeting_minutes,
                   "attendees": [who.email], "title_contains": topic},
                  {"type": "unchanged_except", "new_events": 1}],
                 ["meeting_minutes"])


def meeting_followup(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background(n_contacts=6)
    date = w.day(0, 5)
    topic, other_topic = rng.sample(TOPICS, 2)
    people = rng.sample(w.contacts, rng.randint(2, 3))
    others = [c for c in w.contacts if c not in people][:1]
    w.events.append({"title": f"{topic.title()} sync", "date": date, "start": "10:30", "duration": 30,
                     "attendees": [c.email for c in people]})
    w.events.append({"title": f"{other_topic.title()} sync", "date": date, "start": "15:00", "duration": 30,
                     "attendees": [c.email for c in others]})
    message, day = _message(rng, topic)
    state = w.finalize()
    emails = [c.email for c in people]
    instruction = f"Send everyone invited to the {topic} sync on {date} this note: {message}."
    body = _mail_body(message, p)
    return StageDraft(instruction, state,
                 [_call("list_events", date=date),
                  _call("send_mail", to=", ".join(emails), subject=f"{topic.title()} sync", body=body), FINISH],
                 [{"type": "mail_sent", "to": emails, "subject_contains": topic, "body_contains": [day, p.signoff]},
                  {"type": "unchanged_except", "new_mail": 1}],
                 ["signoff"])


def save_note(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background()
    topic = rng.choice(TOPICS)
    person = rng.choice(FIRST)
    title = rng.choice([f"{topic} ideas", f"{topic} checklist", f"call with {person}", f"{topic} questions"])
    text = rng.choice([f"Ask about the {topic} before {rng.choice(WEEKDAYS)}.",
                       f"Remember the {topic} numbers for {person}.",
                       f"Book a room for the {topic} talk."])
    slug = title.lower().replace(" ", "-")
    path = f"{p.notes_dir}/{slug}{p.note_ext}"
    instruction = rng.choice(["Make a note called '{t}': {x}", "Write down a note titled '{t}': {x}"]).format(t=title, x=text)
    state = w.finalize()
    key = text.rstrip(".")
    return StageDraft(instruction, state, [_call("write_file", path=path, content=text), FINISH],
                 [{"type": "file_exists", "path": path}, {"type": "file_contains", "path": path, "text": key},
                  {"type": "unchanged_except", "paths": [path]}],
                 ["notes"])


def add_contact_card(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background(n_contacts=4)
    new = w.person()
    topic = rng.choice(TOPICS)
    signature = f"{new.full}\n{new.company.title()}\nPhone {new.phone}"
    target = w.add_mail(new.email, f"Question on the {topic}",
                        f"Hello, could you share the {topic} plan?\n\n{signature}")
    state = w.finalize()
    instruction = rng.choice(["Add the person who wrote to me about the {t} to my contacts.",
                              "Save whoever asked me about the {t} as a contact."]).format(t=topic)
    args: dict[str, Any] = {"name": new.full, "email": new.email, "phone": new.phone}
    check: dict[str, Any] = {"type": "contact_exists", "email": new.email, "name": new.full, "phone": new.phone}
    if p.contact_company:
        args["company"] = new.company.title()
        check["company"] = new.company.title()
    else:
        check["company"] = ""
    return StageDraft(instruction, state,
                 [_call("search_mail", query=topic), _call("read_mail", mail_id=target["id"]),
                  ToolCall("add_contact", args), FINISH],
                 [check, {"type": "unchanged_except", "new_contacts": 1}],
                 ["contact_company"])


def cleanup_temp(rng: random.Random, p: Profile) -> StageDraft:
    w = World(rng, p)
    w.background()
    temps = []
    for _ in range(rng.randint(2, 3)):
        path = f"downloads/{rng.choice(['setup', 'movie', 'update', 'backup'])}-{w.number()}{rng.choice(p.temp_exts)}"
        w.files[path] = "partial data"
        temps.append(path)
    keep_ext = [e for e in TEMP_EXTS if e not in p.temp_exts]
    w.files[f"downloads/archive-{w.number()}{rng.choice(keep_ext)}"] = "keep me"
    w.files["downloads/" + rng.choice(OTHER_FILES).format(n=w.number())] = "keep me too"
    state = w.finalize()
    instruction = rng.choice(["Clear the temporary files out of my downloads.",
                              "Delete the leftover temporary downloads."])
    temps.sort()
    return StageDraft(instruction, state,
                 [_call("list_dir", path="downloads")] + [_call("delete", path=t) for t in temps] + [FINISH],
                 [{"type": "file_absent", "path": t} for t in temps] + [{"type": "unchanged_except", "paths": temps}],
                 ["temp_exts"])


def _draft(build: Callable[[random.Random, Profile], StageDraft], rng: random.Random, profile: str) -> Draft:
    """A family's draft for the named profile, its preference dimensions as the profile words them."""
    p = get_profile(profile)
    d = build(rng, p)
    prefs = p.preferences()
    return Draft(d.instruction, d.state, d.solution, d.checks, [prefs[k] for k in d.preferences])


def stage_family(name: str, hint: str, build: Callable[[random.Random, Profile], StageDraft],
                 areas: tuple[str, ...]) -> Family:
    """A STAGE family from a builder over a `Profile` (picklable: a partial of module functions)."""
    return Family(name=name, env="stage", hint=hint, draft=functools.partial(_draft, build), areas=areas)


# What the `stage` entry point of `distillery.families` registers, in this order.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    stage_family("file_invoice", "file a downloaded invoice where the user keeps invoices", file_invoice, ("files",)),
    stage_family("save_attachment", "save a mail attachment a person sent about a topic", save_attachment,
                 ("mail", "files")),
    stage_family("sort_newsletters", "move every newsletter out of the inbox", sort_newsletters, ("mail",)),
    stage_family("email_contact", "look a contact up and email them a message", email_contact, ("contacts", "mail")),
    stage_family("forward_mail", "find a mail, read it, look up a contact and forward it", forward_mail,
                 ("mail", "contacts")),
    stage_family("schedule_meeting", "book a meeting in the first free slot with a contact", schedule_meeting,
                 ("calendar", "contacts")),
    stage_family("meeting_followup", "mail everyone invited to a meeting", meeting_followup, ("calendar", "mail")),
    stage_family("save_note", "write a note where the user keeps notes", save_note, ("files",)),
    stage_family("add_contact_card", "add a mail's sender to the contacts from their signature", add_contact_card,
                 ("mail", "contacts")),
    stage_family("cleanup_temp", "delete the temporary files from downloads", cleanup_temp, ("files",)),
)}
