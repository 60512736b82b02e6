"""The intent corpora read from the real files give the counts of their MANIFESTs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from innerloop.data.intents import OUT_OF_SCOPE, read_banking77, read_clinc150, read_hwu64
from innerloop.errors import DataError

from conftest import REPO


@pytest.fixture(scope="module")
def data_root() -> Path:
    import os

    for candidate in (os.environ.get("INNERLOOP_DATA"), str(REPO.parent / "shared" / "data")):
        if candidate and (Path(candidate) / "clinc150" / "data_full.json").is_file():
            return Path(candidate)
    pytest.fail("The real intent datasets are required: set INNERLOOP_DATA to a folder holding "
                "clinc150/, banking77/ and hwu64/ (see their MANIFEST.md).")


def test_clinc150_splits_domains_and_out_of_scope(data_root):
    for split, size, per_intent in (("train", 15000, 100), ("val", 3000, 20), ("test", 4500, 30)):
        corpus = read_clinc150(split, data_root)
        assert len(corpus) == size and set(corpus.counts().values()) == {per_intent}
        assert len(corpus.counts()) == 150 and OUT_OF_SCOPE not in corpus.counts()
    assert len(corpus.label_names) == 151 and corpus.label_names[-1] == OUT_OF_SCOPE
    domains = Counter(corpus.label_groups[:150])
    assert len(domains) == 10 and set(domains.values()) == {15}
    assert corpus.label_groups[corpus.label_names.index("pin_change")] == "banking"
    with_oos = read_clinc150("test", data_root, out_of_scope=True)
    assert len(with_oos) == 5500 and with_oos.counts()[OUT_OF_SCOPE] == 1000
    assert with_oos.label_names == corpus.label_names  # label ids shared by every split


def test_banking77_reads_quoted_newlines_and_strips_whitespace(data_root):
    train, test = read_banking77("train", data_root), read_banking77("test", data_root)
    assert (len(train), len(test)) == (10003, 3080)
    assert len(train.counts()) == 77 and set(test.counts().values()) == {40}
    assert min(train.counts().values()) == 35 and max(train.counts().values()) == 187
    assert train.counts()["contactless_not_working"] == 35
    assert all(text == text.strip() and text for text in train.texts + test.texts)
    assert any("PIN" in text for text in train.texts)
    # Distinct as stored; six differ only by surrounding whitespace (e.g. "\nHow do I unblock my PIN?").
    assert len(set(train.texts) & set(test.texts)) == 6


def test_hwu64_labels_scenarios_and_counts(data_root):
    train, test = read_hwu64("train", data_root), read_hwu64("test", data_root)
    assert (len(train), len(test)) == (9960, 1076)
    assert len(train.label_names) == 64 and len(set(train.label_groups)) == 18
    assert train.label_names == test.label_names
    assert train.counts()["iot_hue_lighton"] == 35 and test.counts()["iot_hue_lighton"] == 3
    assert sum(count == 175 for count in train.counts().values()) == 44
    assert train.label_groups[train.label_names.index("iot_hue_lightoff")] == "iot"


def test_missing_or_altered_files_say_what_to_do(tmp_path, data_root):
    with pytest.raises(DataError, match="data_full.json, domains.json not found in .*clinc150"):
        read_clinc150("train", tmp_path)
    (tmp_path / "clinc150").mkdir()
    data = json.loads((data_root / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    data["train"] = data["train"][:-1]
    (tmp_path / "clinc150" / "data_full.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "clinc150" / "domains.json").write_bytes((data_root / "clinc150" / "domains.json").read_bytes())
    with pytest.raises(DataError, match="holds 14999 utterances, the published dataset 15000"):
        read_clinc150("train", tmp_path)
    with pytest.raises(ValueError, match="splits train, test"):
        read_banking77("val", data_root)
