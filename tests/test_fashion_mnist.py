"""Fashion-MNIST's IDX reader and class grouping on small IDX files written here (byte-exact in the
official format), and cross-domain evaluation: an Omniglot run scored on Fashion-MNIST tasks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from innerloop.cli import main
from innerloop.config import config_from_dict
from innerloop.data import DATASETS, fashion_mnist
from innerloop.errors import ConfigError, DataError

RECIPE = str(Path(__file__).resolve().parents[1] / "configs" / "omniglot" / "protonet-5w1s.yaml")
PER_CLASS = 4  # small stand-ins: train file 3 per class, t10k 1 per class


def idx_bytes(values: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 0, 0, type 0x08, dims, big-endian sizes, values."""
    header = bytes([0, 0, 0x08, values.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in values.shape)
    return header + values.astype(np.uint8).tobytes()


def write_small_fashion_mnist(folder: Path, labels_by_part: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Four gzipped IDX files; image i of a part is filled with the value 10 * label + order."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, labels in labels_by_part.items():
        image_file, label_file, _ = fashion_mnist.FILES[part]
        label_array = np.array(labels, dtype=np.uint8)
        images = np.stack([np.full((28, 28), 10 * label + index % 10, np.uint8) for index, label in enumerate(labels)])
        (folder / image_file).write_bytes(gzip.compress(idx_bytes(images)))
        (folder / label_file).write_bytes(gzip.compress(idx_bytes(label_array)))
        written[part] = images
    return written


@pytest.fixture()
def small_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "FILES", {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 30),
        "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10)})
    monkeypatch.setattr(fashion_mnist, "IMAGES_PER_CLASS", PER_CLASS)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", tmp_path / "not-installed")
    train_labels = [label for _ in range(3) for label in reversed(range(10))]  # interleaved classes
    t10k_labels = list(range(10))
    write_small_fashion_mnist(tmp_path / "fashion-mnist", {"train": train_labels, "t10k": t10k_labels})
    return tmp_path


def test_idx_files_are_read_exactly_gzipped_or_not(tmp_path):
    values = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    (tmp_path / "a.idx").write_bytes(idx_bytes(values))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(values)))
    assert np.array_equal(fashion_mnist.read_idx(tmp_path / "a.idx"), values)
    assert np.array_equal(fashion_mnist.read_idx(tmp_path / "a.idx.gz"), values)
    (tmp_path / "short.idx").write_bytes(idx_bytes(values)[:-1])
    with pytest.raises(DataError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "short.idx")
    (tmp_path / "float.idx").write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0\0\0\0")
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        fashion_mnist.read_idx(tmp_path / "float.idx")


def test_both_files_pooled_and_grouped_by_class_in_file_order(small_files):
    store = fashion_mnist.decode_files(fashion_mnist.locate_files(small_files, download=False))
    assert store.class_names == fashion_mnist.CLASS_NAMES and store.num_classes == 10
    assert store.class_counts.tolist() == [PER_CLASS] * 10
    assert store.class_offsets.tolist() == [PER_CLASS * c for c in range(10)]
    # class c: its three training images (file positions 9 - c, 19 - c, 29 - c), then its test image
    for label in range(10):
        block = store.images[PER_CLASS * label:PER_CLASS * (label + 1), 0, 0].tolist()
        assert block == [10 * label + (9 - label) % 10] * 3 + [10 * label + label]
    split = DATASETS["fashion-mnist"].split(store, "test")
    assert split.num_classes == 10
    with pytest.raises(DataError, match="one split, 'test'"):
        DATASETS["fashion-mnist"].split(store, "train")


def test_wrong_class_counts_and_missing_files_are_explained(small_files, tmp_path, monkeypatch):
    write_small_fashion_mnist(small_files / "fashion-mnist", {"train": [0] * 30, "t10k": list(range(10))})
    with pytest.raises(DataError, match=r"4 images of each of 10 classes; these files hold \[31, 1,"):
        fashion_mnist.decode_files(fashion_mnist.locate_files(small_files, download=False))
    with pytest.raises(DataError, match="not found and download is off") as error:
        fashion_mnist.locate_files(tmp_path / "empty", download=False)
    assert "apt install dataset-fashion-mnist" in str(error.value)
    assert str(tmp_path / "empty" / "fashion-mnist") in str(error.value)
    monkeypatch.setattr(fashion_mnist, "OFFICIAL_URL", "file://" + str(tmp_path / "offline") + "/{name}")
    with pytest.raises(DataError, match="download of .* failed"):
        fashion_mnist.locate_files(tmp_path / "empty", download=True)
    assert not list((tmp_path / "empty" / "fashion-mnist").glob("*ubyte*"))


def test_download_puts_the_files_in_the_data_root(small_files, tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "OFFICIAL_URL", "file://" + str(small_files / "fashion-mnist") + "/{name}")
    paths = fashion_mnist.locate_files(tmp_path / "fresh", download=True)
    assert all(path.parent == tmp_path / "fresh" / "fashion-mnist" for path in paths.values())
    assert fashion_mnist.decode_files(paths).class_counts.tolist() == [PER_CLASS] * 10


def test_cross_domain_evaluation_of_an_omniglot_run(small_files, tmp_path, omniglot_root, monkeypatch):
    monkeypatch.setenv("INNERLOOP_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    settings = ["num_threads=1", "train.steps=4", "train.ways=5", "train.val_every=4", "train.val_episodes=10",
                "train.log_every=2", "eval.episodes=10"]
    assert main(["train", RECIPE, "--run-dir", str(run_dir), "--data-root", str(omniglot_root), "--quiet",
                 "--no-eval", *[p for s in settings for p in ("--set", s)]]) == 0
    # the Omniglot run is scored on Fashion-MNIST (the small files): 5-way 1-shot, 3 queries
    assert main(["eval", str(run_dir), "--dataset", "fashion-mnist", "--queries", "3", "--episodes", "12",
                 "--data-root", str(small_files)]) == 0
    report = json.loads((run_dir / "eval-fashion-mnist-test-5w1s3q-best-12ep-seed0.json").read_text())
    assert report["dataset"] == "fashion-mnist" and report["trained_on"] == "omniglot"
    assert report["episodes"] == 12 and 0 <= report["results"][0]["mean"] <= 1
    markdown = (run_dir / "eval-fashion-mnist-test-5w1s3q-best-12ep-seed0.md").read_text()
    assert "on fashion-mnist (test, meta-trained on omniglot)" in markdown


def test_cross_domain_settings_are_checked():
    base = {"data": {"dataset": "omniglot"}, "model": {"algorithm": "protonet"}}
    config = config_from_dict({**base, "eval": {"dataset": "fashion-mnist", "ways": 5}})
    assert config.eval.dataset == "fashion-mnist"
    with pytest.raises(ConfigError, match="eval.ways/shots/queries on eval.dataset fashion-mnist"):
        config_from_dict({**base, "eval": {"dataset": "fashion-mnist", "ways": 20}})
    with pytest.raises(ConfigError, match="holds text classification data"):
        config_from_dict({**base, "eval": {"dataset": "banking77"}})
    with pytest.raises(ConfigError, match="eval.dataset"):
        config_from_dict({**base, "eval": {"dataset": "mnist"}})
    with pytest.raises(ConfigError, match="image-folder is your own data"):
        config_from_dict({**base, "eval": {"dataset": "image-folder"}})
    # 30 queries per class fit Fashion-MNIST, not Omniglot's 20 drawings: only eval.dataset's test split counts
    assert config_from_dict({**base, "eval": {"dataset": "fashion-mnist", "shots": 1, "queries": 15}})
    with pytest.raises(ConfigError, match="split the same corpus differently"):
        config_from_dict({"data": {"dataset": "clinc150", "rotations": [0]},
                          "model": {"algorithm": "protonet", "backbone": "mlp"},
                          "eval": {"dataset": "clinc150-cross-domain"}})
    with pytest.raises(ConfigError, match="eval.dataset"):  # regression runs are checked too
        config_from_dict({"data": {"dataset": "sinusoid"}, "model": {"algorithm": "maml", "backbone": "mlp"},
                          "eval": {"dataset": "no-such-data"}})
    with pytest.raises(ConfigError, match="28 pixels wide"):
        config_from_dict({**base, "data": {"dataset": "omniglot", "image_size": 84},
                          "eval": {"dataset": "fashion-mnist"}})
