"""The ``validate`` stage's digest of a local data source: what makes DVC re-run ``prepare``."""

from __future__ import annotations

import pytest

from pipelines.validate import source_digest
from study.config import ParamsError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / "1.png").write_bytes(label.encode() * 10)
    return root


def test_the_digest_changes_with_an_added_renamed_or_edited_file_only(folder, tmp_path):
    first = source_digest(folder)
    assert first["files"] == 2 and first == source_digest(folder)
    copy = tmp_path / "elsewhere" / "images"  # the same content in another place: the same digest
    copy.parent.mkdir()
    folder.rename(copy)
    assert source_digest(copy) == first
    (copy / "dog" / "2.png").write_bytes(b"new image")
    added = source_digest(copy)
    assert added["files"] == 3 and added["sha256"] != first["sha256"]
    (copy / "dog" / "2.png").rename(copy / "cat" / "2.png")
    assert source_digest(copy)["sha256"] not in (first["sha256"], added["sha256"])
    (copy / "cat" / "2.png").write_bytes(b"edited")
    assert len({source_digest(copy)["sha256"], added["sha256"], first["sha256"]}) == 3


def test_a_single_file_source_and_the_embedded_sets(tmp_path):
    csv = tmp_path / "mnist.csv"
    csv.write_text("1,2,3\n")
    assert source_digest(csv)["files"] == 1
    assert source_digest(None) == {"files": 0}


def test_a_missing_path_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match="data.path: .*absent does not exist"):
        source_digest(tmp_path / "absent")
