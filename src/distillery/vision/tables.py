"""The table track's data: table images rendered with pillow, questions backed by small
programs (`envs.table.chains`), and splits by table size and program length.

    items = generate_items(TableDataConfig())          # every split, deterministic in the seed
    img = render_table(item.table, image_size=80, grid=5)

**Images aligned to the patches.** An ``image_size`` square is cut into ``grid`` x ``grid``
cells of ``image_size / grid`` pixels, the vision tower's patch side: the top row holds the
column letters (A, B, ...), the left column the row labels (r1, r2, ...), every other cell one
value 0-99 or nothing (a table smaller than the grid leaves the rest blank). One cell, one
patch, one word: `cell_words` gives each patch's word (its alignment target, as in the first
part of the vision track).

**Splits** (`SPLITS`):

- ``train`` / ``test``: tables of ``rows`` x ``cols`` (2-3 each by default) and programs of at
  most ``max_train_steps`` steps (the gold chain's length); ``test`` is in distribution;
- ``test_large``: tables of ``large_rows`` x ``large_cols`` (4 x 4), any program: rows and
  columns no training table has;
- ``test_long``: training-size tables, programs longer than ``max_train_steps``.

**Shortcut-prone items.** In ``train``, a share ``shortcut_rate`` of the ``argmax`` items are
drawn *aligned* (the asked column is largest in the key column's largest row: "answer the
largest value of the asked column" is right without reading the key column); elsewhere they
fall as they come (about 1 in R). Outcome-only RL can learn the shortcut from this; the test
splits show whether it did.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distillery.config import _f
from distillery.envs.table.chains import (
    KINDS,
    Item,
    Table,
    col_name,
    make_item,
    random_table,
    row_name,
    verify_chain,
)
from distillery.quality.table_suites import TABLE_ITEM_SCHEMA

SPLITS: tuple[str, ...] = ("train", "test", "test_large", "test_long")
EMPTY = "empty"
BACKGROUND = (255, 255, 255)
HEADER = (225, 225, 235)
INK = (0, 0, 0)
LINE = (170, 170, 170)


@dataclass
class TableDataConfig:
    """`params.yaml:table_data`: the tables, questions and splits."""

    seed: int = _f(0, "seeds every draw; the same config gives the same items and bytes")
    image_size: int = _f(80, "square image side in pixels")
    grid: int = _f(5, "cells per side (one header row and column; tables up to grid-1 rows and columns)")
    n_train: int = _f(4000, "training items")
    n_test: int = _f(200, "in-distribution test items")
    n_large: int = _f(200, "test items on larger tables")
    n_long: int = _f(200, "test items with longer programs")
    rows: list[int] = _f([2, 3], "[min, max] rows of train/test tables")
    cols: list[int] = _f([2, 3], "[min, max] columns of train/test tables")
    large_rows: list[int] = _f([4, 4], "[min, max] rows of the test_large tables")
    large_cols: list[int] = _f([4, 4], "[min, max] columns of the test_large tables")
    max_train_steps: int = _f(6, "longest gold chain (steps) in train/test; longer ones form test_long")
    kinds: list[str] = _f(list(KINDS), "program kinds drawn (uniformly)")
    shortcut_rate: float = _f(0.85, "train: share of argmax items drawn shortcut-aligned")

    def __post_init__(self) -> None:
        if self.grid < 1 or self.image_size < 1:
            raise ValueError(f"table_data.grid and table_data.image_size must be at least 1, got grid "
                             f"{self.grid} and image_size {self.image_size}")
        if self.image_size % self.grid:
            raise ValueError(f"table_data.image_size ({self.image_size}) must be divisible by grid ({self.grid})")
        cap = self.grid - 1
        for name in ("rows", "cols", "large_rows", "large_cols"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1] <= cap:
                raise ValueError(f"table_data.{name} must be [min, max] with 1 <= min <= max <= grid - 1 ({cap})")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"table_data.kinds: unknown {unknown}; choose from {list(KINDS)}")
        if not 0 <= self.shortcut_rate <= 1:
            raise ValueError("table_data.shortcut_rate must be in [0, 1]")
        if min(self.n_train, self.n_test, self.n_large, self.n_long) < 1:
            raise ValueError("table_data: every split needs at least one item")


@dataclass(frozen=True)
class TableItem:
    item_id: str
    split: str
    table: Table
    item: Item


def _draw(rng: random.Random, rows: Sequence[int], cols: Sequence[int], kinds: Sequence[str]) -> tuple[Table, Item]:
    while True:
        table = random_table(rng, rng.randint(*rows), rng.randint(*cols))
        item = make_item(rng.choice(list(kinds)), table, rng)
        if item is not None:
            return table, item


def _split_items(cfg: TableDataConfig, split: str, n: int, rng: random.Random, seen: set[str]) -> list[TableItem]:
    out: list[TableItem] = []
    rows, cols = (cfg.large_rows, cfg.large_cols) if split == "test_large" else (cfg.rows, cfg.cols)
    kinds = ["filtered_sum"] if split == "test_long" else cfg.kinds
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ValueError(f"table_data: could not draw {n} distinct {split} items (got {len(out)}); widen the "
                             "table sizes or lower the count")
        table, item = _draw(rng, rows, cols, kinds)
        long = item.n_steps > cfg.max_train_steps
        if (split == "test_long") != long and split != "test_large":
            continue
        if split == "train" and item.kind == "argmax" and item.shortcut != (rng.random() < cfg.shortcut_rate):
            continue
        key = f"{table.to_json()}|{item.question}"
        if key in seen:
            continue
        seen.add(key)
        out.append(TableItem(f"{split}-{len(out):05d}", split, table, item))
    return out


def generate_items(cfg: TableDataConfig) -> list[TableItem]:
    """Every split's items; no (table, question) pair is in two splits."""
    rng = random.Random(cfg.seed)
    seen: set[str] = set()
    sizes = {"train": cfg.n_train, "test": cfg.n_test, "test_large": cfg.n_large, "test_long": cfg.n_long}
    return [it for split in SPLITS for it in _split_items(cfg, split, sizes[split], rng, seen)]


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:           # pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def cell_texts(table: Table, grid: int) -> list[list[str]]:
    """What each cell of the grid shows ('' for nothing)."""
    out = [["" for _ in range(grid)] for _ in range(grid)]
    for c in range(table.n_cols):
        out[0][c + 1] = col_name(c)
    for r in range(table.n_rows):
        out[r + 1][0] = row_name(r)
        for c in range(table.n_cols):
            out[r + 1][c + 1] = str(table.get(r, c))
    return out


def render_table(table: Table, image_size: int = 80, grid: int = 5) -> Any:
    """The table as an RGB PIL image, one cell per patch, headers shaded. Deterministic."""
    from PIL import Image, ImageDraw

    if table.n_rows > grid - 1 or table.n_cols > grid - 1:
        raise ValueError(f"a {table.n_rows}x{table.n_cols} table does not fit a {grid}x{grid} grid with headers")
    cell = image_size // grid
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(max(8, cell * 5 // 8))
    texts = cell_texts(table, grid)
    for r in range(table.n_rows + 1):
        for c in range(table.n_cols + 1):
            x0, y0 = c * cell, r * cell
            if r == 0 or c == 0:
                draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=HEADER)
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), outline=LINE)
            t = texts[r][c]
            if t:
                left, top, right, bottom = draw.textbbox((0, 0), t, font=font)
                draw.text((x0 + (cell - (right - left)) // 2 - left, y0 + (cell - (bottom - top)) // 2 - top), t,
                          fill=INK, font=font)
    return img


def cell_words(table: Table, grid: int) -> list[str]:
    """Each patch's word in reading order: a letter, a row label, a value, or ``empty``."""
    return [t or EMPTY for row in cell_texts(table, grid) for t in row]


# ---------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------


def items_frame(items: Sequence[TableItem], image_dir: str, sha: dict[str, str]) -> Any:
    import json

    import polars as pl

    rows = []
    for it in items:
        v = verify_chain(it.table, it.item, it.item.chain)
        rows.append({"item_id": it.item_id, "split": it.split, "path": f"{image_dir}/{it.item_id}.png",
                     "png_sha256": sha.get(it.item_id, ""), "table": json.dumps(it.table.to_json()),
                     "n_rows": it.table.n_rows, "n_cols": it.table.n_cols, "kind": it.item.kind,
                     "question": it.item.question, "chain": it.item.chain,
                     "cells": json.dumps([list(c) for c in it.item.cells]), "answer": it.item.answer,
                     "n_steps": it.item.n_steps, "shortcut": it.item.shortcut, "oracle_valid": v.valid,
                     "oracle_reason": "; ".join(v.reasons()) or None})
    return pl.DataFrame(rows, schema=TABLE_ITEM_SCHEMA)


def items_from_frame(frame: Any) -> list[TableItem]:
    import json

    out = []
    for r in frame.iter_rows(named=True):
        table = Table.from_json(json.loads(r["table"]))
        item = Item(r["kind"], r["question"], r["chain"], tuple(tuple(c) for c in json.loads(r["cells"])),
                    int(r["answer"]), bool(r["shortcut"]))
        out.append(TableItem(r["item_id"], r["split"], table, item))
    return out
