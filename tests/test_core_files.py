"""``pocketrec.core.files.install_directory``: nested folders, replacing an old directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketrec.core.files import install_directory


def staged(root: Path, name: str, text: str) -> Path:
    folder = root / name
    (folder / "day=2024-05-01").mkdir(parents=True)
    (folder / "day=2024-05-01" / "part-0.txt").write_text(text)
    (folder / "top.txt").write_text(text)
    return folder


def test_a_nested_directory_is_installed_and_replaces_the_old_one_whole(tmp_path: Path) -> None:
    final = tmp_path / "export"
    install_directory(staged(tmp_path, ".s1", "old"), final)
    assert (final / "day=2024-05-01" / "part-0.txt").read_text() == "old"
    (tmp_path / ".export.old").mkdir()  # left by a crash between the two renames of a replace
    (tmp_path / ".export.old" / "stale").write_text("x")
    install_directory(staged(tmp_path, ".s2", "new"), final, replace=True)
    assert (final / "day=2024-05-01" / "part-0.txt").read_text() == "new"
    assert sorted(p.name for p in final.rglob("*")) == ["day=2024-05-01", "part-0.txt", "top.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_without_replace_an_existing_directory_is_kept(tmp_path: Path) -> None:
    final = tmp_path / "export"
    install_directory(staged(tmp_path, ".s1", "old"), final)
    with pytest.raises(OSError, match="not empty"):
        install_directory(staged(tmp_path, ".s2", "new"), final)
    assert (final / "top.txt").read_text() == "old"
