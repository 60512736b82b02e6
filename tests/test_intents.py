"""The intent corpora read from the real files give the counts of their MANIFESTs; their
embedded stores, class splits and feature episodes."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from innerloop.data import intent_download
from innerloop.data.intents import (OUT_OF_SCOPE, intent_class_split, intent_store, read_banking77,
                                    read_clinc150, read_hwu64)
from innerloop.data.store import ClassSplit
from innerloop.errors import DataError, TaskError
from innerloop.tasks import EpisodeSampler



def test_clinc150_splits_domains_and_out_of_scope(intent_data_root):
    for split, size, per_intent in (("train", 15000, 100), ("val", 3000, 20), ("test", 4500, 30)):
        corpus = read_clinc150(split, intent_data_root)
        assert len(corpus) == size and set(corpus.counts().values()) == {per_intent}
        assert len(corpus.counts()) == 150 and OUT_OF_SCOPE not in corpus.counts()
    assert len(corpus.label_names) == 151 and corpus.label_names[-1] == OUT_OF_SCOPE
    domains = Counter(corpus.label_groups[:150])
    assert len(domains) == 10 and set(domains.values()) == {15}
    assert corpus.label_groups[corpus.label_names.index("pin_change")] == "banking"
    with_oos = read_clinc150("test", intent_data_root, out_of_scope=True)
    assert len(with_oos) == 5500 and with_oos.counts()[OUT_OF_SCOPE] == 1000
    assert with_oos.label_names == corpus.label_names  # label ids shared by every split


def test_banking77_reads_quoted_newlines_and_strips_whitespace(intent_data_root):
    train, test = read_banking77("train", intent_data_root), read_banking77("test", intent_data_root)
    assert (len(train), len(test)) == (10003, 3080)
    assert len(train.counts()) == 77 and set(test.counts().values()) == {40}
    assert min(train.counts().values()) == 35 and max(train.counts().values()) == 187
    assert train.counts()["contactless_not_working"] == 35
    assert all(text == text.strip() and text for text in train.texts + test.texts)
    assert any("PIN" in text for text in train.texts)
    # Distinct as stored; six differ only by surrounding whitespace (e.g. "\nHow do I unblock my PIN?").
    assert len(set(train.texts) & set(test.texts)) == 6


def test_hwu64_labels_scenarios_and_counts(intent_data_root):
    train, test = read_hwu64("train", intent_data_root), read_hwu64("test", intent_data_root)
    assert (len(train), len(test)) == (9960, 1076)
    assert len(train.label_names) == 64 and len(set(train.label_groups)) == 18
    assert train.label_names == test.label_names
    assert train.counts()["iot_hue_lighton"] == 35 and test.counts()["iot_hue_lighton"] == 3
    assert sum(count == 175 for count in train.counts().values()) == 44
    assert train.label_groups[train.label_names.index("iot_hue_lightoff")] == "iot"


def test_missing_or_altered_files_say_what_to_do(tmp_path, intent_data_root):
    with pytest.raises(DataError, match="data_full.json, domains.json not found in .*clinc150"):
        read_clinc150("train", tmp_path)
    (tmp_path / "clinc150").mkdir()
    data = json.loads((intent_data_root / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    data["train"] = data["train"][:-1]
    (tmp_path / "clinc150" / "data_full.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "clinc150" / "domains.json").write_bytes((intent_data_root / "clinc150" / "domains.json").read_bytes())
    with pytest.raises(DataError, match="holds 14999 utterances, the published dataset 15000"):
        read_clinc150("train", tmp_path)
    with pytest.raises(ValueError, match="splits train, test"):
        read_banking77("val", intent_data_root)


def stub_embedding(texts: list[str], key: str) -> torch.Tensor:
    """Random 8-d vectors, one per text: the class-split logic does not look at the values."""
    return torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(len(texts)))


def test_clinc150_store_and_class_splits_in_domain_and_cross_domain(intent_data_root):
    store = intent_store("clinc150", intent_data_root, embed=stub_embedding)
    assert store.images.shape == (22500, 8) and store.num_classes == 150
    assert set(store.class_counts.tolist()) == {150}  # 100 train + 20 val + 30 test utterances
    for scheme in ("classes", "groups"):
        splits = {name: intent_class_split(store, name, scheme) for name in ("train", "val", "test")}
        classes = {name: set(split.base_classes.tolist()) for name, split in splits.items()}
        assert set().union(*classes.values()) == set(range(150))
        assert sum(len(c) for c in classes.values()) == 150  # disjoint
        assert splits["test"].quarter_turns.eq(0).all()
        domains = {name: {store.class_groups[c] for c in members} for name, members in classes.items()}
        if scheme == "classes":
            assert [len(classes[n]) for n in ("train", "val", "test")] == [75, 30, 45]
        else:  # whole domains: test tasks come from domains never seen in training
            assert not domains["train"] & domains["test"] and not domains["val"] & domains["test"]
            assert len(classes["train"]) >= 75 and all(len(c) % 15 == 0 for c in classes.values())
    assert torch.equal(intent_class_split(store, "test").base_classes,
                       intent_class_split(store, "test").base_classes)  # seeded


def test_feature_episodes_are_the_stored_vectors_and_refuse_rotations(intent_data_root):
    store = intent_store("hwu64", intent_data_root, embed=stub_embedding)
    assert store.num_classes == 64 and int(store.class_counts.sum()) == 11036
    split = intent_class_split(store, "train", "groups")
    assert len({store.class_groups[c] for c in split.base_classes.tolist()}) < 18
    episodes = EpisodeSampler(split, 5, 2, 3).sample(4, torch.Generator().manual_seed(0))
    assert episodes.support_x.shape == (4, 10, 8) and episodes.query_x.shape == (4, 15, 8)
    assert episodes.support_x.dtype == torch.float32
    rows = {tuple(row.tolist()) for row in store.images}
    assert all(tuple(v.tolist()) in rows for v in episodes.support_x.flatten(0, 1))
    rotated = ClassSplit.with_rotations(store, "train", split.base_classes, (0, 90))
    with pytest.raises(TaskError, match="rotates feature vectors"):
        EpisodeSampler(rotated, 5, 1, 1)


def test_banking77_episodes_on_frozen_minilm_embeddings_match_the_manifest_bar(intent_data_root):
    """Nearest prototype on the frozen encoder's embeddings of the meta-test classes, 600
    seeded 5-way episodes with 15 queries per class. The MANIFEST's bar (all 77 intents,
    support from train, queries from test): 0.869 at 1 shot, 0.958 at 5."""
    store = intent_store("banking77", intent_data_root)
    assert store.images.shape == (13083, 384) and store.num_classes == 77
    test = intent_class_split(store, "test")
    for shots, low, high in ((1, 0.85, 0.94), (5, 0.94, 0.99)):
        episodes = EpisodeSampler(test, 5, shots, 15).sample(600, torch.Generator().manual_seed(0))
        prototypes = episodes.support_x.view(600, 5, shots, -1).mean(2)
        distances = (episodes.query_x.unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(-1)
        accuracy = float((distances.argmin(-1) == episodes.query_y).double().mean())
        assert low < accuracy < high, (shots, accuracy)


def test_residual_mlp_starts_as_the_identity_and_learns():
    from innerloop.nn import ResidualMLP  # the adapter on embedded utterances

    torch.manual_seed(0)
    adapter = ResidualMLP(in_features=6, hidden_sizes=(5,))
    features = torch.randn(4, 6)
    assert torch.equal(adapter(features), features) and adapter.embedding_dim == 6
    loss = adapter(features).pow(2).sum()
    loss.backward()
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.1)
    optimizer.step()
    assert adapter(features).pow(2).sum() < loss  # the zero-initialized last layer gets a gradient


def test_downloader_fetches_every_file_into_the_readers_layout(tmp_path, intent_data_root, monkeypatch):
    # the published sources, served from the shared copies (byte-identical to them, per the MANIFESTs)
    source = f"file://{intent_data_root}"
    monkeypatch.setattr(intent_download, "CLINC150_BASE", f"{source}/clinc150")
    monkeypatch.setattr(intent_download, "BANKING77_BASE", f"{source}/banking77")
    mirror = intent_data_root / "hwu64"  # the official repository's fold-1 layout, rebuilt here
    hwu_source = tmp_path / "hwu-mirror"
    for split, remote in (("train", "trainset"), ("test", "testset/csv")):
        (hwu_source / remote).mkdir(parents=True)
        for path in (mirror / split).glob("*.csv"):
            (hwu_source / remote / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(intent_download, "HWU64_BASE", f"file://{hwu_source}")
    root = tmp_path / "root"
    for name in ("clinc150", "banking77", "hwu64"):
        folder = intent_download.ensure_intent_files(name, root)
        assert folder == root / name
    assert len(read_clinc150("test", root, out_of_scope=True)) == 4500 + 1000
    assert len(read_banking77("train", root)) == 10003
    assert len(read_hwu64("test", root)) == 1076
    assert intent_download.ensure_intent_files("banking77", root, download=False) == root / "banking77"

    (root / "banking77" / "test.csv").unlink()
    monkeypatch.setattr(intent_download, "BANKING77_BASE", f"file://{tmp_path}/offline")
    with pytest.raises(DataError, match="download of .* failed.*Put the official files in"):
        intent_download.ensure_intent_files("banking77", root)
    with pytest.raises(DataError, match="missing .* download is off"):
        intent_download.ensure_intent_files("banking77", root, download=False)
    (tmp_path / "altered").mkdir()
    (tmp_path / "altered" / "test.csv").write_text("text,category\n")
    monkeypatch.setattr(intent_download, "BANKING77_BASE", f"file://{tmp_path}/altered")
    with pytest.raises(DataError, match="md5"):
        intent_download.ensure_intent_files("banking77", root)
    assert not (root / "banking77" / "test.csv").exists()
