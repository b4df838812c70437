"""Fixtures shared by the task-drafting tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every episode's sandbox under one folder of this test, so what escaped would be seen."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setenv("DISTILLERY_SANDBOX", str(root))
    return root
