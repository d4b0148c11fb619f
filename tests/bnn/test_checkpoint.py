"""Checkpoints and atomic writes: the saved bytes depend on the content only, and round-trip."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from torch import nn

from bnn.checkpoint import atomic_torch_save, atomic_write, load_checkpoint, save_checkpoint


def checkpoint_of(seed: int) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    return model, [torch.sign(model[0].weight.detach())]


def test_same_object_saved_to_different_paths_gives_identical_bytes(tmp_path):
    # torch.save(obj, path) names the zip records after the (temporary) file: DVC saw a new md5 each run.
    model, signs = checkpoint_of(0)
    meta = {"final": {"val_acc": 0.5}}
    first, second = tmp_path / "a" / "model.pt", tmp_path / "another-name.pt"
    save_checkpoint(first, model, signs, meta)
    save_checkpoint(second, model, signs, meta)
    assert first.read_bytes() == second.read_bytes()
    payload = {"format": 1, "train_images": torch.rand(5, 1, 8, 8), "classes": ["0", "1"]}
    atomic_torch_save(payload, tmp_path / "data.pt")
    atomic_torch_save(payload, tmp_path / "prepared.pt")
    assert (tmp_path / "data.pt").read_bytes() == (tmp_path / "prepared.pt").read_bytes()


def test_different_content_gives_different_bytes(tmp_path):
    for seed in (0, 1):
        save_checkpoint(tmp_path / f"{seed}.pt", *checkpoint_of(seed), meta={})
    assert (tmp_path / "0.pt").read_bytes() != (tmp_path / "1.pt").read_bytes()


def test_checkpoint_round_trip(tmp_path):
    model, signs = checkpoint_of(0)
    save_checkpoint(tmp_path / "model.pt", model, signs, {"final": {"val_acc": 0.5}})
    fresh, _ = checkpoint_of(1)
    loaded = load_checkpoint(tmp_path / "model.pt", fresh)
    assert loaded["meta"] == {"final": {"val_acc": 0.5}}
    assert torch.equal(loaded["init_signs"][0], signs[0])
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_atomic_write_leaves_an_ordinary_file_and_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "out" / "x.txt", lambda tmp: tmp.write_text("done"))
    assert path.read_text() == "done"
    assert os.listdir(path.parent) == ["x.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("previous")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(path, fail)
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["x.txt"]
