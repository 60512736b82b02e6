"""Real datasets as class-indexed tensor stores, found by name through :data:`DATASETS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from innerloop.data import fashion_mnist, gaussian_process, intents, omniglot, sinusoid
from innerloop.data import custom  # your own data
from innerloop.data.paths import resolve_data_root, store_cache_dir
from innerloop.data.store import ClassSplit, TensorStore


@dataclass(frozen=True)
class DatasetSpec:
    """What configs need to know about a dataset before loading it, and how to load it."""

    name: str
    splits: tuple[str, ...]
    base_classes: dict[str, int]  # classes per split before rotation augmentation
    examples_per_class: int  # the smallest class's size
    channels: int  # image channels; for regression, the input features
    max_image_size: int  # the side of the source images (0 for regression)
    load: Callable[..., TensorStore | None]
    split: Callable[..., Any]  # -> ClassSplit, or the split of a regression task family
    kind: str = "classification"  # or "regression": MSE loss, generated tasks, ways = 1
    modality: str = "image"  # or "text": examples are sentence embeddings (``channels`` features)
    # (or "features": float feature vectors of your own, innerloop.data.custom.register_dataset)
    split_examples: dict[str, int] | None = None  # smallest class per split, where splits differ
    # Your own data (innerloop.data.custom): config -> the spec of the data it names (classes read
    # from data.root, episode shapes checked); dataset_spec(config) calls it.
    describe: Callable[[Any], DatasetSpec] | None = None

    def num_classes(self, split: str, rotations: tuple[int, ...]) -> int:
        return self.base_classes[split] * len(rotations)

    def smallest_class(self, split: str) -> int:
        """Examples of the smallest class of ``split``."""
        return (self.split_examples or {}).get(split, self.examples_per_class)


_order = omniglot.TRAINVAL_CHARACTERS
DATASETS: dict[str, DatasetSpec] = {
    "omniglot": DatasetSpec(
        name="omniglot",
        splits=omniglot.SPLITS,
        base_classes={
            "train": _order - omniglot.VAL_CHARACTERS,
            "val": omniglot.VAL_CHARACTERS,
            "trainval": _order,
            "test": omniglot.TOTAL_CHARACTERS - _order,
            "background": omniglot.EXPECTED_CHARACTERS["images_background"],
            "evaluation": omniglot.EXPECTED_CHARACTERS["images_evaluation"],
        },
        examples_per_class=omniglot.DRAWINGS_PER_CHARACTER,
        channels=1,
        max_image_size=105,
        load=omniglot.load_omniglot,
        split=omniglot.omniglot_split,
    ),
}


DATASETS["fashion-mnist"] = DatasetSpec(
    name="fashion-mnist",
    splits=fashion_mnist.SPLITS,
    base_classes={"test": len(fashion_mnist.CLASS_NAMES)},
    examples_per_class=fashion_mnist.IMAGES_PER_CLASS,
    channels=1,
    max_image_size=fashion_mnist.SIDE,
    load=fashion_mnist.load_fashion_mnist,
    split=fashion_mnist.fashion_mnist_split,
)


def generated_family(name: str, splits: tuple[str, ...], load: Callable[..., None],
                     split: Callable[..., Any]) -> DatasetSpec:
    """The spec of a generated regression family: 1-D inputs, no classes, nothing to download."""
    return DatasetSpec(name=name, splits=splits, base_classes={}, examples_per_class=0, channels=1,
                       max_image_size=0, load=load, split=split, kind="regression")


DATASETS["sinusoid"] = generated_family("sinusoid", sinusoid.SPLITS, sinusoid.load_sinusoid,
                                        sinusoid.sinusoid_split)
DATASETS["sinusoid-heteroscedastic"] = generated_family(
    "sinusoid-heteroscedastic", sinusoid.SPLITS, sinusoid.load_sinusoid,
    sinusoid.heteroscedastic_sinusoid_split)
for _name, _kernels in (("gp", gaussian_process.GP_KERNELS), ("gp-rbf", ("rbf",)),
                        ("gp-matern52", ("matern52",)), ("gp-periodic", ("periodic",))):
    DATASETS[_name] = generated_family(_name, gaussian_process.SPLITS, gaussian_process.load_gaussian_process,
                                       gaussian_process.gaussian_process_split_loader(_kernels))


def intent_dataset(name: str, dataset: str, scheme: str, tokens: bool = False) -> DatasetSpec:
    """An intent dataset as frozen sentence embeddings with seeded class splits
    (:func:`innerloop.data.intents.intent_class_split`; ``scheme = "groups"``: cross-domain); with
    ``tokens``, the same utterances and splits as token ids, for the ``minilm`` backbone."""

    def load(root: str | Path | None = None, image_size: int = 0, download: bool = True) -> TensorStore:
        if tokens:
            return intents.intent_token_store(dataset, root, download=download)
        return intents.intent_store(dataset, root, download=download)

    def split(store: TensorStore, split_name: str, rotations: tuple[int, ...] = (0,)) -> ClassSplit:
        if tuple(rotations) != (0,):
            raise ValueError(f"{name} holds sentence embeddings: rotations must be (0,), got {rotations}")
        return intents.intent_class_split(store, split_name, scheme)

    total = intents.INTENT_CLASSES[dataset]
    return DatasetSpec(name=name, splits=intents.INTENT_SPLITS, base_classes=intents.split_class_counts(total),
                       examples_per_class=intents.SMALLEST_CLASS[dataset],
                       channels=intents.EPISODE_TOKENS if tokens else intents.EMBEDDING_FEATURES,
                       max_image_size=0, load=load, split=split, modality="tokens" if tokens else "text")


for _name, _dataset, _scheme in (("clinc150", "clinc150", "classes"),
                                 ("clinc150-cross-domain", "clinc150", "groups"),
                                 ("banking77", "banking77", "classes"), ("hwu64", "hwu64", "classes")):
    DATASETS[_name] = intent_dataset(_name, _dataset, _scheme)
    # the same intents and splits as token ids: the encoder's top layer meta-trained (backbone minilm)
    DATASETS[f"{_name}-tokens"] = intent_dataset(f"{_name}-tokens", _dataset, _scheme, tokens=True)


DATASETS["image-folder"] = custom.user_data_spec("image-folder", "image", 3, custom.describe_image_folder)
DATASETS["csv-text"] = custom.user_data_spec("csv-text", "text", intents.EMBEDDING_FEATURES,
                                               custom.describe_csv_text)


def dataset_spec(config: Any) -> DatasetSpec:
    """The spec of the dataset ``config.data`` names: a built-in one as registered; your own data
    (image-folder, csv-text, :func:`~innerloop.data.custom.register_dataset`) as read from the
    config, its episode shapes checked against its classes."""
    custom.check_user_data_keys(config)
    spec = DATASETS[config.data.dataset]
    return spec.describe(config) if spec.describe is not None else spec


def load_split(dataset: str, split: str, root: str | Path | None = None, image_size: int = 28,
               rotations: tuple[int, ...] | None = None, download: bool = True) -> ClassSplit:
    """Load ``dataset`` (decoding it once) and return the classes of ``split``.

    ``rotations`` (degrees, each a new class) defaults to the dataset's standard augmentation:
    for Omniglot 0, 90, 180 and 270.
    """
    spec = DATASETS[dataset]
    store = spec.load(root, image_size=image_size, download=download)
    if rotations is None:
        return spec.split(store, split)
    return spec.split(store, split, rotations=rotations)


__all__ = ["DATASETS", "ClassSplit", "DatasetSpec", "TensorStore", "dataset_spec", "load_split",
           "resolve_data_root", "store_cache_dir"]
