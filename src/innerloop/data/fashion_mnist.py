"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from its IDX files: the distribution-shift test set.

Ten classes of 28x28 grey-scale clothing photographs (70,000 images: 60,000 in the training files,
10,000 in the test files, 7,000 per class in all). A learner meta-trained on Omniglot's
handwritten characters meets photographs of objects here: the cross-domain evaluation of
``innerloop eval RUN --dataset fashion-mnist``. Both files of each kind are pooled, so every class
holds 7,000 images, and the one split, ``test``, has all ten classes (5-way tasks draw 5 of them).

Files: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (gzip or uncompressed), looked up in
``<data root>/fashion-mnist/``, then in Debian's ``dataset-fashion-mnist`` package folder
(``/usr/share/datasets/fashion-mnist``); missing files are downloaded into the data root from the
official mirror. Files are accepted by content: IDX magic numbers, shapes, 7,000 images per class.

IDX format: a big-endian header — two zero bytes, a type code (``0x08``: unsigned bytes) and the
number of dimensions — then one big-endian ``uint32`` per dimension, then the values.

Preprocessing: images keep Fashion-MNIST's polarity (object bright on a dark background, like
Omniglot's ink = 255) and are resized to ``image_size`` with Lanczos antialiasing if that is not 28.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from innerloop.data.download import DownloadFailed, fetch
from innerloop.data.paths import resolve_data_root, store_cache_dir
from innerloop.data.store import ClassSplit, TensorStore, cached_store
from innerloop.errors import DataError

FOLDER = "fashion-mnist"
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}"
FILES = {  # part -> (images file, labels file, images in it)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot")
IMAGES_PER_CLASS = 7_000
SIDE = 28
SPLITS = ("test",)
IDX_UNSIGNED_BYTE = 0x08
PREPROCESSING_VERSION = 1


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed if its name ends in ``.gz``) as an array."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path} cannot be read ({error}); delete it and run again to download it, "
                        f"or install Debian's dataset-fashion-mnist") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UNSIGNED_BYTE:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()})")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path} holds {len(data) - header} values after its header, but its shape "
                        f"{shape} needs {int(np.prod(shape))}: the file is truncated or damaged")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(name: str, folder: Path) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz"), DEBIAN_FOLDER / name):
        if candidate.is_file():
            return candidate
    return None


def locate_files(root: str | Path | None = None, download: bool = True) -> dict[str, Path]:
    """Paths of the four files (data root first, then Debian's package), downloading missing ones."""
    folder = resolve_data_root(root) / FOLDER
    paths: dict[str, Path] = {}
    for images, labels, _ in FILES.values():
        for name in (images, labels):
            found = _find(name, folder)
            if found is None and download:
                try:
                    found = fetch(OFFICIAL_URL.format(name=name), folder / name)
                except DownloadFailed as error:
                    raise DataError(_missing_message(folder, name, str(error))) from None
            if found is None:
                raise DataError(_missing_message(folder, name, "not found and download is off."))
            paths[name] = found
    return paths


def _missing_message(folder: Path, name: str, reason: str) -> str:
    return (f"Fashion-MNIST: {reason} Put {name} (and the other IDX files: "
            f"{', '.join(n for files in FILES.values() for n in files[:2])}) in {folder}, or install "
            f"Debian's package (apt install dataset-fashion-mnist), which puts them in {DEBIAN_FOLDER}.")


def decode_files(paths: dict[str, Path], image_size: int = SIDE) -> TensorStore:
    """Check the four files by content and group the 70,000 images by class."""
    images, labels = [], []
    for image_file, label_file, count in FILES.values():
        part_images, part_labels = read_idx(paths[image_file]), read_idx(paths[label_file])
        if part_images.shape != (count, SIDE, SIDE) or part_labels.shape != (count,):
            raise DataError(f"{paths[image_file]} and {paths[label_file]} hold shapes "
                            f"{part_images.shape} and {part_labels.shape}; Fashion-MNIST's are "
                            f"({count}, {SIDE}, {SIDE}) and ({count},)")
        images.append(part_images)
        labels.append(part_labels)
    all_labels = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    counts = torch.bincount(all_labels, minlength=len(CLASS_NAMES))
    if counts.numel() != len(CLASS_NAMES) or not bool((counts == IMAGES_PER_CLASS).all()):
        raise DataError(f"Fashion-MNIST should hold {IMAGES_PER_CLASS} images of each of "
                        f"{len(CLASS_NAMES)} classes; these files hold {counts.tolist()}")
    order = torch.argsort(all_labels, stable=True)  # class-contiguous, file order within a class
    pixels = torch.from_numpy(np.concatenate(images))[order]
    if image_size != SIDE:
        pixels = torch.from_numpy(np.stack([
            np.asarray(Image.fromarray(image.numpy()).resize((image_size, image_size), Image.Resampling.LANCZOS))
            for image in pixels]))
    offsets = torch.arange(len(CLASS_NAMES), dtype=torch.int64) * IMAGES_PER_CLASS
    return TensorStore(images=pixels.contiguous(), class_offsets=offsets, class_counts=counts,
                       class_names=CLASS_NAMES, class_groups=("clothing",) * len(CLASS_NAMES))


def _content_key(paths: dict[str, Path], image_size: int) -> str:
    digest = hashlib.sha256(f"preprocessing {PREPROCESSING_VERSION} size {image_size}\n".encode())
    for name in sorted(paths):
        digest.update(f"{name}:{paths[name].stat().st_size}:{paths[name].stat().st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def load_fashion_mnist(root: str | Path | None = None, image_size: int = SIDE,
                       download: bool = True) -> TensorStore:
    """Fashion-MNIST as a :class:`TensorStore`, decoded once and cached."""
    if not 1 <= image_size <= 105:
        raise DataError(f"image_size must be in 1..105, got {image_size}")
    paths = locate_files(root, download=download)
    return cached_store(store_cache_dir() / f"fashion-mnist-{_content_key(paths, image_size)}.pt",
                        lambda: decode_files(paths, image_size))


def fashion_mnist_split(store: TensorStore, split: str, rotations: tuple[int, ...] = (0,)) -> ClassSplit:
    """All ten classes (the only split, ``test``), each rotation a new class."""
    if split not in SPLITS:
        raise DataError(f"fashion-mnist has one split, 'test' (all ten classes; it is an evaluation "
                        f"set), got '{split}'")
    return ClassSplit.with_rotations(store, "test", torch.arange(store.num_classes), tuple(rotations))
