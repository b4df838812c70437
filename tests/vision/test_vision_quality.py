"""The scenes gate: a PNG that disagrees with its object list fails it, naming the scene and
the cell; POPE labels that disagree with the scenes fail too."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from distillery.quality import GateError, gate
from distillery.quality.vision_suites import VISION_POPE, VISION_SCENES
from distillery.vision.scenes import palette_frame as palette
from distillery.vision.scenes import (
    png_bytes,
    pope_frame,
    pope_questions,
    prior_stats,
    render,
    scenes_frame,
)


@pytest.fixture
def written(tmp_path, scenes):
    images = tmp_path / "images"
    images.mkdir()
    sha = {}
    for s in scenes:
        data = png_bytes(render(s))
        (images / f"{s.image_id}.png").write_bytes(data)
        sha[s.image_id] = hashlib.sha256(data).hexdigest()
    return scenes_frame(scenes, str(images), sha)


def _gate(frame, tmp_path, suite=VISION_SCENES, refs=None):
    return gate(frame, suite, source="scenes.parquet", refs=refs or {"palette": palette(64, 4)},
                report_dir=tmp_path / "reports", quarantine_dir=tmp_path / "quarantine")


def test_consistent_scenes_pass(written, tmp_path):
    assert _gate(written, tmp_path).success


def test_a_png_with_an_object_its_list_lacks_fails_naming_scene_and_cell(written, tmp_path, scenes):
    from PIL import Image, ImageDraw

    s = scenes[3]
    occupied = {(o.row, o.col) for o in s.objects}
    r, c = next((r, c) for r in range(4) for c in range(4) if (r, c) not in occupied)
    path = written.filter(pl.col("image_id") == s.image_id)["path"][0]
    img = Image.open(path).convert("RGB")
    ImageDraw.Draw(img).rectangle((c * 16 + 3, r * 16 + 3, c * 16 + 12, r * 16 + 12), fill=(220, 50, 47))
    img.save(path)
    with pytest.raises(GateError) as e:
        _gate(written, tmp_path)
    msg = str(e.value)
    assert s.image_id in msg and f"cell ({r}, {c})" in msg
    quarantined = pl.read_parquet(tmp_path / "quarantine" / "vision_scenes.parquet")
    assert quarantined["image_id"].to_list() == [s.image_id]


def test_an_object_list_that_names_the_wrong_colour_fails(written, tmp_path, scenes):
    s = scenes[1]
    bad = s.objects_json().replace(f'"colour": "{s.objects[0].colour}"',
                                   '"colour": "white"' if s.objects[0].colour != "white" else '"colour": "red"', 1)
    frame = written.with_columns(pl.when(pl.col("image_id") == s.image_id).then(pl.lit(bad))
                                 .otherwise(pl.col("objects")).alias("objects"))
    with pytest.raises(GateError, match=s.image_id):
        _gate(frame, tmp_path)


def test_a_corrupt_png_fails(written, tmp_path, scenes):
    path = written.filter(pl.col("image_id") == scenes[2].image_id)["path"][0]
    with open(path, "wb") as f:
        f.write(b"not a png")
    with pytest.raises(GateError, match="not a readable"):
        _gate(written, tmp_path)


def test_splits_must_be_disjoint(written, tmp_path):
    dup = pl.concat([written, written.head(1).with_columns(pl.lit("test-dup").alias("image_id"),
                                                           pl.lit("test").alias("split"))])
    with pytest.raises(GateError, match="signature"):
        _gate(dup, tmp_path)


def test_pope_labels_must_agree_with_the_scenes(written, tmp_path, scenes):
    stats = prior_stats([s for s in scenes if s.split == "train"])
    pope = pope_frame(pope_questions([s for s in scenes if s.split != "train"], stats, 3, 0))
    refs = {"scenes": written}
    assert _gate(pope, tmp_path, VISION_POPE, refs).success
    flipped = pope.with_columns(pl.when(pl.col("question_id") == pope["question_id"][0]).then(
        pl.when(pl.col("label") == "yes").then(pl.lit("no")).otherwise(pl.lit("yes"))).otherwise(pl.col("label"))
        .alias("label"))
    with pytest.raises(GateError, match=pope["question_id"][0]):
        _gate(flipped, tmp_path, VISION_POPE, refs)
