"""Your own data (a folder of images, a CSV of texts, tensors) as task distributions, and your own
nn.Module as the backbone of every method that takes one."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from innerloop.algorithms import ALGORITHMS
from innerloop.build import build_learner, build_sampler, load_splits
from innerloop.cli.main import main
from innerloop.config import config_from_dict
from innerloop.data import DATASETS, custom, dataset_spec
from innerloop.data.custom import (check_class_sizes, class_splits, csv_texts, image_folder, in_memory,
                                   register_dataset)
from innerloop.data.intents import intent_class_split
from innerloop.errors import ConfigError, DataError, InnerloopError, TaskError
from innerloop.evaluate.run import evaluate_run
from innerloop.nn.custom_backbone import NO_BACKBONE, STRUCTURED_BACKBONES, prepare_backbone
from innerloop.nn.stepwise_batch_norm import StepwiseTaskBatchNorm
from innerloop.nn.task_batch_norm import TaskBatchNorm
from innerloop.tasks import EpisodeSampler
from innerloop.train.trainer import Trainer
from tests.test_readme import readme_code

GRAY = {"apple": 20, "banana": 60, "cherry": 100, "date": 140, "elder": 180, "fig": 220}  # class → pixel value


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decoded stores and embeddings of each test go to its own folder."""
    monkeypatch.setenv("INNERLOOP_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def registry():
    """Datasets that a test registers are removed afterwards."""
    before = set(DATASETS)
    yield
    for name in set(DATASETS) - before:
        DATASETS.pop(name)
        custom.REGISTERED.discard(name)


def write_image_folder(root, counts: dict[str, int]):
    """One sub-folder per class; image ``i`` of class ``c`` is a constant ``GRAY[c]`` image of its
    own size, saved as RGB PNG, grayscale PNG or BMP in turn."""
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            size = (20 + 3 * index, 24 + index)  # mixed sizes and aspect ratios
            value = GRAY[name]
            if index % 3 == 0:
                Image.new("RGB", size, (value, value, value)).save(root / name / f"{index}.png")
            elif index % 3 == 1:
                Image.new("L", size, value).save(root / name / f"{index}.png")
            else:
                Image.new("RGB", size, (value, value, value)).save(root / name / f"{index}.bmp")
    return root


def image_folder_config(root, **sections):
    values = {"data": {"dataset": "image-folder", "root": str(root), "image_size": 16, "grayscale": True,
                       "rotations": [0], "class_fractions": [0.5, 0.17]},
              "model": {"algorithm": "protonet", "hidden_channels": 8},
              "train": {"ways": 2, "shots": 1, "queries": 2}, "eval": {"ways": 1, "shots": 1, "queries": 2}}
    for section, options in sections.items():
        values[section] = {**values.get(section, {}), **options}
    return config_from_dict(values)


def test_image_folder_gives_episodes_of_its_classes_decoded_once_and_cached(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "images", {name: 5 for name in GRAY})
    store = image_folder(root, image_size=16, grayscale=True)
    assert store.class_names == tuple(GRAY) and store.class_counts.tolist() == [5] * 6
    assert store.images.shape == (30, 16, 16) and store.images.dtype == torch.uint8
    splits = class_splits(store, fractions=(0.5, 0.17), seed=0)
    sampler = EpisodeSampler(splits["train"], ways=3, shots=2, queries=3)
    episodes = sampler.sample(4, torch.Generator().manual_seed(0))
    assert episodes.support_x.shape == (4, 6, 1, 16, 16) and episodes.query_x.shape == (4, 9, 1, 16, 16)
    assert episodes.support_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    for task in range(4):
        for label in range(3):
            name = store.class_names[int(splits["train"].base_classes[episodes.class_ids[task, label]])]
            for images, labels in ((episodes.support_x, episodes.support_y), (episodes.query_x, episodes.query_y)):
                pixels = images[task][labels[task] == label]
                assert (pixels - GRAY[name] / 255).abs().max() <= 1.5 / 255, name  # resized, still constant
    rgb = image_folder(root, image_size=20)
    assert rgb.images.shape == (30, 3, 20, 20)
    assert EpisodeSampler(class_splits(rgb)["train"], 2, 1, 1).sample(1, torch.Generator()).support_x.shape == (1, 2, 3, 20, 20)
    assert len(list((tmp_path / "cache").glob("image-folder-*.pt"))) == 2  # one per preprocessing

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(custom, "decode_image", no_decoding)
    assert torch.equal(image_folder(root, image_size=16, grayscale=True).images, store.images)  # from the cache
    Image.new("L", (30, 30), 7).save(root / "fig" / "0.png")  # a changed file is decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        image_folder(root, image_size=16, grayscale=True)


def test_class_splits_are_disjoint_seeded_and_follow_the_intent_rule():
    store = in_memory(torch.zeros(40, 3), torch.arange(20).repeat(2))
    splits = class_splits(store, fractions=(0.5, 0.2), seed=0)
    members = {name: set(split.base_classes.tolist()) for name, split in splits.items()}
    assert [len(members[name]) for name in ("train", "val", "test")] == [10, 4, 6]
    assert members["train"] | members["val"] | members["test"] == set(range(20))
    assert not (members["train"] & members["val"] or members["train"] & members["test"] or members["val"] & members["test"])
    for name in ("train", "val", "test"):  # the intent datasets' rule, with their fractions and seed
        assert torch.equal(splits[name].base_classes, intent_class_split(store, name).base_classes)
    assert torch.equal(class_splits(store, seed=0)["train"].base_classes, splits["train"].base_classes)
    assert not torch.equal(class_splits(store, seed=1)["train"].base_classes, splits["train"].base_classes)
    explicit = class_splits(store, classes={"train": ["0", "1", 2], "test": ["19"]})
    assert explicit["train"].base_classes.tolist() == [0, 1, 2] and list(explicit) == ["train", "test"]
    with pytest.raises(DataError, match="class '1' is listed in split 'train' and 'test'"):
        class_splits(store, classes={"train": ["0", "1"], "test": ["1"]})
    with pytest.raises(DataError, match="lists the class 'zebra', which is not in the data"):
        class_splits(store, classes={"train": ["zebra"]})
    with pytest.raises(DataError, match="give 0 train, 1 val and 2 test classes"):
        class_splits(in_memory(torch.zeros(3, 2), [0, 1, 2]), fractions=(0.1, 0.2))


def test_too_small_classes_are_named_with_what_to_do_and_min_examples_drops_them(tmp_path):
    root = write_image_folder(tmp_path / "images", {"apple": 6, "banana": 2, "cherry": 6, "date": 4,
                                                    "elder": 6, "fig": 6})
    with pytest.raises(ConfigError) as error:
        image_folder_config(root, train={"queries": 4})  # 1 + 4 = 5 examples per class
    message = str(error.value)
    assert "split 'train': 1 class(es) have fewer than shots + queries = 1 + 4 = 5 examples: 'date' (4). Lower " \
           "shots + queries to at most 4, or drop the small classes with data.min_examples: 5" in message
    assert "; eval.ways/shots/queries: split 'test': 1 class(es) have fewer than shots + queries = 1 + 2 = 3 " \
           "examples: 'banana' (2)" in message  # every split's small classes in one message
    config = image_folder_config(root, train={"queries": 4}, data={"min_examples": 5})
    splits = load_splits(config, None, ["train", "val", "test"])
    kept = {name for split in splits.values() for name in (split.store.class_names[c] for c in split.base_classes.tolist())}
    assert kept == {"apple", "cherry", "elder", "fig"} and splits["train"].store.images.shape == (24, 16, 16)
    with pytest.raises(ConfigError, match="3-way episodes need 3 classes but split 'train' has 2; lower the ways"):
        image_folder_config(root, train={"ways": 3}, data={"min_examples": 5})
    store = in_memory(torch.zeros(9, 2), [0, 0, 0, 1, 1, 1, 1, 2, 2], class_names=["a", "b", "c"])
    with pytest.raises(TaskError, match=r"'c' \(2\), 'a' \(3\). Lower shots \+ queries to at most 2, or drop "
                                        r"the small classes with min_examples=4"):
        check_class_sizes(class_splits(store, classes={"train": [0, 1, 2]})["train"], 2, 1, 3)


def test_unreadable_files_and_bad_layouts_are_named(tmp_path):
    root = write_image_folder(tmp_path / "images", {"apple": 3, "banana": 3})
    (root / "apple" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"apple/notes.txt is not an image file \(accepted: .png"):
        image_folder(root)
    (root / "apple" / "notes.txt").unlink()
    (root / "apple" / ".DS_Store").write_bytes(b"\0")  # hidden files are skipped
    (root / "banana" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"banana/broken.png cannot be read as an image .*replace it or remove it"):
        image_folder(root)
    (root / "banana" / "broken.png").unlink()
    (root / "cherry").mkdir()
    with pytest.raises(DataError, match="class folder\\(s\\) without images: cherry"):
        image_folder(root)
    (root / "cherry").rmdir()
    assert image_folder(root, image_size=8).num_classes == 2
    with pytest.raises(DataError, match="holds no class sub-folders"):
        image_folder(root / "apple")
    with pytest.raises(DataError, match="is not a folder"):
        image_folder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="data.root: image-folder reads a folder"):
        config_from_dict({"data": {"dataset": "image-folder", "rotations": [0]}})


class LetterCounts:
    """A fake sentence encoder: a text's length and its counts of 'a' and 'e'."""

    def encode(self, texts):
        return torch.tensor([[len(text), text.count("a"), text.count("e")] for text in texts], dtype=torch.float32)


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8-sig") as file:  # with a byte-order mark, as Excel writes
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_texts_become_feature_stores_grouped_by_label(tmp_path):
    rows = [("a banana, please", "food"), ("weather in\nparis", " weather"), ("pay my bill", "bank"),
            ("an apple", "food"), ("is it raining", "weather"), ("transfer money", "bank")]
    path = write_csv(tmp_path / "texts.csv", rows)
    store = csv_texts(path, encoder=LetterCounts())
    assert store.class_names == ("bank", "food", "weather") and store.class_counts.tolist() == [2, 2, 2]
    expected = LetterCounts().encode(["pay my bill", "transfer money", "a banana, please", "an apple",
                                      "weather in\nparis", "is it raining"])
    assert torch.equal(store.images, expected)  # rows grouped by label, in file order within a label
    episodes = EpisodeSampler(class_splits(store, classes={"train": ["bank", "food", "weather"]})["train"],
                              3, 1, 1).sample(2, torch.Generator().manual_seed(0))
    assert episodes.support_x.shape == (2, 3, 3) and episodes.support_x.dtype == torch.float32
    with pytest.raises(DataError, match=r"has no column 'utterance'; columns found: 'text', 'label'. Name the"):
        csv_texts(path, text_column="utterance", encoder=LetterCounts())
    write_csv(tmp_path / "gap.csv", [("fine", "a"), ("", "b")])
    with pytest.raises(DataError, match=r"gap.csv line 3: empty or missing 'text' or 'label'"):
        csv_texts(tmp_path / "gap.csv", encoder=LetterCounts())
    assert csv_texts(path, encoder=LetterCounts(), min_examples=2).num_classes == 3
    with pytest.raises(DataError, match="min_examples=3 drops every class"):
        csv_texts(path, encoder=LetterCounts(), min_examples=3)


def test_csv_text_config_embeds_with_the_real_sentence_encoder(tmp_path):
    topics = {
        "weather": ["will it rain tomorrow", "how hot is it today", "is there snow in the forecast",
                    "what is the temperature outside"],
        "banking": ["transfer money to my savings", "what is my account balance", "my card was declined",
                    "how do i pay my credit card bill"],
        "music": ["play some jazz", "turn up the song", "skip to the next track", "put on my playlist"],
        "cooking": ["how long do i boil an egg", "a recipe for pancakes", "how do i roast vegetables",
                    "what can i cook with rice"],
        "travel": ["book a flight to rome", "find a hotel in tokyo", "when does my train leave",
                   "i need a rental car at the airport"],
        "health": ["i have a headache", "book a doctor's appointment", "how many steps did i walk",
                   "remind me to take my medicine"],
    }
    path = write_csv(tmp_path / "intents.csv", [(text, topic) for topic, texts in topics.items() for text in texts],
                     header=("utterance", "intent"))
    values = {"data": {"dataset": "csv-text", "root": str(path), "text_column": "utterance", "label_column": "intent",
                       "rotations": [0], "class_fractions": [0.34, 0.33]},
              "model": {"algorithm": "protonet", "backbone": "mlp"},
              "train": {"ways": 2, "shots": 1, "queries": 3}, "eval": {"ways": 2, "shots": 1, "queries": 3}}
    with pytest.raises(ConfigError, match="csv-text holds 384-d sentence embeddings; use mlp or residual-mlp"):
        config_from_dict({**values, "model": {"backbone": "conv4"}})
    with pytest.raises(ConfigError, match=r"data.rotations must be \[0\] for csv-text"):
        config_from_dict({**values, "data": {**values["data"], "rotations": [0, 90]}})
    config = config_from_dict(values)
    splits = load_splits(config, None, ["train", "test"])
    store = splits["test"].store
    assert store.images.shape == (24, 384) and store.class_names == tuple(sorted(topics))
    torch.testing.assert_close(store.images.norm(dim=1), torch.ones(24))
    assert len(list((tmp_path / "cache").glob("csv-intents-*.pt"))) == 1  # embedded once, cached
    # Nearest prototype on the frozen embeddings: topics this distinct are told apart.
    episodes = build_sampler(config, splits["test"], 2, 1, 3).sample(50, torch.Generator().manual_seed(0))
    distances = torch.cdist(episodes.query_x, episodes.support_x)
    assert (distances.argmin(-1) == episodes.query_y).float().mean() >= 0.9


def test_tensors_in_memory_train_and_evaluate_with_the_trainer(tmp_path, registry):
    generator = torch.Generator().manual_seed(0)
    patterns = torch.rand(10, 16, 16, generator=generator)
    images = ((0.8 * patterns.repeat_interleave(8, 0) + 0.2 * torch.rand(80, 16, 16, generator=generator)) * 255)
    labels = torch.arange(10).repeat_interleave(8)
    spec = register_dataset("shapes", in_memory(images.to(torch.uint8), labels), fractions=(0.6, 0.2))
    assert spec.base_classes == {"train": 6, "val": 2, "test": 2} and spec.modality == "image"
    values = {"data": {"dataset": "shapes", "image_size": 16, "rotations": [0, 180]},
              "model": {"algorithm": "protonet", "hidden_channels": 8},
              "train": {"steps": 12, "ways": 3, "shots": 1, "queries": 3, "log_every": 4, "val_every": 6,
                        "val_episodes": 10, "checkpoint_every": 6},
              "eval": {"ways": 3, "shots": 1, "queries": 3, "episodes": 30}}
    with pytest.raises(ConfigError, match="data.image_size must be 16 for shapes"):
        config_from_dict({**values, "data": {"dataset": "shapes", "rotations": [0]}})
    with pytest.raises(ConfigError, match="data.rotations must be a non-empty list of multiples of 90"):
        config_from_dict({**values, "data": {"dataset": "shapes", "image_size": 16, "rotations": [45]}})
    config = config_from_dict(values)  # with rotations: 4 val classes for 3-way episodes
    result = Trainer(config, tmp_path / "run", progress=False).fit()
    assert result.steps == 12 and result.best_step in (6, 12)
    losses = [record["loss"] for record in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if "loss" in record]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    report = evaluate_run(tmp_path / "run")
    assert report.dataset == "shapes" and report.episodes == 30
    assert report.results[0].mean > 0.5  # chance: 1/3
    features = register_dataset("vectors", in_memory(torch.randn(60, 5), torch.arange(12).repeat(5)))
    assert features.modality == "features" and features.channels == 5
    vector_values = {"data": {"dataset": "vectors", "rotations": [0]}, "model": {"backbone": "mlp"},
                     "train": {"ways": 2, "shots": 1, "queries": 2}, "eval": {"ways": 2, "shots": 1, "queries": 2}}
    assert config_from_dict(vector_values).data.dataset == "vectors"
    with pytest.raises(ConfigError, match="vectors holds 5-d feature vectors; use mlp or residual-mlp"):
        config_from_dict({**vector_values, "model": {"backbone": "conv4"}})
    with pytest.raises(DataError, match="'omniglot' is a built-in dataset"):
        register_dataset("omniglot", in_memory(torch.randn(4, 2), [0, 0, 1, 1]))


def test_in_memory_checks_say_what_is_wrong():
    with pytest.raises(DataError, match="inputs hold 5 examples but labels hold 4"):
        in_memory(torch.zeros(5, 3), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(DataError, match="labels must be integers"):
        in_memory(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(DataError, match=r"got shape \[4, 8, 8\] \(add the channel axis: inputs.unsqueeze\(1\)\)"):
        in_memory(torch.zeros(4, 8, 8), [0, 0, 1, 1])
    with pytest.raises(DataError, match="inputs must be uint8 images .* got torch.int64"):
        in_memory(torch.zeros(4, 3, dtype=torch.int64), [0, 0, 1, 1])
    with pytest.raises(DataError, match="class_names must give 2 distinct names"):
        in_memory(torch.zeros(4, 3), [0, 0, 1, 1], class_names=["cat"])
    with pytest.raises(DataError, match="non-finite"):
        in_memory(torch.full((4, 3), math.nan), [0, 0, 1, 1])
    store = in_memory(np.arange(12, dtype=np.float32).reshape(4, 3), ["dog", "cat", "dog", "cat"])
    assert store.class_names == ("cat", "dog") and store.images[:, 0].tolist() == [3.0, 9.0, 0.0, 6.0]
    same = in_memory(np.arange(12, dtype=np.float32).reshape(4, 3), np.array(["dog", "cat", "dog", "cat"]))
    assert same.class_names == store.class_names and torch.equal(same.images, store.images)


class TwoLayerConvNet(nn.Module):
    """A user's backbone: two conv → BatchNorm → ReLU → pool layers and a linear layer."""

    def __init__(self, channels: int = 1, width: int = 8, dim: int = 16) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.norm2 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.output = nn.Linear(width * 4 * 4, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.max_pool2d(torch.relu(self.norm1(self.conv1(images))), 2)
        hidden = nn.functional.max_pool2d(torch.relu(self.norm2(self.conv2(hidden))), 2)
        return self.output(hidden.flatten(1))


@pytest.fixture(scope="module")
def coded_images():
    """20 classes of 6 16x16 images whose row ``c % 16`` is bright for class ``c``."""
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(120, 1, 16, 16, generator=generator) * 128).to(torch.uint8)
    labels = torch.arange(20).repeat_interleave(6)
    for label in range(20):
        images[labels == label, 0, label % 16] = 255
    return in_memory(images, labels)


CLASSIFIERS = sorted(name for name, cls in ALGORITHMS.items() if "classification" in cls.task_kinds)


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_a_user_module_is_the_backbone_of_every_method_that_takes_one(algorithm, coded_images, registry):
    register_dataset("coded", coded_images)
    values = {"data": {"dataset": "coded", "image_size": 16, "rotations": [0]},
              "model": {"algorithm": algorithm, "backbone": "custom"},
              "inner": {"first_order_steps": 0, "multi_step_loss_steps": 2} if algorithm == "mamlpp" else {},
              "train": {"steps": 3, "ways": 3, "shots": 1, "queries": 2, "meta_batch_size": 2},
              "eval": {"ways": 3, "shots": 1, "queries": 2}, "num_threads": 1}
    config = config_from_dict(values)
    torch.manual_seed(0)
    module = TwoLayerConvNet()
    if algorithm in STRUCTURED_BACKBONES:
        with pytest.raises(InnerloopError, match=f"{algorithm} cannot take an arbitrary nn.Module .*tadam: "
                                                 f"TADAM FiLM-conditions .*relation: Relation Networks compare"):
            build_learner(config, backbone=module)
        return
    learner = build_learner(config, backbone=module)
    gradient_method = ALGORITHMS[algorithm].backbone_batch_norm == "task"
    norms = (module.norm1, module.norm2)
    per_task = (TaskBatchNorm, StepwiseTaskBatchNorm)  # MAML++ gives each inner step its own pair
    assert all(isinstance(norm, per_task if gradient_method else nn.BatchNorm2d) for norm in norms)
    sampler = build_sampler(config, load_splits(config, None, ["train"])["train"], 3, 1, 2)
    probe = sampler.sample(2, torch.Generator().manual_seed(1))

    def probe_logits() -> torch.Tensor:
        learner.eval()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)  # methods that sample draw the same noise before and after
            logits = learner.query_logits(probe)
        learner.train()
        return logits

    before = probe_logits()
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.01)
    for step in range(2):
        learner.set_training_step(step)
        loss, _ = learner.meta_loss(sampler.sample(2, torch.Generator().manual_seed(step)))
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            if algorithm == "bmaml":  # its particles replace the adapted parameters
                assert not list(module.parameters())
                gradients = [particle.grad for particle in learner.particles.parameters()]
            else:
                gradients = [parameter.grad for parameter in module.parameters()]
                assert len(gradients) == 10  # 2 conv + 2 norm + 1 linear, weight and bias
            assert all(g is not None and bool(torch.isfinite(g).all()) and g.abs().sum() > 0 for g in gradients)
        optimizer.step()
    after = probe_logits()
    assert before.shape == (2, 6, 3) and bool(torch.isfinite(after).all())
    assert (after - before).abs().max() > 1e-4


class FlattenByView(nn.Module):
    """A backbone written the common way: ``view`` assumes contiguous NCHW activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(images))
        return features.view(features.size(0), -1)


def test_a_module_that_flattens_with_view_trains_under_the_default_channels_last(coded_images, registry):
    register_dataset("coded", coded_images)
    config = config_from_dict({"data": {"dataset": "coded", "image_size": 16, "rotations": [0]},
                               "model": {"algorithm": "protonet", "backbone": "custom"},
                               "train": {"ways": 3, "shots": 1, "queries": 2}, "eval": {"ways": 3, "shots": 1, "queries": 2}})
    assert config.train.channels_last  # the library's own models run NHWC; a user module keeps its layout
    learner = build_learner(config, backbone=FlattenByView())
    sampler = build_sampler(config, load_splits(config, None, ["train"])["train"], 3, 1, 2)
    loss, _ = learner.meta_loss(sampler.sample(2, torch.Generator().manual_seed(0)))
    loss.backward()
    assert learner.backbone.conv.weight.grad is not None and learner.backbone.conv.weight.is_contiguous()


def test_backbone_checks_and_methods_without_one(coded_images, registry):
    register_dataset("coded", coded_images)
    values = {"data": {"dataset": "coded", "image_size": 16, "rotations": [0]},
              "model": {"algorithm": "protonet", "backbone": "custom"},
              "train": {"ways": 3, "shots": 1, "queries": 2}, "eval": {"ways": 3, "shots": 1, "queries": 2}}
    config = config_from_dict(values)
    with pytest.raises(InnerloopError, match=r"maps a batch of shape \[3, 1, 16, 16\] to \[3, 8, 16, 16\]; it "
                                             r"must return one embedding per example, \[B, D\] = \[3, D\]"):
        build_learner(config, backbone=nn.Conv2d(1, 8, 3, padding=1))
    with pytest.raises(InnerloopError, match=r"failed on a support batch of shape \[3, 1, 16, 16\]"):
        build_learner(config, backbone=TwoLayerConvNet(channels=3))
    declared = TwoLayerConvNet()
    declared.embedding_dim = 99
    with pytest.raises(InnerloopError, match="embedding_dim is 99, but it returns 16 features"):
        build_learner(config, backbone=declared)
    with pytest.raises(ConfigError, match="model.backbone: set it to custom"):
        build_learner(config_from_dict({**values, "model": {"algorithm": "protonet"}}), backbone=TwoLayerConvNet())
    with pytest.raises(ConfigError, match="model.backbone is custom: this run's backbone is your own module"):
        build_learner(config)
    ensemble = config_from_dict({**values, "model": {"algorithm": "protonet", "backbone": "custom", "ensemble": 2}})
    with pytest.raises(ConfigError, match="pass a function that builds your module"):
        build_learner(ensemble, backbone=TwoLayerConvNet())
    members = build_learner(ensemble, backbone=TwoLayerConvNet).members
    assert not torch.equal(members[0].backbone.conv1.weight, members[1].backbone.conv1.weight)
    for name in NO_BACKBONE:  # regression methods with their own encoders
        with pytest.raises(InnerloopError, match=f"{name} has its own encoder and decoder and takes no backbone"):
            prepare_backbone(TwoLayerConvNet(), name, "running", torch.zeros(2, 1, 16, 16))
    module = TwoLayerConvNet()
    weight = module.norm1.weight
    learner = build_learner(config_from_dict({**values, "model": {"algorithm": "maml", "backbone": "custom"}}),
                            backbone=module)
    assert module.norm1.weight is weight and learner.network.body is module and module.embedding_dim == 16
    sinusoid = config_from_dict({"data": {"dataset": "sinusoid"}, "model": {"algorithm": "maml", "backbone": "custom"},
                                 "train": {"ways": 1, "shots": 5, "queries": 5}, "eval": {"ways": 1}})
    regression = build_learner(sinusoid, backbone=nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32)))
    episodes = build_sampler(sinusoid, load_splits(sinusoid, None, ["train"])["train"], 1, 5, 5).sample(
        2, torch.Generator().manual_seed(0))
    loss, metrics = regression.meta_loss(episodes)
    assert math.isfinite(float(loss.detach())) and "mse" in metrics


def test_image_folder_recipe_trains_from_the_command_line(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", {name: 4 for name in GRAY})
    recipe = tmp_path / "my-folder.yaml"
    recipe.write_text(
        "name: my-folder\n"
        f"data: {{dataset: image-folder, root: {root}, image_size: 16, grayscale: true, rotations: [0, 90, 180, 270],\n"
        "       class_fractions: [0.5, 0.17]}\n"
        "model: {algorithm: protonet, backbone: conv4, hidden_channels: 8}\n"
        "train: {steps: 4, ways: 3, shots: 1, queries: 2, log_every: 2, val_every: 4, val_episodes: 5, checkpoint_every: 4}\n"
        "eval: {ways: 3, shots: 1, queries: 2, episodes: 10}\n")
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "protonet on image-folder (test), 3-way 1-shot" in printed  # 2 test classes, 4 rotations each
    assert dataset_spec(config_from_dict(yaml.safe_load(recipe.read_text()))).base_classes == {
        "train": 3, "val": 1, "test": 2}
    assert main(["train", str(recipe), "--set", "model.backbone=mlp", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "model.backbone: mlp takes vector inputs; image-folder has images" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.grayscale applies to image-folder only"):
        config_from_dict({"data": {"grayscale": True}})




def test_readme_bring_your_own_data_example_runs(tmp_path, monkeypatch, registry, capsys):
    """The README's example as written, with fewer steps and episodes."""
    monkeypatch.chdir(tmp_path)
    code = readme_code(r"### Bring your own data and model", "bring-your-own-data example")
    shortened = (code.replace('"steps": 40', '"steps": 8').replace('"val_every": 20', '"val_every": 4')
                 .replace('"checkpoint_every": 20', '"checkpoint_every": 4').replace('"episodes": 100', '"episodes": 20')
                 .replace('"val_episodes": 40', '"val_episodes": 10'))
    assert shortened.count('": 8') == 1 and shortened.count('": 4,') == 2  # the knobs are still there
    namespace: dict = {}
    exec(compile(shortened, "README.md", "exec"), namespace)
    assert namespace["result"].steps == 8 and (tmp_path / "runs" / "my-images-maml" / "best.pt").is_file()
    report = namespace["report"]
    assert report.method == "maml" and report.dataset == "my-images" and report.episodes == 20
    assert "# maml on my-images (test), 5-way 1-shot" in capsys.readouterr().out
