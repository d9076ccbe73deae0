from __future__ import annotations

import os
import stat

import pytest

from digestlab.io import replace_dir_atomic


def siblings(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_replaced_folder_holds_only_the_new_contents(tmp_path):
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "stale.html").write_text("old")
    with replace_dir_atomic(dest) as staging:
        assert staging.parent == dest.parent and list(staging.iterdir()) == []
        (staging / "index.html").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["index.html"]
    assert (dest / "index.html").read_text() == "new"
    assert siblings(dest) == ["site"]  # neither staging nor the old folder is left behind


def test_missing_folder_and_its_parents_are_created(tmp_path):
    dest = tmp_path / "assets" / "figures" / "cla"
    with replace_dir_atomic(dest) as staging:
        (staging / "f.svg").write_text("<svg/>")
    assert (dest / "f.svg").read_text() == "<svg/>"


def test_failure_leaves_the_old_folder_and_removes_the_staging_folder(tmp_path):
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "index.html").write_text("old")
    with pytest.raises(RuntimeError, match="build failed"):
        with replace_dir_atomic(dest) as staging:
            (staging / "index.html").write_text("half")
            raise RuntimeError("build failed")
    assert (dest / "index.html").read_text() == "old"
    assert siblings(dest) == ["site"]


def test_replaced_folder_gets_the_usual_permissions_not_mkdtemps(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    dest = tmp_path / "site"
    with replace_dir_atomic(dest):
        pass
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~umask
