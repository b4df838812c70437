"""Fixtures for the environment tests: this checkout's plugin entry points, registered in-process.

The shared virtual environment has Distillery installed from another checkout, so entry points
this checkout's pyproject.toml adds are not in its metadata. `checkout_plugins` writes them as
a distribution's metadata into a temporary folder put on `sys.path`, where
`importlib.metadata` finds them as it finds any installed package (a copy of an entry that is
installed too is the same entry: the registry accepts it)."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import REPO

from distillery import registry


def write_entry_points(site: Path, pyproject: Path = REPO / "pyproject.toml") -> Path:
    """`site` holding a distribution whose entry points are those of `pyproject`'s project."""
    groups = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {})
    info = site / "distillery_checkout_plugins-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distillery-checkout-plugins\nVersion: 0.0\n")
    lines = []
    for group, entries in groups.items():
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


def checkout_env_names(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The environments this checkout's pyproject.toml registers, whether installed or not."""
    groups = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {})
    return sorted(groups.get(registry.ENVS, {}))


def tree_digest(root: Path) -> str:
    """Every path, mode, size, mtime and byte under `root`: any change to the tree shows."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + dirnames:
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def checkout_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This checkout's entry points visible to `distillery.registry` for the test."""
    site = write_entry_points(tmp_path / "checkout-site")
    monkeypatch.syspath_prepend(str(site))
    registry.clear_cache()
    yield site
    registry.clear_cache()


@pytest.fixture(scope="session", autouse=True)
def textworld_games(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generated TextWorld games cached in one folder per test run (`DISTILLERY_TEXTWORLD_GAMES`),
    not in the user's cache: shared by pytest-xdist's workers (games are written atomically), so
    the hostile-action harness and the TextWorld tests, which draw the same tasks, generate
    each game once."""
    key = "DISTILLERY_TEXTWORLD_GAMES"
    before = os.environ.get(key)
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "textworld-games"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[key] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = before
