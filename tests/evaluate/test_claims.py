"""reports/claims.md: every row of every area, verdicts as written, malformed rows refused."""

from __future__ import annotations

import json

import pytest

from distillery.evaluate.claims import read_claims, render_page
from distillery.types import Claim


def test_rows_render_under_their_area_with_every_verdict():
    md = render_page({"pghs": [
        Claim("PGHS", "fused error", "8.80%", "11.8% ± 0.3", False, "3 seeds | held-out merchants",
              spread="± 0.3 (std over seeds)", seeds="0, 1, 2", command="dvc repro pghs"),
        Claim("PGHS", "beats reasoning", "45.8%", "82%", True),
        Claim("PGHS", "a cell", "-", "0.5", None)]})
    assert "## pghs" in md
    assert ("| PGHS | fused error | 8.80% | 11.8% ± 0.3 | **no** | ± 0.3 (std over seeds) | 0, 1, 2 | "
            "3 seeds \\| held-out merchants | `dvc repro pghs` |") in md
    assert "| beats reasoning | 45.8% | 82% | yes | - | - |  | - |" in md
    assert "| a cell | - | 0.5 | - |" in md


def test_a_row_missing_a_field_names_the_file_and_row(tmp_path):
    path = tmp_path / "x_claims.json"
    path.write_text(json.dumps([{"paper": "P", "finding": "f", "paper_value": "1", "measured": "2", "detail": ""}]))
    with pytest.raises(ValueError, match=r"x_claims.json: row 0 is not a claim.*holds"):
        read_claims(path)


def test_an_unknown_field_is_refused(tmp_path):
    path = tmp_path / "x_claims.json"
    path.write_text(json.dumps([{**Claim("P", "f", "1", "2", True).to_dict(), "verdict": "yes"}]))
    with pytest.raises(ValueError, match="unknown field"):
        read_claims(path)
