"""The claims page: each paper's findings beside what we measured (`types.Claim` rows).

Rows are written by the code that measured them (`reports/claims/<area>.json`); this page
copies them as measured, whichever way they fall: it reports, it does not judge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from distillery.types import Claim

COLUMNS = ("paper", "finding", "paper reports", "we measured", "holds", "spread", "seeds", "detail", "reproduce")


def read_claims(path: str | Path) -> list[Claim]:
    """The rows of one claims file; an unreadable row names the file and the row."""
    rows = json.loads(Path(path).read_text())
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(Claim.from_dict(row))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: row {i} is not a claim ({e})") from e
    return out


def holds_text(holds: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[holds]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_table(claims: Sequence[Claim]) -> list[str]:
    """A markdown table of `claims`, one row each."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in claims:
        cells = (c.paper, c.finding, c.paper_value, c.measured, holds_text(c.holds), c.spread or "-",
                 c.seeds or "-", c.detail, f"`{c.command}`" if c.command else "-")
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return lines


def render_page(sources: Mapping[str, Sequence[Claim]], figures: Mapping[str, str] | None = None) -> str:
    """The whole page, one section per source (sorted); `figures[source]`, when given, is an
    image (relative to the page) shown under that source's table."""
    figures = figures or {}
    lines = ["# Claims: the papers' findings beside our measurements", "",
             "Each row is written by the stage that measured it (`reports/claims/<area>.json`); "
             "`holds` is that stage's verdict, with its rule in the detail (`-`: nothing comparable "
             "was measured). Spread and seeds say how sure each number is; the last column reproduces it.", ""]
    for source, rows in sorted(sources.items()):
        lines += [f"## {source}", "", *claims_table(rows), ""]
        if source in figures:
            lines += [f"![{source}]({figures[source]})", ""]
    return "\n".join(lines)
