"""Copy the claims page's tables into docs/results.md (between its claims markers).

    python -m tools.results        # after `make repro` (reports/claims.md exists)

docs/ is kept in Git and reports/ is a DVC output: this is how the measured tables reach
the documentation without anyone retyping a number.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
# An image the claims page links beside itself (reports/x.png) is ../reports/x.png from docs/.
_LOCAL_IMAGE = re.compile(r"!\[([^\]]*)\]\((?![a-z]+://|/|\.\./)([^)]+)\)")


def splice(doc: str, claims_page: str) -> str:
    """`doc` with the text between its markers replaced by the claims page's sections."""
    if START not in doc or END not in doc:
        raise ValueError(f"docs/results.md has no {START} ... {END} markers to fill")
    body = claims_page.split("\n## ", 1)
    sections = "### " + body[1].replace("\n## ", "\n### ") if len(body) > 1 else ""
    sections = _LOCAL_IMAGE.sub(r"![\1](../reports/\2)", sections)
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{sections.strip()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args([] if argv is None else argv)   # no options: --help says what it does
    claims = ROOT / "reports" / "claims.md"
    if not claims.is_file():
        print(f"{claims.relative_to(ROOT)} not found: run `make repro` first", file=sys.stderr)
        return 1
    doc = ROOT / "docs" / "results.md"
    text = splice(doc.read_text(), claims.read_text())
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(doc)
    print(f"docs/results.md: claims tables copied from {claims.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
