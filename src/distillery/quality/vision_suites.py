"""The vision track's data contracts: scenes (a PNG per row and the object list it must
show) and POPE questions (labels that agree with the scenes).

A module of its own (as `sql_suites`): adding to `suites.SUITES` or `types.py` would change
files every gated stage depends on. The schemas live here for the same reason.

The scene check reads each PNG and compares it with the row's object list, cell by cell:
a listed object's cell must show that object's colour (the most common non-background
colour there), every other cell must be background only. The palette and the background
come in as a reference frame (``refs["palette"]``: colour, r, g, b; the background row is
named ``background``), so this module needs nothing from the library layer that draws the
scenes. Splits are disjoint: a scene's signature (what it shows) is unique over all rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from distillery.quality.suites import Refs, Suite, between, holds, not_null, one_of, unique

SCENE_SCHEMA: dict[str, pl.DataType] = {
    "image_id": pl.String,
    "split": pl.String,          # train | val | test
    "path": pl.String,           # the PNG, relative to the repository root
    "objects": pl.String,        # JSON list of {shape, colour, row, col, size, dx, dy}
    "n_objects": pl.Int64,
    "shapes": pl.String,         # JSON list of the distinct shapes, sorted
    "caption": pl.String,
    "signature": pl.String,
    "png_sha256": pl.String,
}

POPE_SCHEMA: dict[str, pl.DataType] = {
    "question_id": pl.String,
    "image_id": pl.String,
    "split": pl.String,          # val | test
    "pope_split": pl.String,     # random | popular | adversarial
    "shape": pl.String,
    "label": pl.String,          # yes | no
    "pair": pl.Int64,
}

SCENE_SPLITS = ("train", "val", "test")


def no_problem(column: str, description: str) -> list:
    """A derived text column that says what is wrong must be null on every row; a failure's
    examples then carry the text (which cell, which colour) beside the row's ids."""
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeNull(column=column, description=description)]
POPE_SPLITS = ("random", "popular", "adversarial")


def _cell_colours(path: str, grid: int, background: tuple[int, int, int]) -> list[list[tuple[int, int, int] | None]] | None:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode != "RGB":
                return None
            pixels = np.asarray(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    h, w = pixels.shape[:2]
    if h != w or h % grid:
        return None
    c = h // grid
    bg = np.asarray(background, dtype=pixels.dtype)
    out: list[list[tuple[int, int, int] | None]] = []
    for r in range(grid):
        row: list[tuple[int, int, int] | None] = []
        for k in range(grid):
            block = pixels[r * c:(r + 1) * c, k * c:(k + 1) * c].reshape(-1, 3)
            fg = block[(block != bg).any(axis=1)]
            if len(fg) == 0:
                row.append(None)
            else:
                vals, counts = np.unique(fg, axis=0, return_counts=True)
                row.append(tuple(int(v) for v in vals[counts.argmax()]))
        out.append(row)
    return out


def scene_problem(path: str, objects_text: str, palette: dict[str, tuple[int, int, int]], grid: int,
                  root: str | Path = ".") -> str | None:
    """Why the PNG at `path` does not show `objects_text`, or None when it does."""
    background = palette.get("background")
    if background is None:
        return "no background colour in the palette"
    try:
        objects = json.loads(objects_text)
    except (TypeError, ValueError):
        return "objects is not JSON"
    if not isinstance(objects, list):
        return "objects is not a JSON list"
    full = Path(root) / path
    cells = _cell_colours(str(full), grid, background)
    if cells is None:
        return f"{path}: not a readable square RGB PNG of {grid}x{grid} cells"
    listed: dict[tuple[int, int], str] = {}
    for o in objects:
        try:
            listed[(int(o["row"]), int(o["col"]))] = str(o["colour"])
        except (KeyError, TypeError, ValueError):
            return f"object without row/col/colour: {o}"
    for r in range(grid):
        for k in range(grid):
            seen = cells[r][k]
            if (r, k) in listed:
                want = palette.get(listed[(r, k)])
                if want is None:
                    return f"cell ({r}, {k}): unknown colour {listed[(r, k)]!r}"
                if seen != tuple(want):
                    return f"cell ({r}, {k}): the list has a {listed[(r, k)]} object, the image shows {seen or 'nothing'}"
            elif seen is not None:
                return f"cell ({r}, {k}): the image shows an object of colour {seen} the list does not have"
    return None


def _scene_expectations(refs: Refs) -> list:
    return [
        *not_null("image_id", "split", "path", "objects", "n_objects", "shapes", "caption", "signature", "png_sha256"),
        *unique("image_id"),
        *unique("signature"),                     # no scene twice, within or across splits
        *one_of("split", SCENE_SPLITS),
        *between("n_objects", 1, 64),
        *no_problem("_scene_problem", "the PNG shows exactly the listed objects, each in its cell and colour"),
        *holds("_counts_ok", "n_objects is the length of the object list", show=("image_id", "n_objects")),
    ]


def _derive_scenes(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    pal = refs.get("palette")
    palette = {} if pal is None else {r["colour"]: (r["r"], r["g"], r["b"]) for r in pal.iter_rows(named=True)}
    grid = int(pal["grid"][0]) if pal is not None and "grid" in pal.columns and len(pal) else 4
    root = str(pal["root"][0]) if pal is not None and "root" in pal.columns and len(pal) else "."
    problems, counts = [], []
    for path, objs, n in frame.select("path", "objects", "n_objects").iter_rows():
        problems.append(None if path is None or objs is None else scene_problem(path, objs, palette, grid, root))
        try:
            counts.append(len(json.loads(objs)) == n if objs is not None and n is not None else None)
        except ValueError:
            counts.append(False)
    return frame.with_columns(
        pl.Series("_scene_problem", problems, dtype=pl.String),
        pl.Series("_counts_ok", counts, dtype=pl.Boolean),
    )


VISION_SCENES = Suite(
    name="vision_scenes",
    id_columns=("image_id",),
    schema=SCENE_SCHEMA,
    expectations=_scene_expectations,
    derive=_derive_scenes,
    description="Vision scenes: each PNG shows exactly its object list (cell and colour); no scene in two splits.",
)


def _pope_expectations(refs: Refs) -> list:
    return [
        *not_null("question_id", "image_id", "split", "pope_split", "shape", "label", "pair"),
        *unique("question_id"),
        *one_of("split", ("val", "test")),
        *one_of("pope_split", POPE_SPLITS),
        *one_of("label", ("yes", "no")),
        *holds("_label_ok", "the label is yes exactly when the scene has the shape (and the image exists)",
               show=("question_id", "image_id", "shape", "label")),
    ]


def _derive_pope(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    scenes = refs.get("scenes")
    shapes: dict[str, set[str]] = {}
    split: dict[str, str] = {}
    if scenes is not None:
        for image_id, sh, sp in scenes.select("image_id", "shapes", "split").iter_rows():
            shapes[image_id] = set(json.loads(sh))
            split[image_id] = sp
    ok = []
    for image_id, shape, label, sp in frame.select("image_id", "shape", "label", "split").iter_rows():
        if scenes is None:
            ok.append(None)
        elif image_id not in shapes or split[image_id] != sp:
            ok.append(False)
        else:
            ok.append((shape in shapes[image_id]) == (label == "yes"))
    return frame.with_columns(pl.Series("_label_ok", ok, dtype=pl.Boolean))


VISION_POPE = Suite(
    name="vision_pope",
    id_columns=("question_id",),
    schema=POPE_SCHEMA,
    expectations=_pope_expectations,
    derive=_derive_pope,
    description="POPE questions: labels agree with the scene's objects; evaluation splits only.",
)
