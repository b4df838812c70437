"""Stage `claims`: one page of what the papers found beside what we measured.

Reads every `reports/claims/<area>.json` a stage or flow wrote (`types.Claim` rows) and shows
`reports/<area>.png` under its table when there is one; writes `reports/claims.md`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from distillery.evaluate.claims import read_claims, render_page
from distillery.io import write_text
from stages.usage import take_no_options

OUT = Path("reports/claims.md")


def main(argv: list[str] | None = None) -> int:
    take_no_options("claims", __doc__, argv)
    files = sorted(Path("reports/claims").glob("*.json"))
    if not files:
        print("claims: no reports/claims/*.json to assemble", file=sys.stderr)
        return 1
    sources = {f.stem: read_claims(f) for f in files}
    figures = {src: f"{src}.png" for src in sources if (OUT.parent / f"{src}.png").is_file()}
    write_text(render_page(sources, figures), OUT)
    print(f"claims: {sum(len(v) for v in sources.values())} rows from {len(files)} file(s) -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
