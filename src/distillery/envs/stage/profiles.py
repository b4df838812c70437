"""Workspace profiles: a user's standing preferences, which task instructions never state
and task checks always enforce. Profiles are data. `default` is what the default params
use; the others are held-out users whose preferences an agent must learn from experience.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
