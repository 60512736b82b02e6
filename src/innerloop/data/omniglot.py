"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015) from its official archives.

The loader reads ``images_background.zip`` and ``images_evaluation.zip`` in the official internal
layout (``images_background/<Alphabet>/characterNN/IIII_DD.png``, ``IIII`` the global character
id 1..1623, ``DD`` the drawer 01..20) from ``<data root>/omniglot/``. Missing archives are
downloaded from the official source; when that is impossible the loader stops with a message
naming the files and the folder to put them in.

Archives are accepted by *content*, not by checksum: the zip must pass its CRC check and hold
exactly the expected alphabets, characters and 20 drawings per character. A re-packed copy with
the same images is therefore accepted (and even shares the decoded cache, whose key is built from
the member names and CRC-32s, not from the zip bytes).

Preprocessing: each 105x105 one-bit drawing is inverted (ink = 255, background = 0), resized to
``image_size`` x ``image_size`` with Lanczos antialiasing and stored as ``uint8``. Class ``c`` of
the store is the character with global id ``c + 1``.

Splits (:func:`omniglot_split`):

* few-shot split (Vinyals et al. 2016, Snell et al. 2017): the 1623 characters are ordered by
  ``sha256(f"{SPLIT_SEED}:{character_id}")`` with ``SPLIT_SEED = 0`` (a portable, documented
  shuffle that ignores alphabets); the first 1200 form ``trainval`` and the remaining 423 ``test``.
  ``trainval`` is cut into ``train`` (first 1100) and ``val`` (last 100), so that the
  best checkpoint is chosen on characters never trained on. With the four rotations as new
  classes, ``trainval`` has 4800 classes, ``train`` 4400, ``val`` 400 and ``test`` 1692.
* alphabet split (Lake et al. 2015): ``background`` (30 alphabets, 964 characters) and
  ``evaluation`` (20 alphabets, 659 characters).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from innerloop.data.download import DownloadFailed, fetch
from innerloop.data.paths import resolve_data_root, store_cache_dir
from innerloop.data.store import ClassSplit, TensorStore, cached_store
from innerloop.errors import DataError

ARCHIVE_NAMES = ("images_background", "images_evaluation")
OFFICIAL_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
OFFICIAL_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
EXPECTED_ALPHABETS = {"images_background": 30, "images_evaluation": 20}
EXPECTED_CHARACTERS = {"images_background": 964, "images_evaluation": 659}
TOTAL_CHARACTERS = 1623
DRAWINGS_PER_CHARACTER = 20
SPLIT_SEED = 0
TRAINVAL_CHARACTERS = 1200
VAL_CHARACTERS = 100
FEW_SHOT_SPLITS = ("train", "val", "trainval", "test")
ALPHABET_SPLITS = ("background", "evaluation")
SPLITS = FEW_SHOT_SPLITS + ALPHABET_SPLITS
PREPROCESSING_VERSION = 1

_MEMBER = re.compile(r"^(?P<top>[^/]+)/(?P<alphabet>[^/]+)/character(?P<number>\d+)/"
                     r"(?P<id>\d{4})_(?P<drawer>\d{2})\.png$")


def _missing_message(folder: Path, missing: Sequence[str], reason: str) -> str:
    files = ", ".join(f"{name}.zip" for name in missing)
    return (
        f"Omniglot is not available: {reason}\n"
        f"Put the official archives {files} in {folder}/ "
        f"(from {OFFICIAL_URL.format(name='<name>')}), or point --data-root / INNERLOOP_DATA "
        f"at a folder whose omniglot/ sub-folder holds them."
    )


def download_archive(name: str, folder: Path, url: str | None = None) -> Path:
    """Download one official archive into ``folder``, checking its md5; DataError on failure."""
    try:
        return fetch(url or OFFICIAL_URL.format(name=name), folder / f"{name}.zip", OFFICIAL_MD5[name])
    except DownloadFailed as error:
        raise DataError(_missing_message(folder, [name], str(error))) from None


def locate_archives(root: str | Path | None = None, download: bool = True) -> dict[str, Path]:
    """Return the paths of both archives under ``<root>/omniglot``, downloading missing ones."""
    folder = resolve_data_root(root) / "omniglot"
    paths = {name: folder / f"{name}.zip" for name in ARCHIVE_NAMES}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing and not download:
        raise DataError(_missing_message(folder, missing, "archives not found and download is off."))
    for name in missing:
        download_archive(name, folder)
    return paths


_background = EXPECTED_CHARACTERS["images_background"]
ID_RANGES = {"images_background": (1, _background),
             "images_evaluation": (_background + 1, TOTAL_CHARACTERS)}


def _parse_members(path: Path, archive: zipfile.ZipFile, name: str) -> list[tuple[int, str, str]]:
    """Check the layout and counts of one archive; return ``(character_id, alphabet, member)``."""
    entries: list[tuple[int, str, str]] = []
    drawers: dict[int, set[int]] = {}
    folders: dict[int, set[str]] = {}
    alphabets: set[str] = set()
    for member in archive.namelist():
        if member.endswith("/"):
            continue
        match = _MEMBER.match(member)
        if match is None or match["top"] != name:
            raise DataError(
                f"{path} does not have the official Omniglot layout: unexpected member '{member}'. "
                f"Expected '{name}/<Alphabet>/characterNN/IIII_DD.png'. Use the official archive.")
        character_id = int(match["id"])
        drawers.setdefault(character_id, set()).add(int(match["drawer"]))
        folders.setdefault(character_id, set()).add(member.rsplit("/", 1)[0])
        alphabets.add(match["alphabet"])
        entries.append((character_id, match["alphabet"], member))
    problems = []
    if len(alphabets) != EXPECTED_ALPHABETS[name]:
        problems.append(f"{len(alphabets)} alphabets (expected {EXPECTED_ALPHABETS[name]})")
    if len(drawers) != EXPECTED_CHARACTERS[name]:
        problems.append(f"{len(drawers)} characters (expected {EXPECTED_CHARACTERS[name]})")
    low, high = ID_RANGES[name]
    outside = sorted(cid for cid in drawers if not low <= cid <= high)
    if outside:
        problems.append(f"character ids outside {low}..{high} (first: {outside[0]})")
    all_drawers = set(range(1, DRAWINGS_PER_CHARACTER + 1))
    incomplete = sorted(cid for cid, d in drawers.items() if d != all_drawers)
    if incomplete:
        problems.append(f"{len(incomplete)} characters without drawers 01..{DRAWINGS_PER_CHARACTER:02d} "
                        f"(first: id {incomplete[0]} has {len(drawers[incomplete[0]])})")
    scattered = sorted(cid for cid, f in folders.items() if len(f) > 1)
    if scattered:
        problems.append(f"{len(scattered)} character ids in more than one folder (first: id {scattered[0]})")
    shared = len(drawers) - len(set().union(*folders.values()))
    if shared > 0:
        problems.append(f"{shared} character folders holding more than one character id")
    expected_entries = EXPECTED_CHARACTERS[name] * DRAWINGS_PER_CHARACTER
    if not problems and len(entries) != expected_entries:
        problems.append(f"{len(entries)} drawings (expected {expected_entries})")
    if problems:
        raise DataError(f"{path} is incomplete: " + "; ".join(problems)
                        + ". Replace it with the official archive.")
    return entries


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path} is not a readable zip archive ({error}); it may be truncated. "
                        f"Delete it and download the official archive again.") from None


def content_key(paths: dict[str, Path], image_size: int) -> str:
    """Key of the decoded cache: member names, CRC-32s and sizes, plus the preprocessing."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"preprocessing": PREPROCESSING_VERSION, "size": image_size}).encode())
    for name in ARCHIVE_NAMES:
        with _open_archive(paths[name]) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    digest.update(f"{info.filename}:{info.CRC:08x}:{info.file_size}\n".encode())
    return digest.hexdigest()[:24]


def preprocess_drawing(png_bytes: bytes, image_size: int) -> np.ndarray:
    """One drawing → ``uint8 [image_size, image_size]``, ink 255, Lanczos-antialiased."""
    with Image.open(io.BytesIO(png_bytes)) as image:
        ink = Image.fromarray(np.where(np.asarray(image.convert("L")) < 128, 255, 0).astype(np.uint8))
    resized = ink.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def _decode_chunk(job: tuple[str, list[str], int]) -> np.ndarray:
    path, members, image_size = job
    with zipfile.ZipFile(path) as archive:
        return np.stack([preprocess_drawing(archive.read(m), image_size) for m in members])


def decode_archives(paths: dict[str, Path], image_size: int = 28, workers: int = 2) -> TensorStore:
    """Validate both archives by content and decode every drawing into a :class:`TensorStore`."""
    records: list[tuple[int, str, str, Path]] = []  # (character id, alphabet, member, archive)
    for name in ARCHIVE_NAMES:
        with _open_archive(paths[name]) as archive:
            entries = _parse_members(paths[name], archive, name)
            try:
                bad_member = archive.testzip()
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                bad_member = f"<unreadable: {error}>"
            if bad_member is not None:
                raise DataError(f"{paths[name]} is corrupt (member {bad_member} fails its CRC check). "
                                f"Delete it and download the official archive again.")
        records.extend((cid, alphabet, member, paths[name]) for cid, alphabet, member in entries)
    ids = sorted({record[0] for record in records})
    if ids != list(range(1, TOTAL_CHARACTERS + 1)):
        raise DataError(f"Omniglot character ids must be 1..{TOTAL_CHARACTERS} across both archives; "
                        f"found {len(ids)} distinct ids. Use the official archives.")
    records.sort(key=lambda r: r[2].rsplit("/", 1)[-1])  # IIII_DD.png: by character, then drawer
    jobs: list[tuple[str, list[str], int]] = []  # up to 1000 drawings of one archive, in order
    for archive_path, group in itertools.groupby(records, key=lambda record: record[3]):
        members = [record[2] for record in group]
        jobs.extend((str(archive_path), members[i:i + 1000], image_size)
                    for i in range(0, len(members), 1000))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            arrays = list(pool.map(_decode_chunk, jobs))
    else:
        arrays = [_decode_chunk(job) for job in jobs]
    images = torch.from_numpy(np.concatenate(arrays))
    names: dict[int, tuple[str, str]] = {}
    for cid, alphabet, member, _ in records:
        names[cid] = (f"{alphabet}/{member.split('/')[2]}", alphabet)
    counts = torch.full((TOTAL_CHARACTERS,), DRAWINGS_PER_CHARACTER, dtype=torch.int64)
    return TensorStore(
        images=images,
        class_offsets=torch.arange(TOTAL_CHARACTERS, dtype=torch.int64) * DRAWINGS_PER_CHARACTER,
        class_counts=counts,
        class_names=tuple(names[cid][0] for cid in ids),
        class_groups=tuple(names[cid][1] for cid in ids),
    )


def load_omniglot(root: str | Path | None = None, image_size: int = 28,
                  download: bool = True) -> TensorStore:
    """Omniglot as a :class:`TensorStore`, decoded once and cached by content and preprocessing."""
    if image_size < 1 or image_size > 105:
        raise DataError(f"image_size must be in 1..105 (the drawings are 105x105), got {image_size}")
    paths = locate_archives(root, download=download)
    return cached_store(store_cache_dir() / f"omniglot-{content_key(paths, image_size)}.pt",
                        lambda: decode_archives(paths, image_size=image_size))


def few_shot_character_order(seed: int = SPLIT_SEED) -> list[int]:
    """Store class indices (character id − 1) in the portable shuffled order of the split."""
    def rank(class_index: int) -> str:
        return hashlib.sha256(f"{seed}:{class_index + 1}".encode()).hexdigest()
    return sorted(range(TOTAL_CHARACTERS), key=rank)


def omniglot_split(store: TensorStore, split: str,
                   rotations: tuple[int, ...] = (0, 90, 180, 270)) -> ClassSplit:
    """The classes of one split (see the module docstring), each rotation a new class."""
    if split in FEW_SHOT_SPLITS:
        order = few_shot_character_order()
        selected = {
            "train": order[:TRAINVAL_CHARACTERS - VAL_CHARACTERS],
            "val": order[TRAINVAL_CHARACTERS - VAL_CHARACTERS:TRAINVAL_CHARACTERS],
            "trainval": order[:TRAINVAL_CHARACTERS],
            "test": order[TRAINVAL_CHARACTERS:],
        }[split]
        base = torch.tensor(sorted(selected), dtype=torch.int64)
    elif split in ALPHABET_SPLITS:
        low, high = ID_RANGES[f"images_{split}"]
        base = torch.arange(low - 1, high)  # class index = character id - 1
    else:
        raise DataError(f"unknown Omniglot split '{split}'; choose one of {', '.join(SPLITS)}")
    return ClassSplit.with_rotations(store, split, base, tuple(rotations))
