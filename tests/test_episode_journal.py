"""The journal of finished episodes an interrupted rollout resumes from."""

from __future__ import annotations

import pytest

from distillery.episode_journal import JournalHeader, JournalMismatch, differences, open_journal
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


def test_episodes_read_back_as_written_and_errored_ones_are_played_again(tmp_path):
    path = tmp_path / "out" / "j.jsonl"
    journal = open_journal(path, HEADER)
    assert not path.exists()            # nothing is written until an episode ends
    journal.record(episode("t1"), [step("t1"), step("t1", 1)], {"repaired": 1})
    journal.record(episode("t2", "error"), [], {"repaired": 1, "errors": 1})
    again = open_journal(path, HEADER)
    assert set(again.finished) == {"t1"} and not again.dropped_tail
    ep, steps = again.finished["t1"]
    assert ep == episode("t1") and steps == [step("t1"), step("t1", 1)]
    assert again.notes == {"repaired": 1, "errors": 1}
    # The replayed episode supersedes its errored line; notes add to the earlier run's.
    again.record(episode("t2", score=0.5), [step("t2")], {"repaired": 2})
    third = open_journal(path, HEADER)
    assert set(third.finished) == {"t1", "t2"} and third.finished["t2"][0].score == 0.5
    assert third.notes == {"repaired": 3, "errors": 1}


def test_a_line_cut_short_is_dropped_and_the_next_episode_appends_cleanly(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = open_journal(path, HEADER)
    journal.record(episode("t1"), [step("t1")])
    journal.record(episode("t2"), [step("t2")])
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])       # a kill in the middle of the second line
    cut = open_journal(path, HEADER)
    assert set(cut.finished) == {"t1"} and cut.dropped_tail
    assert path.read_bytes() == whole[:whole.index(b"\n", whole.index(b"\n") + 1) + 1]
    cut.record(episode("t2"), [step("t2")])
    assert set(open_journal(path, HEADER).finished) == {"t1", "t2"}


def test_a_journal_of_other_settings_is_refused_naming_what_differs_unless_discarded(tmp_path):
    path = tmp_path / "j.jsonl"
    open_journal(path, HEADER).record(episode("t1"), [step("t1")])
    other = JournalHeader("0" * 64, {"policy": "m", "tasks": 2, "k": 3})
    with pytest.raises(JournalMismatch, match=r"j.jsonl: holds 1 episodes .*\(k 1 there, 3 here\)"):
        open_journal(path, other)
    fresh = open_journal(path, other, resume=False)
    assert not fresh.finished and not path.exists()
    assert "other task contents or model files" in differences(HEADER.about, dict(HEADER.about))


@pytest.mark.parametrize("content", [b"", b"not json\n", b'{"journal": 99}\n', b"\xff\xfe\n"])
def test_a_file_without_a_journal_header_is_started_afresh(tmp_path, content):
    path = tmp_path / "j.jsonl"
    path.write_bytes(content)
    journal = open_journal(path, HEADER)
    assert not journal.finished
    journal.record(episode("t1"), [step("t1")])
    assert set(open_journal(path, HEADER).finished) == {"t1"}
