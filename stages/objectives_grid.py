"""Stage `objectives_grid`: the recorded RL and distillation grid as a report and
claim rows.

Reads `experiments/objectives_grid.json` (the runs `python -m flows.grid --grid objectives`
collected from its DVC experiments; kept in Git, like params.yaml); writes
`reports/objectives_grid.md` (every run), `reports/objectives_grid.png` (greedy test success
per iteration, mean ± std over seeds: RL, distillation from the strong and the weak start)
and `reports/claims/objectives_grid.json` (the papers' findings, the project's bars and one row
per cell, and GKD against its no-teacher control when `experiments/gkd_sft_control.json`
exists), which the `claims` stage puts on `reports/claims.md`. Without a record the stage
writes an empty report that says how to make one, so `dvc repro` never needs the grid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distillery.evaluate.grid import html_page
from distillery.evaluate.objectives_grid import (
    claim_rows,
    control_rows,
    markdown,
    plot,
    runs_from_record,
    table,
)
from distillery.io import write_json, write_text
from stages.usage import take_no_options

RECORD = Path("experiments/objectives_grid.json")
GKD_CONTROL = Path("experiments/gkd_sft_control.json")   # experiments/gkd_sft_control.py (kept in Git)
REPORT = Path("reports/objectives_grid.md")
PAGE = Path("reports/objectives_grid.html")
FIGURE = Path("reports/objectives_grid.png")
CLAIMS = "reports/claims/objectives_grid.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("objectives_grid", __doc__, argv)
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {"runs": []}
    runs = runs_from_record(record)
    sets = record.get("sets") or []
    header = (f"# RL and distillation grid `{record.get('tag', '-')}`\n\n{len(runs)} finished runs; overrides on top "
              f"of params.yaml: {', '.join(f'`{s}`' for s in sets) or 'none'}. RL curves: greedy success on the "
              "held-out user's test tasks; distillation curves: the student's greedy success on the test split, "
              "with the teacher's beside it. Make or refresh the record with `make objectives-grid`.")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    if runs:
        plot(runs, str(FIGURE))
    else:   # DVC expects every declared output: an empty grid still gets its (empty) figure
        FIGURE.write_bytes(b"")
    write_text(markdown(runs, header, FIGURE.name if runs else None), REPORT)
    write_text(html_page(table(runs), f"RL and distillation grid {record.get('tag', '-')}", FIGURE.name if runs else None), PAGE)
    control = json.loads(GKD_CONTROL.read_text()) if GKD_CONTROL.is_file() else None
    write_json([c.to_dict() for c in claim_rows(runs) + control_rows(runs, control)], CLAIMS)
    print(f"objectives_grid: {len(runs)} runs -> {REPORT}, {FIGURE}, {CLAIMS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
