from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rave_data.io.discover import broken_link, find_audio
from tests.audio import sine, write


def _tree(root: Path) -> None:
    a = sine(0.1, 8000)
    write(root / "a.wav", a, 8000)
    write(root / "B.FLAC", a, 8000)
    write(root / "sub" / "c.ogg", a, 8000)
    write(root / "sub" / "deep" / "d.wav", a, 8000)
    write(root / ".hidden" / "e.wav", a, 8000)
    write(root / ".f.wav", a, 8000)
    (root / "notes.txt").write_text("not audio")
    (root / "song.MP3").write_bytes(b"")  # extension alone decides discovery


def test_recursive_case_insensitive_hidden_skipped(tmp_path):
    _tree(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in find_audio([tmp_path])]
    assert names == ["B.FLAC", "a.wav", "song.MP3", "sub/c.ogg", "sub/deep/d.wav"]


def test_non_recursive_include_exclude(tmp_path):
    _tree(tmp_path)
    top = [p.name for p in find_audio([tmp_path], recursive=False)]
    assert top == ["B.FLAC", "a.wav", "song.MP3"]
    only_wav = [p.name for p in find_audio([tmp_path], include=["*.wav"])]
    assert only_wav == ["a.wav", "d.wav"]
    no_sub = [p.name for p in find_audio([tmp_path], exclude=["sub/*"])]
    assert no_sub == ["B.FLAC", "a.wav", "song.MP3"]


def test_output_inside_input_and_symlink_loop(tmp_path):
    _tree(tmp_path)
    out = tmp_path / "out"
    write(out / "audio" / "a.wav", np.zeros((1, 10), np.float32), 8000)
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a loop back to the root
    found = find_audio([tmp_path], skip_dirs=[out])
    assert not any("out" in p.parts for p in found)
    assert len(found) == 5  # the loop neither hangs nor duplicates


def test_file_roots_and_missing(tmp_path):
    _tree(tmp_path)
    assert find_audio([tmp_path / "a.wav", tmp_path / "notes.txt", tmp_path / "missing"]) == [tmp_path / "a.wav"]


def test_broken_link_named_like_audio_is_listed(tmp_path):
    _tree(tmp_path)
    (tmp_path / "gone.wav").symlink_to(tmp_path / "missing.wav")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing.txt")
    found = find_audio([tmp_path])
    assert tmp_path / "gone.wav" in found and tmp_path / "gone.txt" not in found
    assert broken_link(tmp_path / "gone.wav") == f"broken symbolic link (points to {tmp_path / 'missing.wav'}, which does not exist)"
    assert broken_link(tmp_path / "a.wav") is None
