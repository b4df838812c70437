"""The table track's data contract: one row per item (a table image, a question, its gold
chain), as `vision.tables.items_frame` writes it.

The library layer that draws tables and checks chains sits above this one, so the writer
records the rule critic's verdict on the oracle chain (``oracle_valid``, ``oracle_reason``)
and this suite holds every kept row to it; it checks the PNG itself here (present, its
recorded hash, square RGB) and that no (table, question) pair is in two rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from distillery.quality.suites import Refs, Suite, between, holds, not_null, one_of, unique

TABLE_ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,
    "split": pl.String,            # train | test | test_large | test_long
    "path": pl.String,             # the PNG, relative to the repository root
    "png_sha256": pl.String,
    "table": pl.String,            # JSON [[value, ...], ...]
    "n_rows": pl.Int64,
    "n_cols": pl.Int64,
    "kind": pl.String,
    "question": pl.String,
    "chain": pl.String,            # the gold chain
    "cells": pl.String,            # JSON [[row, col], ...] the gold program reads
    "answer": pl.Int64,
    "n_steps": pl.Int64,
    "shortcut": pl.Boolean,
    "oracle_valid": pl.Boolean,    # the rule critic passes the gold chain
    "oracle_reason": pl.String,    # why not (null when it does)
}

TABLE_SPLITS = ("train", "test", "test_large", "test_long")
TABLE_KINDS = ("lookup", "argmax", "filtered_sum", "difference", "two_hop")


def _png_ok(path: str | None, sha: str | None) -> bool:
    if not path or not sha:
        return False
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != sha:
        return False
    from PIL import Image, UnidentifiedImageError

    try:
        import io

        with Image.open(io.BytesIO(data)) as img:
            return img.mode == "RGB" and img.size[0] == img.size[1]
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def _derive(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    ok = [_png_ok(p, s) for p, s in zip(frame["path"].to_list(), frame["png_sha256"].to_list(), strict=True)]
    return frame.with_columns(pl.Series("_png_ok", ok, dtype=pl.Boolean),
                              (pl.col("table") + "|" + pl.col("question")).alias("_content"))


def _expectations(refs: Refs) -> list:
    return [
        *not_null("item_id", "split", "path", "table", "kind", "question", "chain", "cells", "answer", "n_steps"),
        *unique("item_id"), *unique("_content"),
        *one_of("split", TABLE_SPLITS), *one_of("kind", TABLE_KINDS),
        *between("answer", 0, 999), *between("n_rows", 1, 9), *between("n_cols", 1, 9), *between("n_steps", 2, 24),
        *holds("oracle_valid", "the rule critic passes the gold chain", show=("item_id", "oracle_reason")),
        *holds("_png_ok", "the PNG is there, has its recorded hash and is a square RGB image", show=("path",)),
    ]


TABLE_ITEMS = Suite(
    name="table_items",
    id_columns=("item_id",),
    schema=TABLE_ITEM_SCHEMA,
    expectations=_expectations,
    derive=_derive,
    description="Table items: the gold chain passes the rule critic, the PNG is intact, no item twice.",
)
