"""Shared fixtures. Tests run on one thread so that they behave the same under load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from innerloop.data.store import ClassSplit, TensorStore

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# Decoded stores go to the repository's .cache/ (git-ignored), not the user's home.
os.environ.setdefault("INNERLOOP_CACHE", str(REPO / ".cache" / "stores"))


def _omniglot_root() -> Path:
    candidates = [os.environ.get("INNERLOOP_DATA"), str(REPO.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "omniglot" / "images_background.zip").is_file():
            return Path(candidate)
    pytest.fail("The real Omniglot archives are required: set INNERLOOP_DATA to a folder whose "
                "omniglot/ holds images_background.zip and images_evaluation.zip "
                f"(looked in {[c for c in candidates if c]}).")


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    return _omniglot_root()


@pytest.fixture(scope="session")
def intent_data_root() -> Path:
    """The folder holding clinc150/, banking77/ and hwu64/ (the real files; a failure, not a skip)."""
    candidates = [os.environ.get("INNERLOOP_DATA"), str(REPO.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name / "MANIFEST.md").is_file()
                             for name in ("clinc150", "banking77", "hwu64")):
            return Path(candidate)
    pytest.fail("The real intent datasets are required: set INNERLOOP_DATA to a folder holding "
                f"clinc150/, banking77/ and hwu64/ (see their MANIFEST.md; looked in {[c for c in candidates if c]}).")


@pytest.fixture(scope="session")
def omniglot_store(omniglot_root: Path) -> TensorStore:
    from innerloop.data.omniglot import load_omniglot

    return load_omniglot(omniglot_root, download=False)


def make_coded_store(counts: list[int], side: int = 4) -> TensorStore:
    """A synthetic store whose pixel (0, 0) is the class and pixel (0, 1) the example number."""
    images = []
    for class_index, count in enumerate(counts):
        block = torch.zeros(count, side, side, dtype=torch.uint8)
        block[:, 0, 0] = class_index
        block[:, 0, 1] = torch.arange(count, dtype=torch.uint8)
        block[:, side - 1, side - 1] = 200  # an asymmetric mark that reveals rotations
        images.append(block)
    counts_tensor = torch.tensor(counts, dtype=torch.int64)
    return TensorStore(
        images=torch.cat(images),
        class_offsets=torch.cumsum(counts_tensor, 0) - counts_tensor,
        class_counts=counts_tensor,
        class_names=tuple(f"class{c}" for c in range(len(counts))),
        class_groups=tuple("group" for _ in counts),
    )


@pytest.fixture()
def coded_split() -> ClassSplit:
    store = make_coded_store([20] * 50)
    return ClassSplit.with_rotations(store, "coded", torch.arange(50))
