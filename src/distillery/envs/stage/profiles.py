"""Workspace profiles: a user's standing preferences, which task instructions never state
and task checks always enforce. Profiles are data.

- `default` (Sam Reed) is the habit: the values most users share.
- `u01` ... `u99` are *generated* training users: each takes the default's value on most
  dimensions and a different value from `VALUE_POOLS` on a few (a seeded function of the
  name). Training a student on many of them, with their principles in the prompt for part
  of the examples, teaches it a default habit and to follow principle text when present.
- `h01` ... `h99` are generated *held-out* users: drawn the same way (names and values from
  the same pools, so nothing about them is out of vocabulary) but with 4 dimensions changed,
  a combination no training user `u01`..`u07` has (a test checks it).
- `alex` and `jo` are hand-written held-out users who differ from the default on every
  dimension: a harder setting (a student that never succeeds has nothing to mine).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    user_name: str
    user_email: str
    invoice_dir: str            # where invoices are filed
    attachment_dir: str         # where saved attachments go
    newsletter_folder: str      # mail folder newsletters are moved to
    signoff: str                # how every sent mail ends
    meeting_minutes: int        # default length of a meeting
    notes_dir: str              # where notes are written
    note_ext: str               # notes' file extension
    temp_exts: tuple[str, ...]  # what counts as a temporary download
    contact_company: bool       # contacts always record the company

    def preferences(self) -> dict[str, str]:
        """Each preference as one sentence, keyed by the dimension a family uses."""
        return {
            "invoice_dir": f"Invoices are filed in {self.invoice_dir}/.",
            "attachment_dir": f"Saved attachments go in {self.attachment_dir}/.",
            "newsletter_folder": f"Newsletters belong in the mail folder '{self.newsletter_folder}'.",
            "signoff": f"Every mail ends with the sign-off '{self.signoff}'.",
            "meeting_minutes": f"Meetings last {self.meeting_minutes} minutes unless stated.",
            "notes": f"Notes are saved as {self.notes_dir}/<title-in-kebab-case>{self.note_ext}.",
            "temp_exts": f"Temporary downloads are the {' and '.join(self.temp_exts)} files.",
            "contact_company": ("New contacts always record their company." if self.contact_company
                                else "New contacts record name, address and phone only."),
        }


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("default", "Sam Reed", "sam.reed@home.net", "finance/invoices", "documents/attachments",
                "reading", "Best, Sam", 30, "notes", ".md", (".tmp", ".part"), True),
        Profile("alex", "Alex Kim", "alex.kim@home.net", "paperwork/bills", "inbox-files",
                "newsletters", "Cheers, Alex", 45, "journal", ".txt", (".tmp", ".bak"), False),
        Profile("jo", "Jo Park", "jo.park@home.net", "admin/receipts", "downloads/saved",
                "later", "Thanks, Jo", 60, "docs/notes", ".md", (".part", ".crdownload"), True),
    )
}


# The values each preference dimension takes across generated users (the first of each is
# the default's). Folders are ones the workspace builder creates on demand.
VALUE_POOLS: dict[str, tuple] = {
    "invoice_dir": ("finance/invoices", "paperwork/bills", "admin/receipts", "money/invoices"),
    "attachment_dir": ("documents/attachments", "inbox-files", "downloads/saved", "files/received"),
    "newsletter_folder": ("reading", "newsletters", "later", "digest"),
    "signoff_word": ("Best", "Cheers", "Thanks", "Regards"),
    "meeting_minutes": (30, 45, 60, 20),
    "notes_dir": ("notes", "journal", "docs/notes", "memos"),
    "note_ext": (".md", ".txt"),
    "temp_exts": ((".tmp", ".part"), (".tmp", ".bak"), (".part", ".crdownload"), (".bak", ".crdownload")),
    "contact_company": (True, False),
}
USERS = (("Ada", "Moreno"), ("Ravi", "Patel"), ("Lina", "Okafor"), ("Tess", "Hughes"), ("Noah", "Byrne"),
         ("Ines", "Duarte"), ("Kai", "Larsen"), ("Mara", "Quist"))
GENERATED = re.compile(r"[uh]\d{2}")
CHANGED = {"u": 3, "h": 4}   # dimensions changed from the default: training / held-out users


def generated_profile(name: str, n_changed: int | None = None) -> Profile:
    """User `name` (training u01..u99, held-out h01..h99): the default with a few dimensions
    changed, chosen and valued by a seeded function of the name."""
    if not GENERATED.fullmatch(name):
        raise ValueError(f"generated profile names are u01..u99 or h01..h99, not {name!r}")
    n_changed = CHANGED[name[0]] if n_changed is None else n_changed
    rng = random.Random(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little"))
    first, last = USERS[rng.randrange(len(USERS))]
    base = PROFILES["default"]
    values = {"signoff_word": "Best"}
    for dim in rng.sample(sorted(VALUE_POOLS), n_changed):
        values[dim] = rng.choice(VALUE_POOLS[dim][1:])
    word = values.pop("signoff_word")
    return replace(base, name=name, user_name=f"{first} {last}", user_email=f"{first.lower()}.{last.lower()}@home.net",
                   signoff=f"{word}, {first}", **values)


def get_profile(name: str) -> Profile:
    if name in PROFILES:
        return PROFILES[name]
    if GENERATED.fullmatch(name):
        return generated_profile(name)
    raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}, or generated u01..u99, h01..h99")


def preference_values(p: Profile) -> tuple:
    """The profile's preference combination (what makes two users behave differently)."""
    return (p.invoice_dir, p.attachment_dir, p.newsletter_folder, p.signoff.split(",")[0], p.meeting_minutes,
            p.notes_dir, p.note_ext, p.temp_exts, p.contact_company)


def vocabulary_text() -> str:
    """Every value a preference can take and every user name, as one text: the profiles'
    vocabulary, for tokenizers (a held-out user's values are then familiar tokens)."""
    words = [f"{first} {last}" for first, last in USERS]
    for values in VALUE_POOLS.values():
        words += [" ".join(v) if isinstance(v, tuple) else str(v) for v in values]
    return "\n".join(words)
