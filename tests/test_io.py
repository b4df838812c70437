"""distillery.io: writes that a killed process cannot leave half done."""

from __future__ import annotations

import hashlib

import pytest

from distillery.io import atomic_path, write_folder, write_json


def test_write_folder_replaces_the_folder_whole_and_returns_each_files_sha256(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "stale.png").write_bytes(b"from an earlier run")
    sha = write_folder([("a", b"first"), ("b", b"second")], folder, ".png")
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png"]
    assert (folder / "b.png").read_bytes() == b"second"
    assert sha == {"a": hashlib.sha256(b"first").hexdigest(), "b": hashlib.sha256(b"second").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]   # no temp folder left


def test_write_folder_killed_while_writing_leaves_the_old_folder_as_it_was(tmp_path):
    folder = tmp_path / "images"
    write_folder([("old", b"kept")], folder)

    def files():
        yield "new", b"half"
        raise KeyboardInterrupt   # the run is stopped between two files

    with pytest.raises(KeyboardInterrupt):
        write_folder(files(), folder)
    assert [p.name for p in folder.iterdir()] == ["old"]
    assert (folder / "old").read_bytes() == b"kept"
    # the next run starts from a clean temp folder
    write_folder([("new", b"whole")], folder)
    assert [p.name for p in folder.iterdir()] == ["new"]


def test_a_failed_atomic_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.json"
    write_json({"v": 1}, path)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("{ torn")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
