"""Stage `claims`: one table of what the papers found beside what we measured.

Reads every `metrics/*_claims.json` that a stage or flow wrote (rows of {paper, finding,
paper_value, measured, holds, detail}) and shows `reports/<area>.png` under its table when
there is one; writes `reports/claims.md`. A row is copied as measured, whichever
way it falls: this page reports, it does not judge.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distillery.io import write_text

OUT = "reports/claims.md"
FIELDS = ("paper", "finding", "paper_value", "measured", "holds", "detail")


def _cell(v: object) -> str:
    text = {True: "yes", False: "**no**"}.get(v, str(v)) if isinstance(v, bool) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def render(sources: dict[str, list[dict]], figures: dict[str, str] | None = None) -> str:
    """The page; `figures[source]`, when given, is an image (relative to reports/) shown under
    that source's table."""
    figures = figures or {}
    lines = ["# Claims: the papers' findings beside our measurements", "",
             "Each row is written by the stage that measured it (`metrics/<area>_claims.json`); "
             "`holds` is that stage's verdict, with its rule in the detail. Seeds and spread are in "
             "the measured value or the detail.", ""]
    for source, rows in sorted(sources.items()):
        lines += [f"## {source}", "", "| paper | finding | paper reports | we measured | holds | detail |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            missing = [f for f in FIELDS if f not in r]
            if missing:
                raise ValueError(f"{source}: a claim row lacks {missing}: {r}")
            lines.append("| " + " | ".join(_cell(r[f]) for f in FIELDS) + " |")
        lines.append("")
        if source in figures:
            lines += [f"![{source}]({figures[source]})", ""]
    return "\n".join(lines)


def main() -> int:
    files = sorted(Path("metrics").glob("*_claims.json"))
    if not files:
        print("claims: no metrics/*_claims.json to assemble", file=sys.stderr)
        return 1
    sources = {f.name.removesuffix("_claims.json"): json.loads(f.read_text()) for f in files}
    # A source's figure, when its stage or flow drew one: reports/<source>.png.
    figures = {src: f"{src}.png" for src in sources if (Path(OUT).parent / f"{src}.png").is_file()}
    write_text(render(sources, figures), OUT)
    print(f"claims: {sum(len(v) for v in sources.values())} rows from {len(files)} file(s) -> {OUT}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
