"""CACTUs recipes: the supervised twins with pseudo-labels, training on real Omniglot, no
training label read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from innerloop.config import load_config
from innerloop.data.omniglot import omniglot_split
from innerloop.data.store import ClassSplit, TensorStore
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.train.trainer import Trainer
from innerloop.unsupervised.cactus import PseudoLabelTasks, cactus_tasks
from innerloop.unsupervised.embeddings import unlabeled_images

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "omniglot"
TINY = ["cactus.partitions=2", "cactus.clusters=100", "cactus.kmeans_iterations=20", "num_threads=1",
        "train.val_every=2", "train.val_episodes=10", "train.log_every=1", "train.checkpoint_every=2"]


def without(values: dict, *paths: str) -> dict:
    values = json.loads(json.dumps(values))
    for path in paths:
        *sections, key = path.split(".")
        node = values
        for section in sections:
            node = node[section]
        node.pop(key)
    return values


def test_recipes_are_their_supervised_twins_but_for_the_labels() -> None:
    protonet = load_config(RECIPES / "cactus-protonet-5w1s.yaml")
    twin = load_config(RECIPES / "protonet-budget-5w1s.yaml")
    assert protonet.data.pseudo_labels == "cactus" and twin.data.pseudo_labels is None
    assert (without(protonet.to_dict(), "name", "data.pseudo_labels", "cactus")
            == without(twin.to_dict(), "name", "data.pseudo_labels", "cactus"))
    maml = load_config(RECIPES / "cactus-maml-5w1s.yaml")
    ensemble = load_config(RECIPES / "maml-ensemble-5w1s.yaml")  # member 0 is the supervised twin
    assert ensemble.model.ensemble == 3 and maml.model.ensemble == 1
    assert (without(maml.to_dict(), "name", "data.pseudo_labels", "cactus", "model.ensemble")
            == without(ensemble.to_dict(), "name", "data.pseudo_labels", "cactus", "model.ensemble"))
    for config in (protonet, maml):
        assert (config.cactus.embedding, config.cactus.clusters, config.cactus.partitions) == ("pca", 500, 50)


def one_class_per_image(split: ClassSplit) -> ClassSplit:
    """The split's images, each its own class: no label left to learn from (a supervised
    1-shot sampler could not even draw a query)."""
    images = unlabeled_images(split)
    count = images.shape[0]
    store = TensorStore(images, torch.arange(count), torch.ones(count, dtype=torch.int64),
                        tuple(f"image{i}" for i in range(count)), tuple("none" for _ in range(count)))
    return ClassSplit.with_rotations(store, "train", torch.arange(count), (0, 90, 180, 270))


def test_cactus_trains_on_real_omniglot_without_its_training_labels(omniglot_store: TensorStore,
                                                                    tmp_path: Path) -> None:
    real_train = omniglot_split(omniglot_store, "train")
    poisoned_train = one_class_per_image(real_train)
    assert poisoned_train.store.images.shape[0] == 1100 * 20
    val = omniglot_split(omniglot_store, "val")
    for recipe, steps, extra in (("cactus-protonet-5w1s.yaml", 2, []),
                                 ("cactus-maml-5w1s.yaml", 2, ["train.meta_batch_size=2"])):
        config = load_config(RECIPES / recipe, TINY + [f"train.steps={steps}"] + extra)
        trainer = Trainer(config, tmp_path / recipe, progress=False,
                          splits={"train": poisoned_train, "val": val})
        assert isinstance(trainer.sampler, PseudoLabelTasks)
        assert isinstance(trainer.validation.sampler, EpisodeSampler)  # real labelled val episodes
        assert trainer.validation.sampler.split.name == "val"
        result = trainer.fit()
        assert result.steps == steps and 0.2 <= result.best_val_score <= 1.0
        losses = [json.loads(line)["loss"] for line in (tmp_path / recipe / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(line)]
        assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)
    # the pseudo-labels of the real split and of the label-free one are the same
    real = cactus_tasks(config, real_train, use_cache=False)
    assert torch.equal(real.order, trainer.sampler.order)
