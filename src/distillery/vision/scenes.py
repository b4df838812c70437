"""Synthetic scenes with a language prior: the vision track's data.

A scene is a ``grid x grid`` board of cells (64x64 pixels, 4x4 cells of 16 pixels by
default) with one object in some of the cells: a shape drawn in a colour, a little jittered
in size and position. Patches of the VLM's vision tower are aligned with the cells, so one
patch sees one object (the feasibility probe found 8-pixel patches did not learn).

The prior. Some shapes are *anchors* with a *partner* (``SceneConfig.pairs``): in training
scenes an anchor brings its partner with probability ``partner_rate_train`` (0.9), so a
model that half-sees the image can answer "is there a square?" from "there is a circle".
Shapes are drawn with a Zipf popularity skew, so "popular" absent objects exist too. The
validation and test scenes are *counterfactual*: there the partner comes with probability
``partner_rate_eval`` (0.2), so the adversarial POPE negative (the shape that co-occurs most
with a present one) is usually an absent partner: what the prior says is there and is not.

Everything is a pure function of the config: `generate_scenes(cfg)` returns the same scenes
for the same config, `render(scene)` the same pixels, byte for byte; no scene appears in two
splits (`Scene.signature` is unique over all of them).

POPE (`pope_questions`) follows its definition: up to ``pope_per_image`` present objects per
image, each paired with one absent object, drawn *random* (uniform over absent shapes),
*popular* (the most frequent shapes of the training split first) or *adversarial* (the absent
shape that co-occurs most often with that present one in the training split).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distillery.vision.config import SceneConfig

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring", "frame", "bar",
                           "pillar", "xmark", "star", "moon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47), "green": (60, 180, 75), "blue": (60, 110, 235),
    "yellow": (240, 210, 40), "white": (235, 235, 235), "purple": (170, 80, 210),
}
BACKGROUND: tuple[int, int, int] = (24, 24, 24)
SPLITS: tuple[str, ...] = ("train", "val", "test")
POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
ROW_WORDS = ("top", "upper", "lower", "bottom")
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its shape and colour, its cell, its size and offset in pixels."""

    shape: str
    colour: str
    row: int
    col: int
    size: int        # side of the square the shape is drawn in
    dx: int          # offset of that square from the cell's centre
    dy: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; shapes: {list(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; colours: {list(COLOURS)}")


@dataclass(frozen=True)
class Scene:
    image_id: str
    split: str
    objects: tuple[SceneObject, ...]      # in reading order (row, then column)

    @property
    def shapes(self) -> tuple[str, ...]:
        """The distinct shapes in the scene, sorted."""
        return tuple(sorted({o.shape for o in self.objects}))

    @property
    def signature(self) -> str:
        """What the scene shows (object, colour, cell, size, offset): two scenes with the same
        signature render the same pixels."""
        key = json.dumps([asdict(o) for o in self.objects], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    def objects_json(self) -> str:
        return json.dumps([asdict(o) for o in self.objects], sort_keys=True)


def objects_from_json(text: str) -> tuple[SceneObject, ...]:
    """The objects of a scene row; a malformed list raises naming what is wrong."""
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError(f"objects: expected a JSON list, got {type(rows).__name__}")
    return tuple(SceneObject(**r) for r in rows)


# ---------------------------------------------------------------------------------------
# Captions (the reference a VLM learns to produce; CHAIR's vocabulary is SHAPES)
# ---------------------------------------------------------------------------------------


def caption(scene: Scene) -> str:
    """``a red circle , a blue square and a green cross .``: every object in reading order."""
    parts = [f"a {o.colour} {o.shape}" for o in scene.objects]
    if len(parts) == 1:
        return f"{parts[0]} ."
    return " , ".join(parts[:-1]) + f" and {parts[-1]} ."


def mentioned_shapes(text: str) -> list[str]:
    """The shape words of a caption, in order, repeats kept (CHAIR counts mentions). The
    vocabulary is closed, so no synonym list is needed."""
    shapes = set(SHAPES)
    return [w for w in text.replace(",", " ").replace(".", " ").split() if w in shapes]


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


def popularity_weights(cfg: SceneConfig) -> np.ndarray:
    """Draw weight of each shape: Zipf over a fixed shuffled order of SHAPES (seeded), so the
    most popular shapes are not simply the first names."""
    order = np.random.default_rng([cfg.seed, 7]).permutation(len(SHAPES))
    w = np.empty(len(SHAPES))
    for rank, i in enumerate(order):
        w[i] = 1.0 / (rank + 1) ** cfg.popularity
    return w / w.sum()


def _check_pairs(cfg: SceneConfig) -> dict[str, str]:
    partner: dict[str, str] = {}
    used: set[str] = set()
    for pair in cfg.pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"vision_data.pairs: {pair} is not [anchor, partner] of two different shapes")
        for s in pair:
            if s not in SHAPES:
                raise ValueError(f"vision_data.pairs: unknown shape {s!r}; shapes: {list(SHAPES)}")
            if s in used:
                raise ValueError(f"vision_data.pairs: {s!r} is in two pairs; each shape may be in one")
            used.add(s)
        partner[pair[0]] = pair[1]
    return partner


def _draw_shapes(rng: np.random.Generator, cfg: SceneConfig, partner: Mapping[str, str], rate: float) -> list[str]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    weights = popularity_weights(cfg)
    chosen = list(rng.choice(len(SHAPES), size=n, replace=False, p=weights))
    shapes = [SHAPES[i] for i in chosen]
    partners = set(partner.values())
    for anchor, mate in partner.items():
        if anchor not in shapes:
            continue
        want = rng.random() < rate
        if want and mate not in shapes:
            if len(shapes) < cfg.max_objects:
                shapes.append(mate)
            else:       # full: the partner takes the place of a shape that is in no pair
                free = [i for i, s in enumerate(shapes) if s not in partner and s not in partners]
                if free:
                    shapes[free[int(rng.integers(len(free)))]] = mate
        elif not want and mate in shapes:
            pool = [s for s in SHAPES if s not in shapes and s not in partners and s not in partner]
            if pool:
                shapes[shapes.index(mate)] = pool[int(rng.integers(len(pool)))]
            else:
                shapes.remove(mate)
    return shapes[: cfg.grid * cfg.grid]


def _place(rng: np.random.Generator, cfg: SceneConfig, shapes: Sequence[str]) -> tuple[SceneObject, ...]:
    cell = cfg.image_size // cfg.grid
    cells = rng.choice(cfg.grid * cfg.grid, size=len(shapes), replace=False)
    colours = list(COLOURS)
    objs = []
    for shape, c in zip(shapes, cells, strict=True):
        size = int(rng.integers(cfg.min_size, cfg.max_size + 1))
        slack = max(0, (cell - size) // 2 - 1)
        dx, dy = (int(rng.integers(-slack, slack + 1)) for _ in range(2))
        objs.append(SceneObject(shape, colours[int(rng.integers(len(colours)))], int(c) // cfg.grid,
                                int(c) % cfg.grid, size, dx, dy))
    return tuple(sorted(objs, key=lambda o: (o.row, o.col)))


def generate_scenes(cfg: SceneConfig) -> list[Scene]:
    """Every scene of every split; no signature repeats (across splits either)."""
    partner = _check_pairs(cfg)
    seen: set[str] = set()
    out: list[Scene] = []
    for split, n, rate in (("train", cfg.n_train, cfg.partner_rate_train), ("val", cfg.n_val, cfg.partner_rate_eval),
                           ("test", cfg.n_test, cfg.partner_rate_eval)):
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split]])
        made, tries = 0, 0
        while made < n:
            tries += 1
            if tries > 50 * n + 1000:
                raise ValueError(f"vision_data: could not draw {n} distinct {split} scenes; "
                                 "raise max_objects or lower the counts")
            objs = _place(rng, cfg, _draw_shapes(rng, cfg, partner, rate))
            scene = Scene(f"{split}-{made:05d}", split, objs)
            if scene.signature in seen:
                continue
            seen.add(scene.signature)
            out.append(scene)
            made += 1
    return out


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _draw(draw: Any, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    w = x1 - x0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    t = max(2, w // 4)                  # stroke thickness
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=t)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "frame":
        draw.rectangle(box, outline=fill, width=t)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=fill)
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=fill)
    elif shape == "xmark":
        draw.line((x0, y0, x1, y1), fill=fill, width=t)
        draw.line((x0, y1, x1, y0), fill=fill, width=t)
    elif shape == "bar":
        draw.rectangle((x0, cy - t, x1, cy + t), fill=fill)
    elif shape == "pillar":
        draw.rectangle((cx - t, y0, cx + t, y1), fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            r = w / 2 if k % 2 == 0 else w / 4.5
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "moon":
        draw.ellipse(box, fill=fill)
        off = w // 3
        draw.ellipse((x0 + off, y0 - 1, x1 + off, y1 - 1), fill=BACKGROUND)
    else:  # SceneObject already refuses unknown shapes
        raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, image_size: int = 64, grid: int = 4) -> Any:
    """The scene as an RGB PIL image (no anti-aliasing: the same scene, the same bytes)."""
    from PIL import Image, ImageDraw

    cell = image_size // grid
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        if not (0 <= o.row < grid and 0 <= o.col < grid):
            raise ValueError(f"{scene.image_id}: object {o.shape} at cell ({o.row}, {o.col}) is off the {grid}x{grid} grid")
        x0 = o.col * cell + (cell - o.size) // 2 + o.dx
        y0 = o.row * cell + (cell - o.size) // 2 + o.dy
        _draw(draw, o.shape, (x0, y0, x0 + o.size - 1, y0 + o.size - 1), COLOURS[o.colour])
    return img


def png_bytes(img: Any) -> bytes:
    """PNG bytes of a PIL image, deterministic (no timestamps, fixed compression)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def cell_occupancy(pixels: np.ndarray, grid: int = 4) -> list[list[tuple[int, int, int] | None]]:
    """For each cell of an [H, W, 3] uint8 image: the most common non-background colour, or
    None when the cell is empty. The gate checks it against the scene's object list."""
    h = pixels.shape[0] // grid
    out: list[list[tuple[int, int, int] | None]] = []
    bg = np.asarray(BACKGROUND, dtype=pixels.dtype)
    for r in range(grid):
        row: list[tuple[int, int, int] | None] = []
        for c in range(grid):
            block = pixels[r * h:(r + 1) * h, c * h:(c + 1) * h].reshape(-1, 3)
            fg = block[(block != bg).any(axis=1)]
            if len(fg) == 0:
                row.append(None)
            else:
                vals, counts = np.unique(fg, axis=0, return_counts=True)
                row.append(tuple(int(v) for v in vals[counts.argmax()]))
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------
# Statistics of the training split, and POPE
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorStats:
    """What the training split teaches: how often each shape occurs (images containing it)
    and how often two shapes occur together."""

    frequency: dict[str, int]
    cooccurrence: dict[str, dict[str, int]]

    def popular(self) -> list[str]:
        """Shapes, most frequent first (ties by name)."""
        return sorted(SHAPES, key=lambda s: (-self.frequency.get(s, 0), s))

    def most_cooccurring(self, shape: str) -> list[str]:
        """Other shapes, most often seen with `shape` first (ties by frequency, then name)."""
        row = self.cooccurrence.get(shape, {})
        return sorted((s for s in SHAPES if s != shape),
                      key=lambda s: (-row.get(s, 0), -self.frequency.get(s, 0), s))

    def partner_rate(self, anchor: str, partner: str) -> float:
        """P(partner in scene | anchor in scene) in the training split."""
        n = self.frequency.get(anchor, 0)
        return self.cooccurrence.get(anchor, {}).get(partner, 0) / n if n else float("nan")


def prior_stats(scenes: Iterable[Scene]) -> PriorStats:
    freq: Counter[str] = Counter()
    co: dict[str, Counter[str]] = {s: Counter() for s in SHAPES}
    for sc in scenes:
        present = sc.shapes
        freq.update(present)
        for a in present:
            for b in present:
                if a != b:
                    co[a][b] += 1
    return PriorStats(dict(freq), {s: dict(c) for s, c in co.items()})


@dataclass(frozen=True)
class PopeQuestion:
    question_id: str
    image_id: str
    split: str               # val | test
    pope_split: str          # random | popular | adversarial
    shape: str
    label: str               # yes | no
    pair: int                # which (present, absent) pair of the image it belongs to


def pope_questions(scenes: Sequence[Scene], stats: PriorStats, per_image: int, seed: int) -> list[PopeQuestion]:
    """POPE's three question sets over `scenes` (not the training split)."""
    out: list[PopeQuestion] = []
    for sc in scenes:
        rng = np.random.default_rng([seed, int(hashlib.sha256(sc.image_id.encode()).hexdigest()[:8], 16)])
        present = list(sc.shapes)
        asked = [present[i] for i in sorted(rng.choice(len(present), size=min(per_image, len(present)), replace=False))]
        absent = [s for s in SHAPES if s not in present]
        for pope_split in POPE_SPLITS:
            used: set[str] = set()
            for k, pos in enumerate(asked):
                if pope_split == "random":
                    pool = [s for s in absent if s not in used]
                    neg = pool[int(rng.integers(len(pool)))]
                elif pope_split == "popular":
                    neg = next(s for s in stats.popular() if s in absent and s not in used)
                else:
                    neg = next(s for s in stats.most_cooccurring(pos) if s in absent and s not in used)
                used.add(neg)
                for shape, label in ((pos, "yes"), (neg, "no")):
                    out.append(PopeQuestion(f"{sc.image_id}-{pope_split}-{k}-{label}", sc.image_id, sc.split,
                                            pope_split, shape, label, k))
    return out


def training_questions(scene: Scene, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(shape, yes|no) pairs for training: half about present shapes, half about absent
    ones drawn uniformly (the labels are always what the image shows; the prior comes from
    which shapes appear together, not from the answers)."""
    present = list(scene.shapes)
    absent = [s for s in SHAPES if s not in present]
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append((present[int(rng.integers(len(present)))], "yes"))
        else:
            out.append((absent[int(rng.integers(len(absent)))], "no"))
    return out


# ---------------------------------------------------------------------------------------
# Frames (the stage's parquet files) and images on disk
# ---------------------------------------------------------------------------------------


def image_path(image_dir: str, image_id: str) -> str:
    return f"{image_dir}/{image_id}.png"


def scenes_frame(scenes: Sequence[Scene], image_dir: str, png_sha256: Mapping[str, str]) -> Any:
    """One row per scene (`quality.vision_suites.SCENE_SCHEMA`)."""
    import polars as pl

    from distillery.quality.vision_suites import SCENE_SCHEMA

    rows = [{"image_id": s.image_id, "split": s.split, "path": image_path(image_dir, s.image_id),
             "objects": s.objects_json(), "n_objects": len(s.objects), "shapes": json.dumps(list(s.shapes)),
             "caption": caption(s), "signature": s.signature, "png_sha256": png_sha256[s.image_id]} for s in scenes]
    return pl.DataFrame(rows, schema=SCENE_SCHEMA)


def scenes_from_frame(frame: Any) -> list[Scene]:
    """The scenes of a scenes frame; a malformed object list names the row."""
    out = []
    for image_id, split, objects in frame.select("image_id", "split", "objects").iter_rows():
        try:
            out.append(Scene(image_id, split, objects_from_json(objects)))
        except (ValueError, TypeError) as e:
            raise ValueError(f"scene {image_id}: bad object list ({e})") from e
    return out


def pope_frame(questions: Sequence[PopeQuestion]) -> Any:
    import polars as pl

    from distillery.quality.vision_suites import POPE_SCHEMA

    return pl.DataFrame([asdict(q) for q in questions], schema=POPE_SCHEMA)


def pope_from_frame(frame: Any) -> list[PopeQuestion]:
    return [PopeQuestion(**r) for r in frame.iter_rows(named=True)]


def palette_frame(image_size: int, grid: int, root: str = ".") -> Any:
    """The reference frame the scenes gate reads: every colour (and the background) in RGB."""
    import polars as pl

    rows = [{"colour": c, "r": v[0], "g": v[1], "b": v[2]} for c, v in [*COLOURS.items(), ("background", BACKGROUND)]]
    return pl.DataFrame(rows).with_columns(pl.lit(grid).alias("grid"), pl.lit(root).alias("root"),
                                           pl.lit(image_size).alias("image_size"))
