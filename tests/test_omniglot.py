"""The Omniglot loader on the real archives: integrity, preprocessing, splits, cache, bad input."""

from __future__ import annotations

import hashlib
import io
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from innerloop.data import omniglot
from innerloop.data.omniglot import (content_key, decode_archives, load_omniglot, locate_archives,
                                     omniglot_split, preprocess_drawing)
from innerloop.errors import DataError


def test_store_holds_every_drawing_of_every_character(omniglot_store):
    store = omniglot_store
    assert store.images.shape == (32460, 28, 28)
    assert store.images.dtype == torch.uint8
    assert store.num_classes == 1623
    assert bool((store.class_counts == 20).all())
    assert torch.equal(store.class_offsets, torch.arange(1623) * 20)
    assert len(set(store.class_groups)) == 50
    assert store.class_names[0] == "Arcadian/character01"
    assert store.class_names[708] == "Alphabet_of_the_Magi/character01"  # id 0709
    ink = store.images.float().mean() / 255
    assert 0.03 < float(ink) < 0.2  # strokes on an empty background, ink = 255


def test_store_rows_are_the_preprocessed_archive_drawings(omniglot_store, omniglot_root):
    with zipfile.ZipFile(omniglot_root / "omniglot" / "images_evaluation.zip") as archive:
        for character_id, drawer in ((965, 1), (1300, 7), (1623, 20)):
            member = next(n for n in archive.namelist() if n.endswith(f"/{character_id:04d}_{drawer:02d}.png"))
            expected = preprocess_drawing(archive.read(member), 28)
            row = (character_id - 1) * 20 + drawer - 1
            assert np.array_equal(omniglot_store.images[row].numpy(), expected)


def test_few_shot_split_is_1200_plus_423_characters_with_rotations(omniglot_store):
    splits = {name: omniglot_split(omniglot_store, name) for name in omniglot.SPLITS}
    assert {name: s.num_classes for name, s in splits.items()} == {
        "train": 4400, "val": 400, "trainval": 4800, "test": 1692,
        "background": 3856, "evaluation": 2636}
    characters = {name: set(s.base_classes.tolist()) for name, s in splits.items()}
    assert len(characters["trainval"]) == 1200 and len(characters["test"]) == 423
    assert characters["train"] | characters["val"] == characters["trainval"]
    assert not characters["train"] & characters["val"]
    assert not characters["trainval"] & characters["test"]
    assert not characters["background"] & characters["evaluation"]
    # The shuffle ignores alphabets: test characters come from nearly every alphabet.
    test_alphabets = {omniglot_store.class_groups[c] for c in characters["test"]}
    assert len(test_alphabets) >= 45


PINNED_TEST_SPLIT_DIGEST = "f19ba4455e5680fe"


def test_few_shot_split_is_pinned():
    # The documented split must never move: a hash of the test characters' ids.
    test_ids = sorted(c + 1 for c in omniglot.few_shot_character_order()[1200:])
    digest = hashlib.sha256(",".join(map(str, test_ids)).encode()).hexdigest()[:16]
    assert digest == PINNED_TEST_SPLIT_DIGEST


def test_second_load_comes_from_the_cache_in_well_under_a_second(omniglot_root, omniglot_store):
    start = time.perf_counter()
    again = load_omniglot(omniglot_root, download=False)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(again.images, omniglot_store.images)


def _rewrite(source: Path, target: Path, rename=lambda n: n, keep=lambda n: True,
             compression: int = zipfile.ZIP_STORED) -> None:
    written: set[str] = set()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", compression) as dst:
        for info in src.infolist():
            name = rename(info.filename)
            if keep(info.filename) and name and name not in written:
                dst.writestr(name, b"" if info.is_dir() else src.read(info))
                written.add(name)


@pytest.fixture()
def archive_copy(omniglot_root: Path, tmp_path: Path) -> Path:
    """A writable data root holding copies of both real archives."""
    folder = tmp_path / "root" / "omniglot"
    folder.mkdir(parents=True)
    for name in omniglot.ARCHIVE_NAMES:
        shutil.copyfile(omniglot_root / "omniglot" / f"{name}.zip", folder / f"{name}.zip")
    return tmp_path / "root"


def test_repacked_archives_are_accepted_and_share_the_cache_key(archive_copy, omniglot_root):
    original = locate_archives(omniglot_root, download=False)
    background = archive_copy / "omniglot" / "images_background.zip"
    repacked = background.with_name("repacked.zip")
    _rewrite(background, repacked, compression=zipfile.ZIP_DEFLATED)
    repacked.replace(background)
    copy = locate_archives(archive_copy, download=False)
    assert background.read_bytes() != original["images_background"].read_bytes()
    assert content_key(copy, 28) == content_key(original, 28)
    assert content_key(copy, 28) != content_key(copy, 32)


def test_missing_archive_names_the_files_and_the_folder(tmp_path):
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(DataError) as error:
        locate_archives(tmp_path, download=False)
    message = str(error.value)
    assert "images_background.zip" in message and "images_evaluation.zip" in message
    assert str(tmp_path / "omniglot") in message


def test_failed_download_names_the_files_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(omniglot, "OFFICIAL_URL", "file://" + str(tmp_path / "offline") + "/{name}.zip")
    with pytest.raises(DataError, match="download of .* failed") as error:
        locate_archives(tmp_path, download=True)
    assert "images_background.zip" in str(error.value)
    assert str(tmp_path / "omniglot") in str(error.value)
    assert not list((tmp_path / "omniglot").glob("*.zip"))


def test_download_with_wrong_checksum_is_rejected(tmp_path, omniglot_root, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in omniglot.ARCHIVE_NAMES:  # the shared copies are re-packed: their md5 differs
        shutil.copyfile(omniglot_root / "omniglot" / f"{name}.zip", mirror / f"{name}.zip")
    monkeypatch.setattr(omniglot, "OFFICIAL_URL", "file://" + str(mirror) + "/{name}.zip")
    with pytest.raises(DataError, match="md5"):
        locate_archives(tmp_path / "root", download=True)
    assert not (tmp_path / "root" / "omniglot" / "images_background.zip").exists()


def test_truncated_archive_is_rejected(archive_copy):
    path = archive_copy / "omniglot" / "images_background.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated"):
        decode_archives(locate_archives(archive_copy, download=False), workers=1)


def test_archive_with_a_missing_drawing_is_rejected(archive_copy):
    path = archive_copy / "omniglot" / "images_evaluation.zip"
    trimmed = path.with_name("trimmed.zip")
    _rewrite(path, trimmed, keep=lambda n: not n.endswith("/1623_20.png"))
    trimmed.replace(path)
    with pytest.raises(DataError, match=r"incomplete: 1 characters without drawers 01..20 \(first: id 1623 has 19"):
        decode_archives(locate_archives(archive_copy, download=False), workers=1)


def test_archive_with_a_drawing_in_a_second_folder_is_rejected(archive_copy):
    path = archive_copy / "omniglot" / "images_background.zip"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("images_background/Korean/character06/0647_03.png",
                         archive.read("images_background/Korean/character05/0647_03.png"))
    with pytest.raises(DataError, match=r"1 character ids in more than one folder \(first: id 647\)"):
        decode_archives(locate_archives(archive_copy, download=False), workers=1)


def test_archive_with_two_characters_in_one_folder_is_rejected(archive_copy):
    path = archive_copy / "omniglot" / "images_background.zip"
    merged = path.with_name("merged.zip")
    _rewrite(path, merged, rename=lambda n: n.replace("Korean/character06/", "Korean/character05/"))
    merged.replace(path)
    with pytest.raises(DataError, match="1 character folders holding more than one character id"):
        decode_archives(locate_archives(archive_copy, download=False), workers=1)


def test_archive_with_the_wrong_layout_is_rejected(archive_copy):
    path = archive_copy / "omniglot" / "images_background.zip"
    flat = path.with_name("flat.zip")
    _rewrite(path, flat, rename=lambda n: n.replace("images_background/", "", 1))
    flat.replace(path)
    with pytest.raises(DataError, match="official Omniglot layout"):
        decode_archives(locate_archives(archive_copy, download=False), workers=1)


def test_archive_with_a_corrupt_member_is_rejected(archive_copy):
    path = archive_copy / "omniglot" / "images_background.zip"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("images_background/Korean/character05/0647_03.png")
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[data_start + 40] ^= 0xFF  # the zip is STORED: this flips one byte of the PNG
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="0647_03.png fails its CRC check"):
        decode_archives(locate_archives(archive_copy, download=False), workers=1)
