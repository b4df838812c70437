"""Reading and writing artifacts: atomic writes (temp file, then rename) so a killed stage
never leaves a half-written file, and reads that fail with the path in the message."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import polars as pl


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); artifacts get the usual mode under the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_folder(files: Iterable[tuple[str, bytes]], folder: str | Path, suffix: str = "") -> dict[str, str]:
    """Write each (stem, content) of `files` as `stem + suffix` into a fresh folder that then
    replaces `folder` whole: no file of an earlier run survives, and a run killed while
    writing leaves the old folder as it was. Returns each stem's sha256."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sha: dict[str, str] = {}
    for stem, data in files:
        (tmp / f"{stem}{suffix}").write_bytes(data)
        sha[stem] = hashlib.sha256(data).hexdigest()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return sha


def write_parquet(frame: pl.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        _dump(frame, tmp)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        _dump(obj, tmp)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        _dump(text, tmp)
    return Path(path)


def write_together(files: Mapping[str | Path, Any]) -> None:
    """Write several files as one result: a DataFrame as parquet, a str as text, anything else
    as JSON. Each is written to a temp file beside its path, and only once every one is written
    do the renames replace the old files, so a failure part-way leaves all of them as they were.
    A folder standing where one of the files belongs is refused before anything is written."""
    for path in files:
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder stands where this file is to be written", str(path))
    with ExitStack() as renames_on_success:
        for path, content in files.items():
            _dump(content, renames_on_success.enter_context(atomic_path(path)))


def _dump(content: Any, path: Path) -> None:
    if isinstance(content, pl.DataFrame):
        content.write_parquet(path, compression="zstd", statistics=True)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content, indent=2, sort_keys=True, default=_jsonable) + "\n")


def json_error(e: ValueError) -> str:
    """Why `json.loads` refused a text, in a few words. Besides its `JSONDecodeError`, json
    raises a plain ValueError for a number with more digits than Python converts to an int
    (4,300 by default): whoever parses text it did not write catches ValueError, and this
    says which it was."""
    if isinstance(e, json.JSONDecodeError):
        return e.msg
    return str(e).split("; use sys.set_int_max_str_digits")[0]


def error_line(e: BaseException) -> str:
    """The first line of an exception's message (a library's may run to many), or its type's
    name when it has none."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        with tmp.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True, default=_jsonable) + "\n")
    return Path(path)


class MissingInput(FileNotFoundError):
    """An input a command reads is not there. Its message names the path and, where known,
    the stage that makes it: the user's to fix, so commands report it in one line."""


def read_parquet(path: str | Path, what: str = "") -> pl.DataFrame:
    """Read a parquet file; a missing file says which stage makes it."""
    return pl.read_parquet(require(path, what))


def require(path: str | Path, what: str = "") -> Path:
    """`path` (a file or a folder), or `MissingInput` saying which stage makes it (for an input
    that is read later, e.g. by worker processes, so that it is named before any work)."""
    p = Path(path)
    if not p.exists():
        hint = f" (made by the `{what}` stage: run `dvc repro {what}`)" if what else ""
        raise MissingInput(f"{p}: not found{hint}")
    return p


# The model folders the pipeline's stages write (their `dvc.yaml` outs), so that a missing
# model is reported with the stage to run. tests/test_io.py holds this equal to dvc.yaml.
MODEL_FOLDERS = {
    "models/warmup": "warmup", "models/teacher": "teacher", "models/student_weak": "student_weak",
    "models/internalized": "internalize", "models/rl": "rl", "models/selskill": "selskill",
    "models/distilled": "distill", "models/sql_warmup": "sql_warmup", "models/sql_rl": "sql_rl",
    "models/vision": "vision_train", "models/tables": "table_train", "models/pghs": "pghs",
    "models/twx/warmup": "twx_warmup", "models/twx/internalized": "twx_internalize", "models/twx/rl": "twx_rl",
}


def stage_writing(path: str | Path) -> str:
    """The stage whose model folder is or holds `path` (relative to the working directory, where
    stages run), or '' for a path no stage writes."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return ""
    parts = Path(os.path.normpath(p)).parts
    for folder, stage in MODEL_FOLDERS.items():
        if parts[:len(Path(folder).parts)] == Path(folder).parts:
            return stage
    return ""


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):          # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
