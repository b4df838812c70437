"""Tracks: the agent loop's stages run again, unchanged, for another environment.

The agent track (tasks -> collect -> warm-up -> rollout -> mine -> internalize, and RL) is
written once. A stage module given `--track NAME` reads its params from the section
`NAME_<section>` (e.g. `twx_warmup`, usually `base: warmup` plus the environment's own keys)
and reads and writes under the track's own folders, so two tracks never share a file:

    data/tasks/tasks.parquet          -> data/twx/tasks/tasks.parquet
    models/warmup                     -> models/twx/warmup
    reports/claims/internalize.json   -> reports/claims/twx_internalize.json   (the claims page
                                         reads reports/claims/*.json, one file per area)

Without `--track` every path and section is the agent track's own, as before.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from distillery.config import ConfigError, load_section, read_params

T = TypeVar("T")
_NAME = re.compile(r"[a-z][a-z0-9]*")
CLAIMS_DIR = "reports/claims"


@dataclass(frozen=True)
class Track:
    """A track's name ('' = the agent track, whose paths and sections are the defaults)."""

    name: str = ""

    def __post_init__(self) -> None:
        if self.name and not _NAME.fullmatch(self.name):
            raise ConfigError(f"--track {self.name!r}: a track name is lower-case letters and digits (e.g. twx)")

    def section(self, section: str) -> str:
        """The params.yaml section the track reads for `section`."""
        return f"{self.name}_{section}" if self.name else section

    def stage(self, stage: str) -> str:
        """The dvc.yaml stage that runs the agent track's `stage` for this track (named like its
        params section: `twx_rl` for `rl`)."""
        return self.section(stage)

    def path(self, path: str | Path) -> Path:
        """Where the track keeps what the agent track keeps at `path` (module docstring)."""
        p = Path(path)
        if not self.name:
            return p
        if p.parent.as_posix() == CLAIMS_DIR:
            return p.parent / f"{self.name}_{p.name}"
        head, *rest = p.parts
        return Path(head, self.name, *rest)

    def load(self, cls: type[T], section: str, params: dict[str, Any] | None = None) -> T:
        """The track's section of params.yaml as `cls`. A track's section must exist and not be
        empty: falling back to every default would run the agent track's settings on the other
        environment."""
        params = read_params() if params is None else params
        name = self.section(section)
        if self.name and params.get(name) is None:
            what = "an empty section" if name in params else "no section"
            raise ConfigError(f"params.yaml has {what} {name!r}: the {self.name} track reads its {section} "
                              f"params there (e.g. `{name}: {{base: {section}, ...}}`)")
        return load_section(cls, name, params)


def add_track_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--track", default="", help="run the stage for another track's environment: params from "
                    "<track>_<section>, files under <dir>/<track>/ (stages/track.py); default: the agent track")


def track_parser(name: str, doc: str | None, *, track: bool = True) -> argparse.ArgumentParser:
    """The parser of `python -m stages.<name>`: `--help` prints the module docstring `doc` as
    written (what the stage reads and writes), and `--track` is added unless `track` is False.
    (stages/usage.py's `stage_parser` is the same for the stages that take no track: the track
    stages build theirs here so that their DVC code dependencies stay what they import.)"""
    ap = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if track:
        add_track_argument(ap)
    return ap


if __name__ == "__main__":      # a helper, not a stage: say so rather than do nothing and exit 0
    import sys

    print("python -m stages.track: error: a helper module (a track's params sections and folders), not a "
          "stage; the stages are dvc.yaml's (python -m stages.<stage> --help)", file=sys.stderr)
    sys.exit(2)
