"""Stage `internalize_grid`: the recorded internalization grid as a report and claim rows.

Reads `experiments/internalize_grid.json` (the runs `flows/grid.py` collected from its DVC
experiments; kept in Git, like params.yaml); writes `reports/internalize_grid.md` (every
run), `reports/internalize_grid.png` (success per iteration, mean ± std over seeds) and
`reports/claims/internalize_grid.json` (the paper's findings and one row per cell), which the
`claims` stage puts on `reports/claims.md`. Without a record there is nothing to render: the
stage says how to make one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distillery.evaluate.grid import claim_rows, html_page, markdown, plot, runs_from_record, table
from distillery.io import write_json, write_text
from stages.usage import take_no_options

RECORD = Path("experiments/internalize_grid.json")
REPORT = Path("reports/internalize_grid.md")
PAGE = Path("reports/internalize_grid.html")
FIGURE = Path("reports/internalize_grid.png")
CLAIMS = "reports/claims/internalize_grid.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("internalize_grid", __doc__, argv)
    if not RECORD.is_file():
        print(f"internalize_grid: no {RECORD}; run the grid first (`make grid`)", file=sys.stderr)
        return 1
    record = json.loads(RECORD.read_text())
    runs = runs_from_record(record)
    sets = record.get("sets") or []
    header = (f"# Internalization grid `{record.get('tag', '?')}`\n\n{len(runs)} finished runs of 8 cells; overrides "
              f"on top of params.yaml: {', '.join(f'`{s}`' for s in sets) or 'none'}. Curves are greedy success on "
              "the held-out user's test tasks: before training, then after each iteration. `teacher_sampled`: the "
              "warm-up model with the run's mined pool injected (mean over sampling seeds).")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    if runs:
        plot(runs, str(FIGURE))
    else:   # DVC expects every declared output: an empty grid still gets its (empty) figure
        FIGURE.write_bytes(b"")
    write_text(markdown(runs, header, FIGURE.name if runs else None), REPORT)
    write_text(html_page(table(runs), f"Internalization grid {record.get('tag', '?')}", FIGURE.name if runs else None), PAGE)
    write_json([c.to_dict() for c in claim_rows(runs)], CLAIMS)
    print(f"internalize_grid: {len(runs)} runs -> {REPORT}, {FIGURE}, {CLAIMS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
