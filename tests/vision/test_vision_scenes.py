"""The scene generator: deterministic, disjoint splits, a visible prior, POPE's question sets."""

from __future__ import annotations

import dataclasses

import pytest
from tests.vision.conftest import TINY

from distillery.vision.config import SceneConfig
from distillery.vision.scenes import (
    SHAPES,
    caption,
    cell_occupancy,
    generate_scenes,
    mentioned_shapes,
    png_bytes,
    pope_questions,
    prior_stats,
    render,
)


def test_same_config_same_scenes_and_bytes(scenes):
    again = generate_scenes(TINY)
    assert [s.signature for s in again] == [s.signature for s in scenes]
    assert png_bytes(render(again[0])) == png_bytes(render(scenes[0]))
    other = generate_scenes(dataclasses.replace(TINY, seed=1))
    assert [s.signature for s in other] != [s.signature for s in scenes]


def test_splits_are_disjoint_and_sized(scenes):
    sigs = [s.signature for s in scenes]
    assert len(set(sigs)) == len(sigs)
    assert [sum(s.split == sp for s in scenes) for sp in ("train", "val", "test")] == [40, 6, 8]
    for s in scenes:
        assert TINY.min_objects <= len(s.objects) <= TINY.max_objects
        assert len({(o.row, o.col) for o in s.objects}) == len(s.objects)


def test_the_prior_is_strong_in_training_and_broken_in_evaluation():
    cfg = SceneConfig(n_train=600, n_val=10, n_test=300)
    sc = generate_scenes(cfg)
    train = prior_stats([s for s in sc if s.split == "train"])
    test = prior_stats([s for s in sc if s.split == "test"])
    for a, b in cfg.pairs:
        assert train.partner_rate(a, b) > 0.75
        assert test.partner_rate(a, b) < 0.45
    # the partner is what co-occurs most with its anchor
    assert train.most_cooccurring("circle")[0] == "square"


def test_render_draws_each_object_in_its_cell(scenes):
    import numpy as np

    from distillery.vision.scenes import COLOURS

    s = scenes[0]
    cells = cell_occupancy(np.asarray(render(s)))
    for o in s.objects:
        assert cells[o.row][o.col] == COLOURS[o.colour]
    occupied = {(o.row, o.col) for o in s.objects}
    assert all(cells[r][c] is None for r in range(4) for c in range(4) if (r, c) not in occupied)


def test_caption_lists_every_object_and_chair_reads_it_back(scenes):
    s = scenes[0]
    text = caption(s)
    assert mentioned_shapes(text) == [o.shape for o in s.objects]
    assert text.endswith(" .")


def test_pope_questions_follow_the_definition(scenes):
    train = prior_stats([s for s in scenes if s.split == "train"])
    ev = [s for s in scenes if s.split != "train"]
    qs = pope_questions(ev, train, 3, seed=0)
    for s in ev:
        for split in ("random", "popular", "adversarial"):
            mine = [q for q in qs if q.image_id == s.image_id and q.pope_split == split]
            yes = [q.shape for q in mine if q.label == "yes"]
            no = [q.shape for q in mine if q.label == "no"]
            assert len(yes) == len(no) == min(3, len(s.shapes))
            assert set(yes) <= set(s.shapes) and not set(no) & set(s.shapes)
            assert len(set(no)) == len(no)
        # the three splits ask about the same present objects
        assert len({tuple(sorted(q.shape for q in qs if q.image_id == s.image_id and q.label == "yes"
                                 and q.pope_split == sp)) for sp in ("random", "popular", "adversarial")}) == 1
        adv = [q for q in qs if q.image_id == s.image_id and q.pope_split == "adversarial"]
        for k in range(len(adv) // 2):
            pos = next(q.shape for q in adv if q.pair == k and q.label == "yes")
            neg = next(q.shape for q in adv if q.pair == k and q.label == "no")
            used = {q.shape for q in adv if q.label == "no" and q.pair < k}
            expect = next(x for x in train.most_cooccurring(pos) if x not in s.shapes and x not in used)
            assert neg == expect
        pop = [q for q in qs if q.image_id == s.image_id and q.pope_split == "popular" and q.label == "no"]
        assert [q.shape for q in sorted(pop, key=lambda q: q.pair)] == \
            [x for x in train.popular() if x not in s.shapes][: len(pop)]


def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="divisible"):
        SceneConfig(image_size=60, grid=7)
    with pytest.raises(ValueError, match="pairs"):
        generate_scenes(SceneConfig(pairs=[["circle", "circle"]], n_train=2, n_val=1, n_test=1))
    with pytest.raises(ValueError, match="unknown shape"):
        generate_scenes(SceneConfig(pairs=[["circle", "blob"]], n_train=2, n_val=1, n_test=1))
    assert len(SHAPES) == 12
