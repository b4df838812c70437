"""The vision track's three stages on the micro configuration, in a temporary directory:
their outputs, the gate, the model cards, the claim rows the claims page reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distillery.evaluate.claims import read_claims
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run(module: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{module} failed:\n{p.stderr[-3000:]}"


def test_the_vision_stages_run_end_to_end(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    micro = yaml.safe_load((REPO / "tests/vision/micro_params.yaml").read_text())
    for section, over in micro.items():
        for k, v in over.items():
            params[section][k] = {**params[section][k], **v} if isinstance(v, dict) else v
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: params[k] for k in micro}))
    for stage in ("stages.vision_data", "stages.vision_train", "stages.vision_eval"):
        _run(stage, tmp_path)
    assert len(list((tmp_path / "data/vision/images").glob("*.png"))) == 78
    assert (tmp_path / "reports/quality/vision_data/vision_scenes.json").is_file()
    for name in ("vlm-s0", "vlm-weak-s0", "vlm-s1", "vlm-weak-s1", "itm"):
        card = json.loads((tmp_path / "models/vision" / name / "card.json").read_text())
        assert card["prompt"]["style"] == "vision" and card["data"]
    m = json.loads((tmp_path / "metrics/vision.json").read_text())
    for kind in ("trained", "weak"):
        assert set(m["table"][kind]) == {"greedy", "vcd", "agla", "icd", "m3id", "pnd", "pnd_attn"}
        assert m["table"][kind]["pnd"]["forwards_per_token"] == 3.0
        assert len(m["table"][kind]["pnd"]["adversarial"]["accuracy"]["runs"]) == 4      # 2 seeds x 2 noise seeds
    claims = read_claims(tmp_path / "metrics/vision_claims.json")
    assert any("PND beats greedy on adversarial POPE" in c.finding for c in claims)
    assert "![" in (tmp_path / "reports/vision.md").read_text()
