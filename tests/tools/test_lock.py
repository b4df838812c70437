"""tools/lock.py and constraints.txt: a set-up installs the versions the results were made with."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version
from tests.conftest import REPO

from tools import lock


def _locked() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==", 1) for line in lines if line and not line.startswith("#")]
    return {lock.canonical_name(name): v for name, v in pairs}


def _make_variable(name: str) -> str:
    found = re.search(rf"^{name} := (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, f"Makefile has no `{name} := ...`"
    return found.group(1).strip()


def test_pins_leave_out_the_local_project_and_local_version_labels_sorted_by_canonical_name():
    report = {"install": [
        {"metadata": {"name": "Torch", "version": "2.13.0+cpu"}, "download_info": {"archive_info": {}}},
        {"metadata": {"name": "distillery", "version": "0.1.0"},
         "download_info": {"url": "file:///repo", "dir_info": {"editable": False}}},
        {"metadata": {"name": "zc.lockfile", "version": "3.0"}, "download_info": {"archive_info": {}}},
        {"metadata": {"name": "Great_Expectations", "version": "1.24.1"}, "download_info": {"archive_info": {}}},
    ]}
    assert lock.pins(report) == ["great-expectations==1.24.1", "torch==2.13.0", "zc-lockfile==3.0"]
    text = lock.render(lock.pins(report), ["torch==2.13.0", ".[dev]"],
                       {"implementation_name": "cpython", "python_full_version": "3.11.7",
                        "sys_platform": "linux", "platform_machine": "x86_64"})
    assert text.splitlines()[3:] == ["great-expectations==1.24.1", "torch==2.13.0", "zc-lockfile==3.0"]
    assert "torch==2.13.0 .[dev]" in text and "cpython 3.11.7 on linux x86_64" in text


def test_every_dependency_and_locked_extra_is_pinned_to_a_version_pyproject_allows():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = _make_variable("LOCK_EXTRAS").split(",")
    locked = _locked()
    wanted = [(None, r) for r in project["dependencies"]]
    wanted += [(extra, r) for extra in extras for r in project["optional-dependencies"][extra]]
    problems = []
    for extra, text in wanted:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({**default_environment(), "extra": extra or ""}):
            continue
        pin = locked.get(lock.canonical_name(req.name))
        if pin is None:
            problems.append(f"{text}: not in constraints.txt")
        elif not req.specifier.contains(Version(pin), prereleases=True):
            problems.append(f"{text}: constraints.txt pins {pin}")
    assert problems == [], "run `make lock` after changing pyproject.toml:\n" + "\n".join(problems)
    torch = Requirement(_make_variable("TORCH"))
    assert torch.specifier.contains(Version(locked["torch"])), "the Makefile's torch and the lock disagree"


def test_this_environment_runs_the_locked_versions():
    mismatched = []
    for name, pinned in _locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue                  # an extra's package this environment does not have
        if Version(installed).public != Version(pinned).public:
            mismatched.append(f"{name} {installed} (constraints.txt: {pinned})")
    assert mismatched == [], "this environment is not the locked one; `make setup` installs it:\n" + "\n".join(mismatched)
