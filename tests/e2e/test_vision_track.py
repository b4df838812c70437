"""The vision track end to end through DVC on the micro configuration: `dvc repro vision_eval`
plans vision_data, vision_train and vision_eval and nothing of the agent track; their outputs
(the gate, the model cards, the headline metrics, the claim rows the claims page reads) are
read from a copy of the session's one micro-pipeline run, which ran every stage of the same
configuration (tests/e2e/conftest.py), and `dvc status` finds the track up to date there."""

from __future__ import annotations

import json

import pytest
from tests.e2e.conftest import PIPELINE_TIMEOUT, planned_stages, up_to_date

from distillery.evaluate.claims import read_claims
from distillery.evaluate.headline import MAX_VALUES, count_leaves
from distillery.vision.run import HEADLINE

VISION_STAGES = {"vision_data", "vision_train", "vision_eval"}


@pytest.mark.slow
@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_the_vision_track_runs_end_to_end_through_dvc(micro_copy):
    repo = micro_copy()
    assert planned_stages(repo, "vision_eval") == VISION_STAGES     # the track stands alone

    assert len(list((repo / "data/vision/images").glob("*.png"))) == 78     # 60 + 8 + 10 scenes
    assert (repo / "reports/quality/vision_data/vision_scenes.json").is_file()
    for name in ("vlm-s0", "vlm-weak-s0", "vlm-s1", "vlm-weak-s1", "itm"):
        card = json.loads((repo / "models/vision" / name / "card.json").read_text())
        assert card["prompt"]["style"] == "vision" and card["data"]
    weak = json.loads((repo / "models/vision/vlm-weak-s0/card.json").read_text())
    assert weak["checkpoint"] == "weak" and weak["step"] == 4

    # headline metrics: small and flat; the full record in reports/details
    train_head = json.loads((repo / "metrics/vision_train.json").read_text())
    assert set(train_head) == {"loss", "steps", "seconds"} and train_head["steps"] == 8
    head = json.loads((repo / "metrics/vision_eval.json").read_text())
    assert set(head) == set(HEADLINE) and count_leaves(head) <= MAX_VALUES
    assert all(v is None or isinstance(v, float) for v in head.values())
    m = json.loads((repo / "reports/details/vision_eval.json").read_text())
    assert head["pope_adv_pnd"] == pytest.approx(m["table"]["trained"]["pnd"]["adversarial"]["accuracy"]["mean"])
    for kind in ("trained", "weak"):
        assert set(m["table"][kind]) == {"greedy", "vcd", "agla", "icd", "m3id", "pnd", "pnd_attn"}
        assert m["table"][kind]["pnd"]["forwards_per_token"] == 3.0
        assert m["table"][kind]["greedy"]["forwards_per_token"] == 1.0
        assert len(m["table"][kind]["pnd"]["adversarial"]["accuracy"]["runs"]) == 4      # 2 seeds x 2 noise seeds
    assert set(m["tuned"]["trained"]["pnd"]["params"]) == {"alpha", "gamma", "beta"}

    claims = read_claims(repo / "reports/claims/vision.json")
    assert any("PND beats greedy on adversarial POPE" in c.finding for c in claims)
    assert any("PND beats vcd on CHAIR_i" in c.finding for c in claims)
    assert all(c.holds in (True, False, None) and c.seeds and c.command for c in claims)
    assert "![" in (repo / "reports/vision.md").read_text()
    assert list((repo / "reports/vision").glob("example-*.png"))
    # the claims page (stage `claims` globs reports/claims/) has the vision rows
    assert "## vision" in (repo / "reports/claims.md").read_text()

    assert up_to_date(repo, "vision_eval")
