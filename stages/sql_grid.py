"""Stage `sql_grid`: the recorded SQL grid as a report and claim rows.

Reads `experiments/sql_grid.json` (the runs `python -m flows.grid --grid sql` collected from
its DVC experiments; kept in Git); writes `reports/sql_grid.md` (every run) and
`reports/sql_grid.html` and
`reports/claims/sql_grid.json` (TRUST-SQL's findings judged over seeds, one row per cell),
which the `claims` stage puts on `reports/claims.md`. Without a record it writes an empty
report that says how to make one, so `dvc repro` never needs the grid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distillery.evaluate.grid import html_page
from distillery.evaluate.sql_grid import claim_rows, markdown, runs_from_record, table
from distillery.io import write_json, write_text
from stages.usage import take_no_options

RECORD = Path("experiments/sql_grid.json")
REPORT = Path("reports/sql_grid.md")
PAGE = Path("reports/sql_grid.html")
CLAIMS = "reports/claims/sql_grid.json"


def main(argv: list[str] | None = None) -> int:
    take_no_options("sql_grid", __doc__, argv)
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {"runs": []}
    runs = runs_from_record(record)
    sets = record.get("sets") or []
    header = (f"# SQL grid `{record.get('tag', '-')}`\n\n{len(runs)} finished runs; overrides on top of params.yaml: "
              f"{', '.join(f'`{s}`' for s in sets) or 'none'}. Accuracy: test-suite execution accuracy of the "
              "final student (greedy) on held-out databases of the training domains and naming styles; "
              "`test_accuracy`: on the test split (unseen domains and styles); `acc@N`: on the schema-size set of "
              "about N tables. "
              "Make or refresh the record with `make sql-grid`.")
    write_text(markdown(runs, header), REPORT)
    write_text(html_page(table(runs), f"SQL grid {record.get('tag', '-')}", None), PAGE)
    write_json([c.to_dict() for c in claim_rows(runs)], CLAIMS)
    print(f"sql_grid: {len(runs)} runs -> {REPORT}, {CLAIMS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
