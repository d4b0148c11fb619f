import builtins
import io
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bnn.data import (
    CIFAR10_FILES,
    CIFAR10_MD5,
    DATASETS,
    DataError,
    ImageData,
    PreparedData,
    channel_stats,
    prepare_data,
    split,
)

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def mnist():
    return DATASETS["mnist5k"](None, None)


def test_mnist5k_is_the_real_5k_subset(mnist):
    pool, official_test, classes = mnist
    assert pool.images.shape == (5000, 1, 28, 28)
    assert pool.images.dtype == torch.uint8 and pool.labels.dtype == torch.int64
    assert torch.bincount(pool.labels).tolist() == [500] * 10
    assert int(pool.images.max()) == 255 and official_test is None
    assert classes == [str(i) for i in range(10)]


def test_mnist5k_missing_csv_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.csv.gz"):
        prepare_data("mnist5k", tmp_path / "nope.csv.gz", val_fraction=0.1, test_fraction=0.1, seed=0)


def test_prepare_mnist5k_default_split():
    data = prepare_data(val_fraction=0.1, test_fraction=0.1, seed=0)
    assert data.name == "mnist5k"
    assert (len(data.train), len(data.val), len(data.test)) == (4000, 500, 500)
    for part, per_class in ((data.train, 400), (data.val, 50), (data.test, 50)):
        assert torch.bincount(part.labels, minlength=10).tolist() == [per_class] * 10
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 28)
    assert 0.1 < data.mean.item() < 0.16 and 0.28 < data.std.item() < 0.34


def test_digits_loads_scaled_and_resized():
    pool, official_test, classes = DATASETS["digits"](None, None)
    assert pool.images.shape == (1797, 1, 8, 8) and pool.images.dtype == torch.uint8
    assert int(pool.images.max()) == 255 and official_test is None and len(classes) == 10
    resized, _, _ = DATASETS["digits"](None, 16)
    assert resized.images.shape == (1797, 1, 16, 16)


def _cifar_batch(rng: np.random.Generator, n: int) -> dict:
    return {
        b"batch_label": b"synthetic",
        b"labels": [int(i % 10) for i in range(n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A tiny ``cifar-10-batches-py`` folder in the real pickle format: 20 images per file."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(_cifar_batch(rng, 20)))
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return tmp_path


@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar10_loads_from_folder_or_parent(cifar_root, use_parent):
    folder = cifar_root / "cifar-10-batches-py"
    pool, official_test, classes = DATASETS["cifar10"](cifar_root if use_parent else folder, None)
    assert classes == CIFAR_NAMES
    assert pool.images.shape == (100, 3, 32, 32) and official_test.images.shape == (20, 3, 32, 32)
    raw = pickle.loads((folder / "test_batch").read_bytes())
    assert torch.equal(official_test.images[3], torch.from_numpy(raw[b"data"][3].reshape(3, 32, 32)))
    assert official_test.labels.tolist() == raw[b"labels"]


def test_prepare_cifar10_uses_official_test(cifar_root):
    data = prepare_data(
        "cifar10", cifar_root, val_fraction=0.2, test_fraction=0.3, seed=1, verify_checksums=False
    )
    _, official_test, _ = DATASETS["cifar10"](cifar_root, None)
    assert torch.equal(data.test.images, official_test.images)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    assert data.mean.shape == data.std.shape == (3,)


def test_cifar10_truncated_file_is_named(cifar_root):
    file = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(DataError, match="data_batch_3"):
        DATASETS["cifar10"](cifar_root, None)


def test_cifar10_missing_folder_and_file(tmp_path, cifar_root):
    with pytest.raises(DataError, match="no_such_dir"):
        DATASETS["cifar10"](tmp_path / "no_such_dir", None)
    (cifar_root / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5"):
        DATASETS["cifar10"](cifar_root, None)


class _Payload:
    """Unpickling this calls ``call(*args)``: what a crafted batch makes a plain ``pickle.load`` do."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _crafted_batch(folder: Path, name: str, call, *args) -> Path:
    """Replace ``folder/name`` by a real-looking batch whose ``data`` runs ``call(*args)`` when unpickled."""
    batch = _cifar_batch(np.random.default_rng(1), 20)
    batch[b"data"] = _Payload(call, *args)
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder / name


def _crafted(marker: Path) -> list:
    """(call, args, the global the file names) for three ways of writing ``marker``."""
    return [
        (os.system, (f"touch '{marker}'",), f"{os.system.__module__}.system"),  # posix.system
        (builtins.exec, (f"open({str(marker)!r}, 'w').close()",), "builtins.exec"),
        (subprocess.Popen, (["touch", str(marker)],), "subprocess.Popen"),
    ]


@pytest.mark.parametrize("case", range(3))
def test_cifar10_crafted_batch_is_refused_not_run(cifar_root, case):
    """Issue 19: a batch file is data, never code; the refusal names the file and the global."""
    marker = cifar_root / "pwned"
    call, args, refused = _crafted(marker)[case]
    file = _crafted_batch(cifar_root / "cifar-10-batches-py", "data_batch_1", call, *args)
    with pytest.raises(DataError, match=re.escape(f"{file}: refused to load `{refused}`")):
        DATASETS["cifar10"](cifar_root, None)
    assert not marker.exists()


def test_prepare_cifar10_without_checksums_refuses_crafted_batch(cifar_root):
    """The path `data.verify_checksums: false` takes: the crafted file is refused in one line."""
    marker = cifar_root / "pwned"
    file = _crafted_batch(cifar_root / "cifar-10-batches-py", "data_batch_2", os.system, f"touch '{marker}'")
    with pytest.raises(DataError) as error:
        prepare_data(
            "cifar10", cifar_root, val_fraction=0.2, test_fraction=0.3, seed=1, verify_checksums=False
        )
    assert str(error.value) == (
        f"{file}: refused to load `{os.system.__module__}.system` (a CIFAR-10 batch holds only arrays, "
        "lists, strings and numbers)"
    )
    assert not marker.exists()


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote the CIFAR-10 release: every str and bytes is a py2 ``str``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode() if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str


def _python2_dumps(obj) -> bytes:
    stream = io.BytesIO()
    _Python2Pickler(stream, protocol=2).dump(obj)
    return stream.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")  # numpy 1's module names


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])
def test_cifar10_genuine_format_still_loads(cifar_root, protocol):
    """The release (Python 2, protocol 2, ``numpy.core``) and copies re-pickled under Python 3 load."""
    folder = cifar_root / "cifar-10-batches-py"
    rng = np.random.default_rng(2)
    batches = {name: _cifar_batch(rng, 20) for name in CIFAR10_FILES[:6]}
    batches["test_batch"][b"batch_label"] = b""  # Python 3 pickles b"" as `bytes()` under protocol 2
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072, b"num_cases_per_batch": 20}
    for name, content in {**batches, "batches.meta": meta}.items():
        raw = _python2_dumps(content) if protocol == "python2" else pickle.dumps(content, protocol=protocol)
        (folder / name).write_bytes(raw)
    if protocol == "python2":
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in (folder / "test_batch").read_bytes()
    pool, official_test, classes = DATASETS["cifar10"](cifar_root, None)
    assert classes == CIFAR_NAMES
    expected = np.concatenate([batches[name][b"data"] for name in CIFAR10_FILES[:5]])
    assert torch.equal(pool.images, torch.from_numpy(expected.reshape(-1, 3, 32, 32)))
    assert official_test.labels.tolist() == batches["test_batch"][b"labels"]


def _write_image(path: Path, size: tuple[int, int], color, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_imagefolder_loads_resizes_and_sorts_classes(tmp_path):
    _write_image(tmp_path / "zebra" / "a.png", (10, 12), (255, 0, 0))
    _write_image(tmp_path / "zebra" / "b.PNG", (7, 5), 128, mode="L")
    _write_image(tmp_path / "ant" / "c.bmp", (20, 20), (0, 0, 255))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    pool, official_test, classes = DATASETS["imagefolder"](tmp_path, 8)
    assert classes == ["ant", "zebra"] and official_test is None
    assert pool.images.shape == (3, 3, 8, 8) and pool.labels.tolist() == [0, 1, 1]
    assert pool.images[0, :, 4, 4].tolist() == [0, 0, 255]
    assert pool.images[1, :, 4, 4].tolist() == [255, 0, 0]
    assert pool.images[2, :, 4, 4].tolist() == [128, 128, 128]


def test_imagefolder_train_test_layout(tmp_path):
    for split_name, count in (("train", 3), ("val", 1)):
        for name in ("a", "b"):
            for i in range(count):
                _write_image(tmp_path / split_name / name / f"{i}.png", (6, 6), (i, 0, 0))
    data = prepare_data("imagefolder", tmp_path, val_fraction=0.34, test_fraction=0.5, seed=0, image_size=4)
    assert data.classes == ["a", "b"]
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 2)
    assert data.test.labels.tolist() == [0, 1] and data.image_size == 4


def test_imagefolder_errors(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no .* images"):
        DATASETS["imagefolder"](tmp_path, 8)
    with pytest.raises(DataError, match="image_size"):
        DATASETS["imagefolder"](tmp_path, None)
    with pytest.raises(DataError, match="missing_root"):
        DATASETS["imagefolder"](tmp_path / "missing_root", 8)


def test_unknown_dataset():
    with pytest.raises(DataError, match="mnist5k"):
        prepare_data("imagenet", val_fraction=0.1, test_fraction=0.1, seed=0)


def _indexed_pool() -> ImageData:
    """120 samples in classes of 40, 20 and 60; pixel (0, 0) holds the sample's pool index."""
    labels = torch.tensor([0] * 40 + [1] * 20 + [2] * 60)[
        torch.randperm(120, generator=torch.Generator().manual_seed(5))
    ]
    images = torch.zeros(120, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(120, dtype=torch.uint8)
    return ImageData(images, labels)


def _ids(part: ImageData) -> list[int]:
    return part.images[:, 0, 0, 0].tolist()


def test_split_is_stratified_disjoint_and_covering():
    pool = _indexed_pool()
    train, val, test = split(pool, 0.25, 0.25, seed=3)
    for part, expected in ((train, [20, 10, 30]), (val, [10, 5, 15]), (test, [10, 5, 15])):
        assert torch.bincount(part.labels, minlength=3).tolist() == expected
        assert torch.equal(part.labels, pool.labels[part.images[:, 0, 0, 0].long()])
    assert sorted(_ids(train) + _ids(val) + _ids(test)) == list(range(120))


def test_split_depends_only_on_seed():
    pool = _indexed_pool()
    first = [_ids(p) for p in split(pool, 0.2, 0.1, seed=7)]
    assert first == [_ids(p) for p in split(pool, 0.2, 0.1, seed=7)]
    assert first != [_ids(p) for p in split(pool, 0.2, 0.1, seed=8)]


def test_split_with_official_test_only_carves_validation():
    pool = _indexed_pool()
    official = ImageData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4))
    train, val, test = split(pool, 0.25, 0.5, seed=0, official_test=official)
    assert test is official and (len(train), len(val)) == (90, 30)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.1, 1.2), (0.5, 0.5)])
def test_split_rejects_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        split(_indexed_pool(), val, test, seed=0)


def test_channel_stats_match_float_computation():
    images = torch.randint(
        0, 256, (50, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    mean, std = channel_stats(ImageData(images, torch.zeros(50, dtype=torch.int64)))
    as_float = images.double() / 255
    torch.testing.assert_close(mean, as_float.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, as_float.std(dim=(0, 2, 3), unbiased=False).float())


@pytest.fixture(scope="module")
def digits_data() -> PreparedData:
    return prepare_data("digits", val_fraction=0.1, test_fraction=0.2, seed=0)


def test_save_load_round_trip_keeps_fingerprint(digits_data, tmp_path):
    path = tmp_path / "sub" / "prepared.pt"
    digits_data.save(path)
    assert os.listdir(path.parent) == ["prepared.pt"]
    loaded = PreparedData.load(path)
    assert loaded.fingerprint() == digits_data.fingerprint()
    assert loaded.classes == digits_data.classes and loaded.name == "digits"
    assert torch.equal(loaded.mean, digits_data.mean) and torch.equal(loaded.std, digits_data.std)
    code = f"from bnn.data import PreparedData; print(PreparedData.load({str(path)!r}).fingerprint())"
    repo_root = Path(__file__).resolve().parents[2]
    other_process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root
    )
    assert other_process.stdout.strip() == digits_data.fingerprint()


def test_fingerprint_changes_with_one_pixel(digits_data, tmp_path):
    digits_data.save(tmp_path / "prepared.pt")
    changed = PreparedData.load(tmp_path / "prepared.pt")
    changed.val.images[0, 0, 0, 0] ^= 1
    assert changed.fingerprint() != digits_data.fingerprint()


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="absent.pt"):
        PreparedData.load(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="garbage.pt"):
        PreparedData.load(tmp_path / "garbage.pt")


def test_cifar10_checksums_refuse_altered_or_truncated_files(cifar_root):
    """The synthetic batches are not the official release: verification names the first file that differs."""
    with pytest.raises(DataError, match=r"data_batch_1 differs from the official CIFAR-10 release") as error:
        prepare_data("cifar10", cifar_root, val_fraction=0.2, test_fraction=0.3, seed=1)
    size = (cifar_root / "cifar-10-batches-py" / "data_batch_1").stat().st_size
    assert f"{size:,} bytes" in str(error.value)  # what differs: the MD5 and size of the file given
    assert "set `data.verify_checksums: false` in params.yaml" in str(error.value)  # the key, not a kwarg
    assert set(CIFAR10_MD5) == set(CIFAR10_FILES)
