"""Pools on disk: JSON lines, written atomically."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.mining.conftest import rule

from distillery.mining.store import read_pool, write_pool

OLD = [rule("In file invoice tasks, files are moved into finance/invoices/.", 3, family="file_invoice",
            condition="move.dst dir"), rule("Check the calendar before booking.", 2)]


def test_pool_round_trips_through_jsonl_atomically(tmp_path):
    path = tmp_path / "experience" / "principles.jsonl"
    assert read_pool(path) == []                                       # missing file: empty pool
    write_pool(path, OLD)
    assert read_pool(path) == OLD
    with pytest.raises(ValueError, match="kind"):
        write_pool(path, [replace(OLD[0], kind="wisdom")])
    assert read_pool(path) == OLD                                      # the failed write left it whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["principles.jsonl"]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"principles.jsonl:3"):
        read_pool(path)
