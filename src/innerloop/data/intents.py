"""Few-shot intent classification corpora: CLINC150, BANKING77 and HWU64, read from their files.

Each reader returns an :class:`IntentCorpus` for one split: the utterances, an integer label
per utterance, the label names (the index is the label id) and each label's group — its domain
(CLINC150), its scenario (HWU64) or ``banking`` (BANKING77, single-domain). Files are read from
``<root>/<dataset>/`` (``root`` as for Omniglot: an explicit folder, ``$INNERLOOP_DATA`` or the
user cache; :mod:`innerloop.data.paths`), with the format quirks of each source handled:

* **CLINC150** (Larson et al., EMNLP 2019), ``clinc150/data_full.json`` + ``domains.json``: splits
  ``train`` / ``val`` / ``test`` with 150 intents in 10 domains, and the out-of-scope utterances
  (``oos_train`` / ``oos_val`` / ``oos_test``, label ``oos``, group ``out_of_scope``) added to a
  split with ``out_of_scope=True``.
* **BANKING77** (Casanueva et al., 2020), ``banking77/{train,test}.csv`` + ``categories.json``:
  RFC 4180 CSV with CRLF records and line feeds inside quoted fields (so a real CSV parser);
  texts are stripped of surrounding whitespace (after which six test utterances equal train
  utterances: the files keep them apart only by a leading line feed or space).
* **HWU64** (Liu et al., 2019), ``hwu64/{train,test}/<scenario>_<intent>.csv``: one
  semicolon-separated file per label; the text is ``answer_from_anno``.

Counts are checked against the published ones, so a truncated or altered file stops with a
message instead of producing different tasks. These readers use only the standard library; the
text encoders and episode samplers build on them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from innerloop.data.paths import resolve_data_root
from innerloop.data.store import ClassSplit, TensorStore
from innerloop.errors import DataError

OUT_OF_SCOPE = "oos"
OUT_OF_SCOPE_GROUP = "out_of_scope"

CLINC150_SPLITS = ("train", "val", "test")
CLINC150_COUNTS = {"train": 15000, "val": 3000, "test": 4500,
                   "oos_train": 100, "oos_val": 100, "oos_test": 1000}
CLINC150_INTENTS, CLINC150_DOMAINS = 150, 10
BANKING77_SPLITS = ("train", "test")
BANKING77_COUNTS = {"train": 10003, "test": 3080}
BANKING77_INTENTS = 77
HWU64_SPLITS = ("train", "test")
HWU64_COUNTS = {"train": 9960, "test": 1076}
HWU64_LABELS, HWU64_SCENARIOS = 64, 18


@dataclass(frozen=True)
class IntentCorpus:
    """The labelled utterances of one split of an intent dataset.

    Attributes:
        name: the dataset (``clinc150``, ``banking77``, ``hwu64``).
        split: the split read.
        texts: the utterances.
        labels: the label id of each utterance (an index into ``label_names``).
        label_names: every label of the dataset, in a fixed order shared by all splits.
        label_groups: the domain or scenario of each label.
    """

    name: str
    split: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    label_groups: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        """Utterances per label name (labels without any utterance in this split left out)."""
        totals: dict[str, int] = {}
        for label in self.labels:
            name = self.label_names[label]
            totals[name] = totals.get(name, 0) + 1
        return totals


def dataset_folder(name: str, root: str | Path | None, files: list[str]) -> Path:
    """``<root>/<name>``, after checking that ``files`` are there (else a message that says
    which files to put where)."""
    folder = resolve_data_root(root) / name
    missing = [file for file in files if not (folder / file).exists()]
    if missing:
        raise DataError(f"{name}: {', '.join(missing)} not found in {folder}. Put the dataset's "
                        f"official files there (layout: {', '.join(files)}), or point --data-root / "
                        f"INNERLOOP_DATA at a folder whose {name}/ holds them.")
    return folder


def _check_count(name: str, split: str, found: int, expected: int, path: Path) -> None:
    if found != expected:
        raise DataError(f"{name} {split}: {path} holds {found} utterances, the published dataset "
                        f"{expected}; the file is truncated or altered — replace it with the official one.")


def _check_split(name: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise ValueError(f"{name} has splits {', '.join(splits)}; got '{split}'")


def read_clinc150(split: str, root: str | Path | None = None, out_of_scope: bool = False) -> IntentCorpus:
    """CLINC150's ``split`` (``train`` / ``val`` / ``test``); with ``out_of_scope`` its
    out-of-scope utterances too (label ``oos``, the last label id)."""
    _check_split("clinc150", split, CLINC150_SPLITS)
    folder = dataset_folder("clinc150", root, ["data_full.json", "domains.json"])
    data = json.loads((folder / "data_full.json").read_text(encoding="utf-8"))
    domains = json.loads((folder / "domains.json").read_text(encoding="utf-8"))
    names = [intent for domain in domains for intent in domains[domain]]
    groups = [domain for domain in domains for _ in domains[domain]]
    if len(names) != CLINC150_INTENTS or len(domains) != CLINC150_DOMAINS:
        raise DataError(f"{folder / 'domains.json'} lists {len(names)} intents in {len(domains)} domains; "
                        f"CLINC150 has {CLINC150_INTENTS} in {CLINC150_DOMAINS}. Use the official file.")
    names.append(OUT_OF_SCOPE)
    groups.append(OUT_OF_SCOPE_GROUP)
    label_id = {name: index for index, name in enumerate(names)}
    parts = [split] + ([f"oos_{split}"] if out_of_scope else [])
    texts: list[str] = []
    labels: list[int] = []
    for part in parts:
        rows = data.get(part, [])
        _check_count("clinc150", part, len(rows), CLINC150_COUNTS[part], folder / "data_full.json")
        for text, intent in rows:
            if intent not in label_id:
                raise DataError(f"clinc150 {part}: intent '{intent}' is not in domains.json")
            texts.append(text)
            labels.append(label_id[intent])
    return IntentCorpus("clinc150", split, tuple(texts), tuple(labels), tuple(names), tuple(groups))


def read_banking77(split: str, root: str | Path | None = None) -> IntentCorpus:
    """BANKING77's ``split`` (``train`` / ``test``), label ids in ``categories.json`` order."""
    _check_split("banking77", split, BANKING77_SPLITS)
    folder = dataset_folder("banking77", root, [f"{split}.csv", "categories.json"])
    names = json.loads((folder / "categories.json").read_text(encoding="utf-8"))
    if len(names) != BANKING77_INTENTS:
        raise DataError(f"{folder / 'categories.json'} lists {len(names)} intents; BANKING77 has "
                        f"{BANKING77_INTENTS}. Use the official file.")
    label_id = {name: index for index, name in enumerate(names)}
    path = folder / f"{split}.csv"
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows or rows[0] != ["text", "category"]:
        raise DataError(f"{path} does not start with the header 'text,category'. Use the official file.")
    texts, labels = [], []
    for text, category in rows[1:]:
        if category not in label_id:
            raise DataError(f"banking77 {split}: intent '{category}' is not in categories.json")
        texts.append(text.strip())
        labels.append(label_id[category])
    _check_count("banking77", split, len(texts), BANKING77_COUNTS[split], path)
    return IntentCorpus("banking77", split, tuple(texts), tuple(labels), tuple(names),
                        ("banking",) * len(names))


def read_hwu64(split: str, root: str | Path | None = None) -> IntentCorpus:
    """HWU64's ``split`` (``train`` / ``test``): one file per ``<scenario>_<intent>`` label,
    label ids in the sorted order of the file names, groups the scenarios."""
    _check_split("hwu64", split, HWU64_SPLITS)
    folder = dataset_folder("hwu64", root, ["train", "test"])
    files = sorted((folder / split).glob("*.csv"))
    if len(files) != HWU64_LABELS:
        raise DataError(f"{folder / split} holds {len(files)} label files; HWU64 has {HWU64_LABELS}. "
                        f"Use the official files.")
    names, groups, texts, labels = [], [], [], []
    for index, path in enumerate(files):
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file, delimiter=";"))
        if not rows or "answer_from_anno" not in rows[0]:
            raise DataError(f"{path} has no 'answer_from_anno' column. Use the official file.")
        names.append(path.stem)
        groups.append(rows[0]["scenario"])
        texts += [row["answer_from_anno"] for row in rows]
        labels += [index] * len(rows)
    _check_count("hwu64", split, len(texts), HWU64_COUNTS[split], folder / split)
    return IntentCorpus("hwu64", split, tuple(texts), tuple(labels), tuple(names), tuple(groups))


INTENT_READERS = {"clinc150": read_clinc150, "banking77": read_banking77, "hwu64": read_hwu64}


# -- episodes over embedded utterances -------------------------------------------------------------
EMBEDDING_FEATURES = 384  # all-MiniLM-L6-v2's embedding width
EPISODE_TOKENS = 48  # token ids per utterance in token stores (innerloop.nn.sentence_encoder's)
INTENT_CLASSES = {"clinc150": CLINC150_INTENTS, "banking77": BANKING77_INTENTS, "hwu64": HWU64_LABELS}
SMALLEST_CLASS = {"clinc150": 150, "banking77": 35 + 40, "hwu64": 35 + 3}  # all files pooled
INTENT_SPLIT_SEED = 0
CLASS_FRACTIONS = {"train": 0.5, "val": 0.2}  # of the classes; the rest are test classes
INTENT_SPLITS = ("train", "val", "test")
SPLIT_SCHEMES = ("classes", "groups")


def pooled_utterances(dataset: str, root: str | Path | None = None, download: bool = False
                      ) -> tuple[list[str], Tensor, tuple[str, ...], tuple[str, ...]]:
    """Every in-scope utterance of ``dataset`` (all its files' splits, in file order), its label,
    and the label names and groups (fetching missing files first with ``download``)."""
    if dataset not in INTENT_READERS:
        raise ValueError(f"unknown intent dataset '{dataset}'; choose one of {', '.join(INTENT_READERS)}")
    if download:
        from innerloop.data.intent_download import ensure_intent_files

        ensure_intent_files(dataset, root)
    splits = CLINC150_SPLITS if dataset == "clinc150" else ("train", "test")
    corpora = [INTENT_READERS[dataset](split, root) for split in splits]
    texts = [text for corpus in corpora for text in corpus.texts]
    labels = torch.tensor([label for corpus in corpora for label in corpus.labels])
    names, groups = corpora[0].label_names, corpora[0].label_groups
    if dataset == "clinc150":  # out-of-scope utterances are not a class to sample
        names, groups = names[:-1], groups[:-1]
    return texts, labels, names, groups


def grouped_by_label(rows: Tensor, labels: Tensor, names: tuple[str, ...], groups: tuple[str, ...]) -> TensorStore:
    """``rows [N, ...]`` of the utterances as a store, class ``c`` the utterances labelled ``c``."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=len(names))
    offsets = torch.cumsum(counts, 0) - counts
    return TensorStore(images=rows[order], class_offsets=offsets, class_counts=counts,
                       class_names=tuple(names), class_groups=tuple(groups))


def intent_token_store(dataset: str, root: str | Path | None = None, download: bool = False) -> TensorStore:
    """The same utterances and classes as :func:`intent_store`, each row its token ids (float
    ``[N, EPISODE_TOKENS]``, exact integers, padded with 0) for a backbone that runs the encoder
    itself (``minilm``: its top layer adapted by meta-training). Tokenized once and cached."""
    from innerloop.data.paths import store_cache_dir
    from innerloop.data.store import cached_store
    from innerloop.nn.sentence_encoder import MODEL_NAME, tokenize_texts

    texts, labels, names, groups = pooled_utterances(dataset, root, download)
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = store_cache_dir() / f"{dataset}-tokens{EPISODE_TOKENS}-{MODEL_NAME}-{digest}.pt"
    return cached_store(path, lambda: grouped_by_label(tokenize_texts(texts, EPISODE_TOKENS).to(torch.float32), labels,
                                                        names, groups))


def intent_store(dataset: str, root: str | Path | None = None,
                 embed: Callable[[list[str], str], Tensor] | None = None, download: bool = False) -> TensorStore:
    """Every in-scope utterance of ``dataset`` (all its files' splits), embedded and grouped by
    label: a :class:`TensorStore` whose rows are float feature vectors ``[N, D]``.

    ``embed(texts, key)`` embeds a list of texts (default: the frozen MiniLM encoder with its
    on-disk cache, :func:`innerloop.nn.sentence_encoder.cached_embeddings`). Class splits are
    disjoint in labels, so pooling a dataset's official train and test utterances is safe. With
    ``download``, missing files are first fetched from the published sources
    (:mod:`innerloop.data.intent_download`).
    """
    if embed is None:
        from innerloop.nn.sentence_encoder import cached_embeddings

        def embed(texts: list[str], key: str) -> Tensor:
            return cached_embeddings(texts, key)

    texts, labels, names, groups = pooled_utterances(dataset, root, download)
    return grouped_by_label(embed(texts, f"{dataset}-all").to(torch.float32), labels, names, groups)


def split_class_counts(num_classes: int) -> dict[str, int]:
    """Classes per split of the ``classes`` scheme (CLINC150's domains of 15 intents give the
    same counts under ``groups``)."""
    train = round(CLASS_FRACTIONS["train"] * num_classes)
    val = round(CLASS_FRACTIONS["val"] * num_classes)
    return {"train": train, "val": val, "test": num_classes - train - val}


def intent_class_split(store: TensorStore, split: str, scheme: str = "classes") -> ClassSplit:
    """The ``train`` / ``val`` / ``test`` classes of an intent store, disjoint and seeded.

    ``scheme = "classes"``: the labels in a seeded random order, the first half meta-train, the
    next fifth meta-validation, the rest meta-test. ``scheme = "groups"`` (cross-domain): whole
    groups (CLINC150's domains, HWU64's scenarios) in a seeded random order go to meta-train until
    it holds half of the classes, then to meta-validation until a fifth, the rest to meta-test,
    so test tasks come from domains never seen in training.
    """
    if split not in INTENT_SPLITS:
        raise ValueError(f"split must be one of {', '.join(INTENT_SPLITS)}, got '{split}'")
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SPLIT_SCHEMES)}, got '{scheme}'")
    generator = torch.Generator().manual_seed(INTENT_SPLIT_SEED)
    num_classes = store.num_classes
    counts = split_class_counts(num_classes)
    bounds = {"train": counts["train"], "val": counts["train"] + counts["val"]}
    if scheme == "classes":
        order = torch.randperm(num_classes, generator=generator).tolist()
        assigned = {"train": order[:bounds["train"]], "val": order[bounds["train"]:bounds["val"]],
                    "test": order[bounds["val"]:]}
    else:
        names = sorted(set(store.class_groups))
        if len(names) < 3:
            raise ValueError(f"a cross-domain split needs at least 3 groups; this store has {len(names)}")
        assigned = {"train": [], "val": [], "test": []}
        for index in torch.randperm(len(names), generator=generator).tolist():
            members = [c for c in range(num_classes) if store.class_groups[c] == names[index]]
            target = ("train" if len(assigned["train"]) < bounds["train"] or not assigned["train"]
                      else "val" if len(assigned["train"]) + len(assigned["val"]) < bounds["val"]
                      or not assigned["val"] else "test")
            assigned[target] += members
    classes = torch.tensor(sorted(assigned[split]), dtype=torch.int64)
    return ClassSplit.with_rotations(store, split, classes, (0,))
