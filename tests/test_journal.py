"""The journal of finished pieces an interrupted run resumes from, and what `distillery eval`
keeps of it."""

from __future__ import annotations

from typing import Any

import pytest

from distillery.agents.evaluate_policy import finished_episodes, journaled_episode
from distillery.journal import JournalHeader, JournalMismatch, differences, open_journal
from distillery.types import Episode, Step

HEADER = JournalHeader("f" * 64, {"policy": "m", "tasks": 2, "k": 1})


def episode(eid: str, failure_mode: str = "success", score: float = 1.0) -> Episode:
    return Episode(episode_id=eid, env="stage", task_id=eid.split(":")[0], family="save_note", split="test",
                   profile="p", policy="m", model="m", iteration=0, group=f"{eid}:i0", sample=0, seed=7,
                   success=failure_mode == "success", score=score, n_steps=1, invalid_actions=0, tokens_in=3,
                   tokens_out=2, cost_usd=0.0, wall_s=0.125, finished=True, failure_mode=failure_mode,
                   failed_checks=["c1"], injected=["x"], error="boom" if failure_mode == "error" else "")


def step(eid: str, t: int = 0) -> Step:
    return Step(episode_id=eid, t=t, observation="o\nü", action_text="a()", tool="a", args_json="{}", valid=True,
                error="", feedback="ok", reward=1 / 3, state_hash="h", tokens_in=3, tokens_out=2, logprob=None,
                injected=[])


def line(ep: Episode, steps: list[Step], **notes: int) -> dict[str, Any]:
    return {"episode": ep.to_row(), "steps": [s.to_row() for s in steps], "notes": notes}


def reopen(path):
    return open_journal(path, HEADER, journaled_episode, what="episodes")


def test_episodes_read_back_as_written_and_errored_ones_are_played_again(tmp_path):
    path = tmp_path / "out" / "j.jsonl"
    journal = reopen(path)
    assert not path.exists()            # nothing is written until a piece ends
    journal.append(line(episode("t1"), [step("t1"), step("t1", 1)], repaired=1))
    journal.append(line(episode("t2", "error"), [], repaired=1, errors=1))
    again = reopen(path)
    assert set(finished_episodes(again.records)) == {"t1"} and not again.dropped_tail
    kept = finished_episodes(again.records)["t1"]
    assert kept.episode == episode("t1") and kept.steps == [step("t1"), step("t1", 1)]
    assert again.records[-1].notes == {"repaired": 1, "errors": 1}
    # The episode played again supersedes its errored line.
    again.append(line(episode("t2", score=0.5), [step("t2")], repaired=2, errors=1))
    third = finished_episodes(reopen(path).records)
    assert set(third) == {"t1", "t2"} and third["t2"].episode.score == 0.5
    assert "resuming: 2 episodes of an interrupted run are kept from" in again.resuming(2)


def test_a_line_cut_short_is_dropped_and_the_next_piece_appends_cleanly(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = reopen(path)
    journal.append(line(episode("t1"), [step("t1")]))
    journal.append(line(episode("t2"), [step("t2")]))
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])       # a kill in the middle of the second line
    cut = reopen(path)
    assert [r.episode.episode_id for r in cut.records] == ["t1"] and cut.dropped_tail
    assert "what followed its last whole line, cut short by the interruption, was dropped" in cut.resuming(1)
    assert path.read_bytes() == whole[:whole.index(b"\n", whole.index(b"\n") + 1) + 1]
    cut.append(line(episode("t2"), [step("t2")]))
    assert set(finished_episodes(reopen(path).records)) == {"t1", "t2"}


def test_a_damaged_line_is_skipped_and_said_and_the_lines_after_it_are_kept(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = reopen(path)
    journal.append(line(episode("t1"), [step("t1")]))
    with path.open("a") as f:
        f.write('{"episode": {"episode_id": "t2"}, "steps": [], "notes": {}}\n')   # another shape
        f.write("garbage\n")
    reopen(path).append(line(episode("t3"), [step("t3")]))
    again = reopen(path)
    assert [r.episode.episode_id for r in again.records] == ["t1", "t3"] and again.unreadable == 2
    assert "(2 lines that could not be read were skipped)" in again.resuming(2)


def test_a_journal_with_nothing_readable_says_so(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(HEADER.to_line() + "\ngarbage\n")
    journal = reopen(path)
    assert not journal.records and journal.damaged
    assert journal.resuming(0) == f"{path}: no episodes of an interrupted run could be kept (1 line that could " \
                                  "not be read was skipped)"


def test_a_journal_of_other_settings_is_refused_naming_what_differs_unless_discarded(tmp_path):
    path = tmp_path / "j.jsonl"
    reopen(path).append(line(episode("t1"), [step("t1")]))
    other = JournalHeader("0" * 64, {"policy": "m", "tasks": 2, "k": 3})
    with pytest.raises(JournalMismatch, match=r"j.jsonl: holds 1 episodes .*\(k 1 there, 3 here\)"):
        open_journal(path, other, journaled_episode, what="episodes")
    fresh = open_journal(path, other, journaled_episode, resume=False)
    assert not fresh.records and not path.exists()
    assert "other contents" in differences(HEADER.about, dict(HEADER.about))


@pytest.mark.parametrize("content", [b"", b"not json\n", b'{"journal": 99}\n', b"\xff\xfe\n"])
def test_a_file_without_a_journal_header_is_started_afresh(tmp_path, content):
    path = tmp_path / "j.jsonl"
    path.write_bytes(content)
    journal = reopen(path)
    assert not journal.records
    journal.append(line(episode("t1"), [step("t1")]))
    assert len(reopen(path).records) == 1


def test_a_folder_in_the_journals_place_is_named_and_a_header_of_another_shape_still_refused(tmp_path):
    (tmp_path / "j.jsonl").mkdir()
    with pytest.raises(ValueError, match="j.jsonl: not a file, where the journal of an interrupted run is kept"):
        reopen(tmp_path / "j.jsonl")
    path = tmp_path / "k.jsonl"
    path.write_text('{"journal": 1, "fingerprint": "other", "about": ["not", "a", "mapping"]}\n')
    with pytest.raises(JournalMismatch, match=r"holds 0 episodes .*\(policy \(none\) there, m here"):
        reopen(path)
