"""The STAGE tools: one declaration each, the single source of the JSON schema shown to
function-calling LLMs, the compact text syntax shown to small models (`ToolSpec.signature`)
and the argument kinds the random policy samples from. Implementations live in env.py."""

from __future__ import annotations

from distillery.envs.base import ToolParam as P
from distillery.envs.base import ToolSpec

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec("list_dir", "List a folder of the user's files (folders end with '/').",
             (P("path", description="folder relative to the home folder; '.' is the home folder",
                required=False, kind="folder"),)),
    ToolSpec("read_file", "Show the text of a file.", (P("path", description="file path", kind="path"),)),
    ToolSpec("write_file", "Create or overwrite a text file; missing folders are created.",
             (P("path", description="file path", kind="path"),
              P("content", description="the whole text of the file", kind="text")), mutates=True),
    ToolSpec("move", "Move or rename a file; a destination ending in '/' or naming a folder moves it into that folder.",
             (P("src", description="file to move", kind="path"),
              P("dst", description="new path or folder", kind="path")), mutates=True),
    ToolSpec("delete", "Delete a file.", (P("path", description="file path", kind="path"),), mutates=True),
    ToolSpec("search_mail", "Find mail whose sender, subject or text contains the words of the query.",
             (P("query", description="words to look for", kind="text"),
              P("folder", description="only this mail folder", required=False, kind="folder"))),
    ToolSpec("read_mail", "Show one mail in full, with its attachments' names.",
             (P("mail_id", description="id from search_mail, e.g. m3", kind="mail_id"),), mutates=True),
    ToolSpec("send_mail", "Send a mail; several recipients are separated by commas.",
             (P("to", description="recipient address(es)", kind="email"),
              P("subject", description="subject line", kind="text"),
              P("body", description="text of the mail", kind="text"),
              P("cc", description="copy address(es)", required=False, kind="email")), mutates=True),
    ToolSpec("move_mail", "Move a mail to a mail folder (created if missing).",
             (P("mail_id", description="id of the mail", kind="mail_id"),
              P("folder", description="mail folder name", kind="folder")), mutates=True),
    ToolSpec("save_attachment", "Save a mail's attachment as a file.",
             (P("mail_id", description="id of the mail", kind="mail_id"),
              P("name", description="attachment file name", kind="path"),
              P("path", description="where to save it", kind="path")), mutates=True),
    ToolSpec("list_events", "List calendar events on a date (all upcoming events if no date).",
             (P("date", description="YYYY-MM-DD", required=False, kind="date"),)),
    ToolSpec("create_event", "Add a calendar event.",
             (P("title", description="event title", kind="text"),
              P("date", description="YYYY-MM-DD", kind="date"),
              P("start", description="HH:MM, 24-hour", kind="time"),
              P("duration", type="integer", description="minutes", required=False),
              P("attendees", description="attendee addresses separated by commas", required=False,
                kind="email")), mutates=True),
    ToolSpec("find_contact", "Look up contacts by name, company or address.",
             (P("query", description="words to look for", kind="name"),)),
    ToolSpec("add_contact", "Add a person to the contacts.",
             (P("name", description="full name", kind="name"),
              P("email", description="address", kind="email"),
              P("phone", description="phone number", required=False, kind="text"),
              P("company", description="company", required=False, kind="name")), mutates=True),
    ToolSpec("finish", "Declare the task done; the episode ends.", ()),
)

TOOLS_BY_NAME = {s.name: s for s in TOOL_SPECS}
