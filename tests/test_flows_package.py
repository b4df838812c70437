"""`import flows` turns off the stack's analytics (a flow started by hand must not try the
network), without overriding what the user exported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}


def _after_import(env: dict[str, str]) -> list[str]:
    code = f"import os, flows; print(*(os.environ.get(k, '<unset>') for k in {list(SWITCHES)!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_importing_flows_sets_every_analytics_switch_off():
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    assert _after_import(env) == list(SWITCHES.values())


def test_a_switch_the_user_exported_wins():
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES} | {"GX_ANALYTICS_ENABLED": "true"}
    assert _after_import(env) == ["false", "1", "true"]
