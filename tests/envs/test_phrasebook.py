"""Phrasebooks: what an environment tells the miner; STAGE's is registered with it and
speaks of its own checks and tools."""

from __future__ import annotations

from distillery.envs.base import env_spec, tool_specs
from distillery.envs.phrasebook import Phrasebook
from distillery.envs.stage.checks import CHECKS
from distillery.envs.stage.phrasebook import PHRASEBOOK, parse_check_name


def test_parse_check_name_reads_what_check_name_writes():
    assert parse_check_name("mail_in_folder(folder=reading, mail_id=m1)") == (
        "mail_in_folder", {"folder": "reading", "mail_id": "m1"})
    assert parse_check_name("unchanged_except()") == ("unchanged_except", {})
    assert parse_check_name("contact_exists(company=Acme, email=a@b.c, name=Uma Nash, phone=+1 555 7329)")[1] == {
        "company": "Acme", "email": "a@b.c", "name": "Uma Nash", "phone": "+1 555 7329"}
    assert parse_check_name("not a check") is None and parse_check_name("x(novalue)") is None


def test_a_family_phrase_comes_before_the_environments_and_check_types_are_read():
    book = Phrasebook(phrases={("move", "dst", "dir"): "files go to {value}"},
                      family_phrases={("file_invoice", "move", "dst", "dir"): "invoices go to {value}"},
                      parse_check=parse_check_name)
    assert book.phrase("file_invoice", "move", "dst", "dir") == "invoices go to {value}"
    assert book.phrase("save_note", "move", "dst", "dir") == "files go to {value}"
    assert book.phrase("save_note", "move", "src", "dir") is None
    assert book.check_type("file_exists(path=a/b.pdf)") == "file_exists" and book.check_type("oops") is None
    assert Phrasebook().check_type("file_exists(path=a/b.pdf)") is None   # no parser: unreadable


def test_stage_registers_its_phrasebook_about_its_own_checks_and_tools():
    assert env_spec("stage").phrasebook is PHRASEBOOK
    tools = {s.name: {p.name for p in s.params} for s in tool_specs("stage")}
    assert set(PHRASEBOOK.check_tools) <= set(CHECKS) and set(PHRASEBOOK.check_args) <= set(CHECKS)
    assert all(t in tools for ts in PHRASEBOOK.check_tools.values() for t in ts)
    for by_tool in PHRASEBOOK.check_args.values():
        for tool, (_, mapping) in by_tool.items():
            assert tool in tools and set(mapping.values()) <= tools[tool]
    for tool, arg, _ in [*PHRASEBOOK.phrases, *(k[1:] for k in PHRASEBOOK.family_phrases)]:
        assert tool in tools and (arg == "*" or arg in tools[tool])
    assert all("{value}" in p for p in [*PHRASEBOOK.phrases.values(), *PHRASEBOOK.family_phrases.values()])
