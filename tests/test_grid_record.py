"""Re-running some cells of a grid (`--only`) on a machine that lacks the other cells'
experiment refs keeps their recorded runs (`flows.grid.keep_recorded`), and replaces the
re-run cells' old runs."""

from __future__ import annotations

from flows.grid import keep_recorded, select_cells

from distillery.evaluate import objectives_grid as spec


def _run(label_prefix: str, seed: int, tag: str = "main") -> dict:
    cell = select_cells(spec.cells(), label_prefix)[0]
    return {"experiment": spec.exp_name(cell, seed, tag), "metrics": {"seed": seed}}


def test_only_the_rerun_cells_are_replaced():
    old = [_run("rl/gigpo", s) for s in (0, 1, 2)] + [_run("rl/siri", s) for s in (0, 1, 2)]
    record = {"tag": "main", "sets": [], "runs": old}
    new = [_run("rl/siri", 0)]            # siri re-run here; seeds 1 and 2 failed
    rerun = {c.label for c in select_cells(spec.cells(), "rl/siri")}
    kept = keep_recorded(record, new, "main", spec, rerun)
    assert [r["experiment"] for r in kept] == [r["experiment"] for r in old[:3]]   # no stale siri run


def test_collecting_keeps_what_was_not_found_and_other_tags_are_ignored():
    old = [_run("rl/gigpo", 0), _run("rl/grpo", 0)]
    record = {"tag": "main", "runs": old}
    assert keep_recorded(record, [old[0]], "main", spec, set()) == [old[1]]
    assert keep_recorded(record, [], "other", spec, set()) == []
    assert keep_recorded({}, [], "main", spec, set()) == []
    # a full re-run (every cell selected) keeps nothing from before
    everything = {c.label for c in spec.cells()}
    assert keep_recorded(record, [], "main", spec, everything) == []
