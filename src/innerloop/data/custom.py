"""Your own data as few-shot task distributions: a folder of images, a CSV of texts, tensors.

Each source becomes a :class:`~innerloop.data.store.TensorStore`, the form of every built-in
dataset, so the same :class:`~innerloop.tasks.sampler.EpisodeSampler` serves it:

* :func:`image_folder` — ``root/<class name>/<image>`` (images found recursively inside each class
  folder; hidden files skipped): every image decoded once with PIL, turned upright by its EXIF
  orientation, converted to RGB (or grayscale), resized to ``image_size x image_size`` (Lanczos; the aspect ratio is not kept) and
  stored as ``uint8``; the store is cached under :func:`~innerloop.data.paths.store_cache_dir`
  keyed by each file's relative path, size and modification time and the preprocessing, like
  Omniglot's decoded cache.
* :func:`csv_texts` — a CSV with a header row: the ``text_column`` of each row embedded by the
  frozen all-MiniLM-L6-v2 sentence encoder (:mod:`innerloop.nn.sentence_encoder`, the ``text``
  extra; embeddings cached by :func:`~innerloop.nn.sentence_encoder.cached_embeddings`) or by an
  ``encoder`` of your own, grouped by ``label_column``: a store of float feature vectors.
* :func:`in_memory` — ``inputs [N, ...]`` (``uint8`` images ``[N, H, W]`` / ``[N, C, H, W]``,
  served scaled to ``[0, 1]`` and rotatable; float feature vectors ``[N, D]`` or float images
  ``[N, C, H, W]``, served as they are) and ``labels [N]``.

Classes are ordered by name (folder name, label text, or label value), examples within a class
by file path or row order. ``min_examples`` drops the classes with fewer examples.

Class splits (:func:`class_splits`) are disjoint and seeded, by the rule of the intent datasets
(:func:`innerloop.data.intents.intent_class_split`): the classes in the order of
``torch.randperm(C)`` under ``torch.Generator().manual_seed(seed)``, the first
``round(fractions[0] * C)`` meta-train, the next ``round(fractions[1] * C)`` meta-validation, the
rest meta-test; or explicit class lists per split.

For configs and the :class:`~innerloop.train.trainer.Trainer`: ``data.dataset: image-folder`` or
``csv-text`` with ``data.root`` the folder or CSV file (:func:`describe_image_folder`,
:func:`describe_csv_text` read the class counts without decoding and check the episode shapes,
naming the classes that are too small), and :func:`register_dataset` makes a store a named
dataset of :data:`innerloop.data.DATASETS` for the running process.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from innerloop.data.paths import store_cache_dir
from innerloop.data.store import ClassSplit, TensorStore, cached_store
from innerloop.errors import ConfigError, DataError, TaskError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
MAX_IMAGE_SIZE = 512
USER_SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.5, 0.2)  # train, val shares of the classes (as the intent datasets)
PREPROCESSING_VERSION = 1
SHOWN_CLASSES = 8  # error messages name at most this many classes
USER_DATA_KEYS = {"grayscale": ("image-folder",), "text_column": ("csv-text",),
                  "label_column": ("csv-text",), "min_examples": ("image-folder", "csv-text"),
                  "class_fractions": ("image-folder", "csv-text"), "split_seed": ("image-folder", "csv-text")}
REGISTERED: set[str] = set()  # names of the datasets that register_dataset added


class TextEncoder(Protocol):
    """What :func:`csv_texts` needs of an encoder: texts → float embeddings ``[N, D]``."""

    def encode(self, texts: Sequence[str]) -> Tensor: ...


# -- stores -----------------------------------------------------------------------------------
def grouped_store(examples: Tensor, label_ids: Tensor, class_names: Sequence[str]) -> TensorStore:
    """A store of ``examples [N, ...]`` with class ``label_ids[n]`` (``0..C-1``), rows grouped by
    class in their given order; each class is its own group."""
    counts = torch.bincount(label_ids, minlength=len(class_names))
    order = torch.argsort(label_ids, stable=True)
    return TensorStore(images=examples[order].contiguous(), class_offsets=torch.cumsum(counts, 0) - counts,
                       class_counts=counts, class_names=tuple(class_names), class_groups=tuple(class_names))


def drop_small_classes(store: TensorStore, min_examples: int) -> TensorStore:
    """``store`` without the classes that have fewer than ``min_examples`` examples."""
    keep = (store.class_counts >= min_examples).nonzero().flatten()
    if keep.numel() == store.num_classes:
        return store
    if keep.numel() == 0:
        raise DataError(f"min_examples={min_examples} drops every class (the largest has "
                        f"{int(store.class_counts.max())} examples); lower min_examples")
    rows = torch.cat([torch.arange(int(store.class_offsets[c]), int(store.class_offsets[c] + store.class_counts[c]))
                      for c in keep.tolist()])
    counts = store.class_counts[keep]
    return TensorStore(images=store.images[rows], class_offsets=torch.cumsum(counts, 0) - counts,
                       class_counts=counts, class_names=tuple(store.class_names[c] for c in keep.tolist()),
                       class_groups=tuple(store.class_groups[c] for c in keep.tolist()))


# -- a folder of class sub-folders of images ---------------------------------------------------
@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder of class sub-folders, without decoding them."""

    root: Path
    class_names: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]  # per class, sorted by path

    @property
    def counts(self) -> list[int]:
        return [len(files) for files in self.files]


def list_image_folder(root: str | Path) -> FolderListing:
    """The classes (sub-folders, by name) and image files (by path) of ``root``; a DataError
    naming the folder or file when the layout is not one sub-folder of images per class."""
    root = Path(root).expanduser()
    layout = f"{root}/<class name>/<image>.png (one sub-folder per class)"
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; image-folder data is laid out as {layout}")
    class_folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not class_folders:
        raise DataError(f"{root} holds no class sub-folders; put the images of each class in their "
                        f"own sub-folder: {layout}")
    files, empty = [], []
    for folder in class_folders:
        found = []
        for path in sorted(folder.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts) or path.is_dir():
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{path} is not an image file (accepted: {', '.join(IMAGE_EXTENSIONS)}); "
                                f"remove it from the class folder or convert it")
            found.append(path)
        if not found:
            empty.append(folder.name)
        files.append(tuple(found))
    if empty:
        raise DataError(f"{root}: class folder(s) without images: {', '.join(empty)}; put images in "
                        f"them or remove them")
    return FolderListing(root, tuple(folder.name for folder in class_folders), tuple(files))


def decode_image(path: Path, image_size: int, grayscale: bool) -> np.ndarray:
    """One image file → ``uint8 [image_size, image_size]`` (grayscale) or ``[3, image_size, image_size]``."""
    try:
        with Image.open(path) as image:  # upright as a photo viewer shows it (EXIF orientation)
            converted = ImageOps.exif_transpose(image).convert("L" if grayscale else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} cannot be read as an image ({error}); replace it or remove it") from None
    if converted.size != (image_size, image_size):
        converted = converted.resize((image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels if grayscale else pixels.transpose(2, 0, 1)


def folder_cache_key(listing: FolderListing, image_size: int, grayscale: bool) -> str:
    """Key of the decoded cache: every file's relative path, size and modification time, and the
    preprocessing."""
    digest = hashlib.sha256(json.dumps({"preprocessing": PREPROCESSING_VERSION, "size": image_size,
                                        "grayscale": grayscale}).encode())
    for files in listing.files:
        for path in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(listing.root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _check_image_size(image_size: int) -> None:
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(f"image_size must be in 1..{MAX_IMAGE_SIZE}, got {image_size}")


def image_folder(root: str | Path, image_size: int = 28, grayscale: bool = False, min_examples: int = 0,
                 cache: bool = True) -> TensorStore:
    """A folder of class sub-folders of images as a ``uint8`` :class:`TensorStore`
    (``[N, image_size, image_size]`` grayscale, ``[N, 3, image_size, image_size]`` RGB), decoded
    once and cached (see the module docstring); classes with fewer than ``min_examples`` images
    are left out."""
    _check_image_size(image_size)
    listing = list_image_folder(root)
    def decode() -> TensorStore:
        images = np.stack([decode_image(file, image_size, grayscale) for files in listing.files for file in files])
        label_ids = torch.repeat_interleave(torch.arange(len(listing.class_names)), torch.tensor(listing.counts))
        return grouped_store(torch.from_numpy(images), label_ids, listing.class_names)

    path = store_cache_dir() / f"image-folder-{folder_cache_key(listing, image_size, grayscale)}.pt"
    return drop_small_classes(cached_store(path, decode, use_cache=cache), min_examples)


# -- a CSV of (text, label) rows ---------------------------------------------------------------
def read_text_csv(path: str | Path, text_column: str = "text", label_column: str = "label",
                  delimiter: str = ",") -> tuple[list[str], list[str]]:
    """The texts and labels of a CSV file with a header row (UTF-8, surrounding whitespace
    stripped); a DataError naming the columns found, or the line of an empty text or label."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} is not a file; csv-text data is a CSV file with a header row naming "
                        f"a text column and a label column (e.g. 'text,label')")
    texts, labels = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file, delimiter=delimiter)
            columns = list(reader.fieldnames or [])
            missing = [name for name in (text_column, label_column) if name not in columns]
            if missing:
                found = ", ".join(repr(name) for name in columns) or "none (the file is empty)"
                raise DataError(f"{path} has no column {' or '.join(repr(name) for name in missing)}; columns "
                                f"found: {found}. Name the text and label columns with text_column= and "
                                f"label_column= (in a config: data.text_column, data.label_column)")
            for row in reader:
                text, label = row[text_column], row[label_column]
                if text is None or label is None or not text.strip() or not label.strip():
                    raise DataError(f"{path} line {reader.line_num}: empty or missing {text_column!r} or "
                                    f"{label_column!r}; fill it in or remove the row")
                texts.append(text.strip())
                labels.append(label.strip())
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} is not a readable UTF-8 CSV file ({error})") from None
    if not texts:
        raise DataError(f"{path} has a header but no rows")
    return texts, labels


def embed_texts(texts: list[str], key: str, encoder: TextEncoder | None = None,
                cache_dir: str | Path | None = None) -> Tensor:
    """``[N, D]`` float embeddings: the MiniLM sentence encoder's, cached on disk (``encoder``
    None or a :class:`~innerloop.nn.sentence_encoder.SentenceEncoder`), else ``encoder.encode``'s."""
    from innerloop.nn.sentence_encoder import SentenceEncoder, cached_embeddings

    if encoder is None or isinstance(encoder, SentenceEncoder):
        embeddings = cached_embeddings(texts, key, encoder, cache_dir)
    else:
        embeddings = encoder.encode(texts)
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or embeddings.shape[0] != len(texts):
        shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise DataError(f"the encoder must return one embedding per text, [N, D] = [{len(texts)}, D]; got {shape}")
    if not embeddings.is_floating_point() or not bool(torch.isfinite(embeddings).all()):
        raise DataError("the encoder returned non-float or non-finite embeddings")
    return embeddings.detach().to(torch.float32).cpu()


def csv_texts(path: str | Path, text_column: str = "text", label_column: str = "label",
              encoder: TextEncoder | None = None, min_examples: int = 0, delimiter: str = ",",
              cache_dir: str | Path | None = None) -> TensorStore:
    """A CSV of ``(text, label)`` rows as a :class:`TensorStore` of float embeddings ``[N, D]``
    (see the module docstring); classes with fewer than ``min_examples`` rows are left out."""
    texts, labels = read_text_csv(path, text_column, label_column, delimiter)
    names = sorted(set(labels))
    label_id = {name: index for index, name in enumerate(names)}
    embeddings = embed_texts(texts, f"csv-{Path(path).stem}", encoder, cache_dir)
    store = grouped_store(embeddings, torch.tensor([label_id[label] for label in labels]), names)
    return drop_small_classes(store, min_examples)


# -- tensors in memory --------------------------------------------------------------------------
def in_memory(inputs: Tensor | np.ndarray, labels: Tensor | np.ndarray | Sequence[int] | Sequence[str],
              class_names: Sequence[str] | None = None, min_examples: int = 0) -> TensorStore:
    """Tensors as a :class:`TensorStore`: ``inputs`` ``uint8`` images ``[N, H, W]`` or
    ``[N, C, H, W]``, or float ``[N, D]`` features or ``[N, C, H, W]`` images; ``labels [N]``
    integers (``class_names[i]`` names the ``i``-th smallest label value; default its number) or
    strings (the names themselves)."""
    inputs = torch.as_tensor(inputs)
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "USO":  # NumPy (or pandas) strings
        labels = labels.tolist()
    if isinstance(labels, Sequence) and labels and all(isinstance(label, str) for label in labels):
        if class_names is not None:
            raise DataError("labels are strings, which name the classes already; leave class_names out")
        class_names = sorted(set(labels))
        label_id = {name: index for index, name in enumerate(class_names)}
        labels = [label_id[label] for label in labels]
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise DataError(f"labels must hold one label per example, shape [N]; got shape {list(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise DataError(f"labels must be integers (or strings); got {labels.dtype}. Map your labels to "
                        f"integers and name them with class_names")
    if inputs.dim() == 0 or inputs.shape[0] != labels.shape[0]:
        count = inputs.shape[0] if inputs.dim() else 0
        raise DataError(f"inputs hold {count} examples but labels hold {labels.shape[0]}; give one label "
                        f"per example (inputs [N, ...], labels [N])")
    if labels.numel() == 0:
        raise DataError("inputs and labels are empty")
    if inputs.dtype == torch.uint8:
        if inputs.dim() not in (3, 4):
            raise DataError(f"uint8 inputs are images, [N, H, W] or [N, C, H, W]; got shape {list(inputs.shape)}")
    elif inputs.is_floating_point():
        if inputs.dim() not in (2, 4):
            hint = " (add the channel axis: inputs.unsqueeze(1))" if inputs.dim() == 3 else ""
            raise DataError(f"float inputs are feature vectors [N, D] or images [N, C, H, W]; got shape "
                            f"{list(inputs.shape)}{hint}")
        if not bool(torch.isfinite(inputs).all()):
            raise DataError("inputs hold non-finite values (nan or inf); clean them first")
        inputs = inputs.to(torch.float32)
    else:
        raise DataError(f"inputs must be uint8 images (0..255) or floating point; got {inputs.dtype}. "
                        f"Convert them with .float() or .to(torch.uint8)")
    values, label_ids = torch.unique(labels, sorted=True, return_inverse=True)
    if class_names is None:
        class_names = [str(int(value)) for value in values]
    elif len(class_names) != values.numel() or len(set(class_names)) != len(class_names):
        raise DataError(f"class_names must give {values.numel()} distinct names, one per distinct label "
                        f"(in the order of the label values); got {len(class_names)}")
    store = grouped_store(inputs.detach().cpu(), label_ids.cpu(), [str(name) for name in class_names])
    return drop_small_classes(store, min_examples)


# -- class splits -------------------------------------------------------------------------------
def assign_classes(num_classes: int, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, list[int]]:
    """The class indices of ``train`` / ``val`` / ``test`` by the seeded rule of the module docstring."""
    if len(fractions) != 2 or min(fractions) < 0 or sum(fractions) >= 1:
        raise DataError(f"class fractions are the (train, val) shares of the classes, each >= 0 and summing "
                        f"to less than 1 (the rest are test classes); got {list(fractions)}")
    train = round(fractions[0] * num_classes)
    val = round(fractions[1] * num_classes)
    counts = {"train": train, "val": val, "test": num_classes - train - val}
    if min(counts.values()) < 1:
        raise DataError(f"{num_classes} classes split by the fractions {list(fractions)} give "
                        f"{counts['train']} train, {counts['val']} val and {counts['test']} test classes; "
                        f"every split needs at least one class: add classes or change the fractions")
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    return {"train": order[:train], "val": order[train:train + val], "test": order[train + val:]}


def _class_indices(names: Sequence[str], wanted: Mapping[str, Sequence[str | int]]) -> dict[str, list[int]]:
    index = {name: position for position, name in enumerate(names)}
    assigned: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for split, members in wanted.items():
        if not members:
            raise DataError(f"the class list of split '{split}' is empty")
        indices = []
        for member in members:
            if isinstance(member, int) and not isinstance(member, bool) and 0 <= member < len(names):
                position = member
            elif isinstance(member, str) and member in index:
                position = index[member]
            else:
                shown = ", ".join(names[:SHOWN_CLASSES]) + (", ..." if len(names) > SHOWN_CLASSES else "")
                raise DataError(f"split '{split}' lists the class {member!r}, which is not in the data "
                                f"(classes: {shown}; or an index 0..{len(names) - 1})")
            if position in owner:
                raise DataError(f"class '{names[position]}' is listed in split '{owner[position]}' and "
                                f"'{split}'; class splits must be disjoint")
            owner[position] = split
            indices.append(position)
        assigned[split] = indices
    return assigned


def class_splits(store: TensorStore, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 classes: Mapping[str, Sequence[str | int]] | None = None, seed: int = 0,
                 rotations: tuple[int, ...] = (0,)) -> dict[str, ClassSplit]:
    """Disjoint :class:`ClassSplit` s of ``store`` by name: seeded ``train`` / ``val`` / ``test``
    by ``fractions`` (see the module docstring), or the explicit ``classes`` of each named split
    (class names or indices). ``rotations`` (degrees, each a new class) apply to uint8 images."""
    assigned = (_class_indices(store.class_names, classes) if classes is not None
                else assign_classes(store.num_classes, fractions, seed))
    if tuple(rotations) != (0,) and store.images.is_floating_point():
        raise DataError(f"rotations apply to uint8 images; this store holds float tensors, so rotations "
                        f"must be (0,), got {tuple(rotations)}")
    return {name: ClassSplit.with_rotations(store, name, torch.tensor(sorted(members), dtype=torch.int64),
                                            tuple(rotations))
            for name, members in assigned.items()}


def check_class_sizes(split: ClassSplit, ways: int, shots: int, queries: int,
                      drop_hint: str = "min_examples={needed}") -> None:
    """A :class:`TaskError` naming the classes of ``split`` that have fewer than
    ``shots + queries`` examples (with their counts), or saying how many classes are missing
    for ``ways``; ``drop_hint`` says how to drop small classes (``{needed}`` is filled in)."""
    if ways > split.num_classes:
        raise TaskError(f"{ways}-way episodes need {ways} classes but split '{split.name}' has "
                        f"{split.num_classes}; lower the ways to at most {split.num_classes}, add classes, "
                        f"or give this split a larger share of the classes")
    needed = shots + queries
    base = sorted(set(split.base_classes.tolist()))
    small = [(split.store.class_names[c], int(split.store.class_counts[c])) for c in base
             if int(split.store.class_counts[c]) < needed]
    if small:
        small.sort(key=lambda item: item[1])
        shown = ", ".join(f"'{name}' ({count})" for name, count in small[:SHOWN_CLASSES])
        more = f" and {len(small) - SHOWN_CLASSES} more" if len(small) > SHOWN_CLASSES else ""
        raise TaskError(f"split '{split.name}': {len(small)} class(es) have fewer than shots + queries = "
                        f"{shots} + {queries} = {needed} examples: {shown}{more}. Lower shots + queries to "
                        f"at most {small[0][1]}, or drop the small classes with {drop_hint.format(needed=needed)}")


# -- datasets for configs and the Trainer -------------------------------------------------------
def check_config_episodes(config: Any, splits: Mapping[str, ClassSplit], drop_hint: str) -> None:
    """Every episode shape of ``config`` against the classes of its split: one ConfigError that
    names every split, and every class, that cannot serve its episodes."""
    train, evaluation = config.train, config.eval
    shapes = [("train", "train_split", train.ways, train.shots, train.queries),
              ("eval", "val_split", evaluation.ways, evaluation.shots, evaluation.queries),
              ("eval", "test_split", evaluation.ways, evaluation.shots, evaluation.queries)]
    problems: list[str] = []
    checked = set()
    for section, split_key, ways, shots, queries in shapes:
        name = getattr(config.data, split_key)
        if name not in splits:
            raise ConfigError(f"data.{split_key}: '{name}' is not a split of {config.data.dataset}; "
                              f"its splits are {', '.join(splits)}")
        if ways < 1 or shots < 1 or queries < 0 or (name, ways, shots, queries) in checked:
            continue  # the generic range checks report bad numbers
        checked.add((name, ways, shots, queries))
        try:
            check_class_sizes(splits[name], ways, shots, queries, drop_hint)
        except TaskError as error:
            problems.append(f"{section}.ways/shots/queries: {error}")
    if problems:
        raise ConfigError("; ".join(problems))


def _described_spec(name: str, splits: dict[str, ClassSplit], channels: int, max_image_size: int,
                    modality: str, load: Callable[..., TensorStore], split: Callable[..., ClassSplit],
                    describe: Callable[[Any], Any] | None = None) -> Any:
    from innerloop.data import DatasetSpec

    counts = {key: split_.store.class_counts[split_.base_classes.unique()] for key, split_ in splits.items()}
    return DatasetSpec(name=name, splits=tuple(splits), base_classes={k: v.numel() for k, v in counts.items()},
                       examples_per_class=min(int(v.min()) for v in counts.values()), channels=channels,
                       max_image_size=max_image_size, load=load, split=split, modality=modality,
                       split_examples={k: int(v.min()) for k, v in counts.items()}, describe=describe)


def _counts_store(names: Sequence[str], counts: Sequence[int]) -> TensorStore:
    """A store without examples (one byte per example), for checking class splits and sizes."""
    counts_tensor = torch.tensor(list(counts), dtype=torch.int64)
    return TensorStore(images=torch.zeros(int(counts_tensor.sum()), 1, 1, dtype=torch.uint8),
                       class_offsets=torch.cumsum(counts_tensor, 0) - counts_tensor, class_counts=counts_tensor,
                       class_names=tuple(names), class_groups=tuple(names))


def _config_rotations(config: Any) -> tuple[int, ...] | None:
    """``data.rotations`` when they are multiples of 90 degrees (else None: the config's own
    validation names the bad value, and the episode checks wait for a valid one)."""
    rotations = tuple(config.data.rotations)
    return rotations if rotations and all(degrees % 90 == 0 for degrees in rotations) else None


def _require_root(config: Any, what: str) -> Path:
    if not config.data.root:
        raise ConfigError(f"data.root: {config.data.dataset} reads {what}; set data.root to it "
                          f"(e.g. --set data.root=/path/to/it)")
    return Path(config.data.root).expanduser()


def _describe_user_data(config: Any, names: Sequence[str], counts: Sequence[int], channels: int,
                        max_image_size: int, modality: str, load: Callable[[], TensorStore]) -> Any:
    """The spec of image-folder / csv-text data whose classes are ``names`` with ``counts``."""
    data = config.data
    try:
        listed = drop_small_classes(_counts_store(names, counts), data.min_examples)
        rotations = _config_rotations(config) if modality == "image" else (0,)
        splits = class_splits(listed, data.class_fractions, seed=data.split_seed, rotations=rotations or (0,))
    except DataError as error:
        raise ConfigError(f"data.class_fractions / data.min_examples: {error}") from None
    if rotations is not None:
        check_config_episodes(config, splits, "data.min_examples: {needed}")

    def load_store(root: str | Path | None = None, image_size: int = 0, download: bool = True) -> TensorStore:
        return load()

    def split_store(store: TensorStore, split: str, rotations: tuple[int, ...] = (0,)) -> ClassSplit:
        return class_splits(store, data.class_fractions, seed=data.split_seed, rotations=rotations)[split]

    return _described_spec(data.dataset, splits, channels, max_image_size, modality, load_store, split_store)


def describe_image_folder(config: Any) -> Any:
    """The :class:`~innerloop.data.DatasetSpec` of the folder ``config.data.root`` (listed, not
    decoded), after checking the episode shapes of ``config`` against its classes."""
    data = config.data
    listing = list_image_folder(_require_root(config, "a folder with one sub-folder of images per class"))
    return _describe_user_data(
        config, listing.class_names, listing.counts, 1 if data.grayscale else 3, MAX_IMAGE_SIZE, "image",
        lambda: image_folder(listing.root, data.image_size, data.grayscale, data.min_examples))


def describe_csv_text(config: Any) -> Any:
    """The :class:`~innerloop.data.DatasetSpec` of the CSV file ``config.data.root`` (read, not
    embedded), after checking the episode shapes of ``config`` against its classes."""
    from innerloop.nn.sentence_encoder import EMBEDDING_DIM

    data = config.data
    path = _require_root(config, "a CSV file of (text, label) rows")
    _, labels = read_text_csv(path, data.text_column, data.label_column)
    names = sorted(set(labels))
    counts = [0] * len(names)
    position = {name: index for index, name in enumerate(names)}
    for label in labels:
        counts[position[label]] += 1
    return _describe_user_data(
        config, names, counts, EMBEDDING_DIM, 0, "text",
        lambda: csv_texts(path, data.text_column, data.label_column, min_examples=data.min_examples))


def _needs_config(*args: Any, **kwargs: Any) -> TensorStore:
    raise DataError("image-folder and csv-text read the folder or file of data.root: load them through a "
                    "config (innerloop.data.dataset_spec(config)), or in Python with "
                    "innerloop.data.custom.image_folder / csv_texts")


def user_data_spec(name: str, modality: str, channels: int, describe: Callable[[Any], Any]) -> Any:
    """The registry entry of a kind of user data (its classes come from :func:`dataset_spec`)."""
    from innerloop.data import DatasetSpec

    return DatasetSpec(name=name, splits=USER_SPLITS, base_classes={}, examples_per_class=0, channels=channels,
                       max_image_size=MAX_IMAGE_SIZE if modality == "image" else 0, load=_needs_config,
                       split=_needs_config, modality=modality, describe=describe)


def check_user_data_keys(config: Any) -> None:
    """``data.grayscale``, ``text_column``, ... apply to image-folder / csv-text only."""
    for key in ("min_examples", "split_seed"):
        if getattr(config.data, key) < 0:
            raise ConfigError(f"data.{key} must be >= 0, got {getattr(config.data, key)}")
    defaults = type(config.data)()
    for key, datasets in USER_DATA_KEYS.items():
        if config.data.dataset not in datasets and getattr(config.data, key) != getattr(defaults, key):
            raise ConfigError(f"data.{key} applies to {' and '.join(datasets)} only; "
                              f"{config.data.dataset} does not use it (remove it)")


def register_dataset(name: str, store: TensorStore, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                     classes: Mapping[str, Sequence[str | int]] | None = None, seed: int = 0) -> Any:
    """Make ``store`` the dataset ``name`` of :data:`innerloop.data.DATASETS` (for this process),
    with the class splits of :func:`class_splits` (``fractions`` and ``seed``, or explicit
    ``classes``), so that configs (``data.dataset: name``) and the Trainer use it like a built-in
    dataset. uint8 images must be square, and ``data.image_size`` their side. A user dataset of
    the same name is replaced; a built-in one is not. Returns its spec."""
    from innerloop.data import DATASETS

    if name in DATASETS and name not in REGISTERED:
        raise DataError(f"'{name}' is a built-in dataset; register yours under another name")
    images = store.images
    if images.is_floating_point() and images.dim() == 2:
        modality, channels, side = "features", int(images.shape[1]), 0
    elif images.dim() == 4 or (images.dim() == 3 and not images.is_floating_point()):
        height, width = images.shape[-2:]
        if height != width:
            raise DataError(f"register_dataset serves square images (data.image_size is their side); "
                            f"these are {height}x{width}: resize or crop them first")
        modality, channels, side = "image", (1 if images.dim() == 3 else int(images.shape[1])), int(height)
    else:
        raise DataError(f"a store of {list(images.shape)} examples cannot be served; use in_memory() to build it")
    base = class_splits(store, fractions, classes, seed)

    def load(root: str | Path | None = None, image_size: int = 0, download: bool = True) -> TensorStore:
        return store

    def split(store_: TensorStore, split_name: str, rotations: tuple[int, ...] = (0,)) -> ClassSplit:
        if split_name not in base:
            raise DataError(f"'{split_name}' is not a split of {name}; its splits are {', '.join(base)}")
        return ClassSplit.with_rotations(store_, split_name, base[split_name].base_classes, tuple(rotations))

    def describe(config: Any) -> Any:
        data = config.data
        if modality == "image" and data.image_size != side:
            raise ConfigError(f"data.image_size must be {side} for {name} (its images are {side}x{side}), "
                              f"got {data.image_size}")
        if images.is_floating_point() and tuple(data.rotations) != (0,):
            raise ConfigError(f"data.rotations must be [0] for {name} (float tensors are served as they "
                              f"are; rotations apply to uint8 images), got {list(data.rotations)}")
        rotations = _config_rotations(config) if modality == "image" else (0,)
        if rotations is not None:
            splits = {key: ClassSplit.with_rotations(store, key, value.base_classes, rotations)
                      for key, value in base.items()}
            check_config_episodes(config, splits, "min_examples={needed} when you build the store")
        return spec

    spec = _described_spec(name, base, channels, side, modality, load, split, describe)
    DATASETS[name] = spec
    REGISTERED.add(name)
    return spec
