"""reports/claims.md: every row of every area, verdicts as written, malformed rows refused."""

from __future__ import annotations

import pytest
from stages.claims import render


def test_rows_render_under_their_area_with_both_verdicts():
    md = render({"pghs": [
        {"paper": "PGHS", "finding": "fused error", "paper_value": "8.80%", "measured": "11.8% ± 0.3",
         "holds": False, "detail": "3 seeds | held-out merchants"},
        {"paper": "PGHS", "finding": "beats reasoning", "paper_value": "45.8%", "measured": "82%",
         "holds": True, "detail": ""}]})
    assert "## pghs" in md
    assert "| PGHS | fused error | 8.80% | 11.8% ± 0.3 | **no** | 3 seeds \\| held-out merchants |" in md
    assert "| beats reasoning | 45.8% | 82% | yes |" in md


def test_a_row_missing_a_field_names_it():
    with pytest.raises(ValueError, match="lacks \\['holds'\\]"):
        render({"x": [{"paper": "P", "finding": "f", "paper_value": "1", "measured": "2", "detail": ""}]})
