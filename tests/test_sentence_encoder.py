"""The offline MiniLM sentence encoder reproduces the MANIFEST's frozen-embedding sanity bar."""

from __future__ import annotations

import pytest
import torch

from innerloop.data.intents import read_banking77
from innerloop.errors import ConfigError
from innerloop.nn.sentence_encoder import EMBEDDING_DIM, SentenceEncoder, cached_embeddings


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


def test_banking77_nearest_centroid_matches_the_manifest(encoder, intent_data_root, tmp_path):
    """77-way 5-shot nearest centroid (cosine), support = the first 5 train utterances of each
    intent, all 3,080 test utterances as queries: 0.761 in the MANIFEST."""
    train, test = read_banking77("train", intent_data_root), read_banking77("test", intent_data_root)
    support: dict[int, list[str]] = {}
    for text, label in zip(train.texts, train.labels):
        if len(support.setdefault(label, [])) < 5:
            support[label].append(text)
    centroids = torch.stack([encoder.encode(support[label]).mean(0) for label in range(77)])
    queries = cached_embeddings(list(test.texts), "banking77-test", encoder, cache_dir=tmp_path)
    assert queries.shape == (3080, EMBEDDING_DIM)
    torch.testing.assert_close(queries.norm(dim=1), torch.ones(3080))
    predictions = (queries @ torch.nn.functional.normalize(centroids, dim=1).T).argmax(1)
    accuracy = float((predictions == torch.tensor(test.labels)).float().mean())
    assert accuracy == pytest.approx(0.761, abs=0.005)
    (cache,) = tmp_path.glob("banking77-test-*.pt")  # written once, then read back
    assert torch.equal(cached_embeddings(list(test.texts), "banking77-test", cache_dir=tmp_path), queries)
    assert cache.stat().st_size > 3080 * EMBEDDING_DIM * 4


def test_embedding_does_not_depend_on_the_batch_and_top_layers_can_train(encoder):
    texts = ["how do i freeze my card", "what is the weather like in paris tomorrow afternoon", "hi"]
    together = encoder.encode(texts)
    alone = torch.cat([encoder.encode([text]) for text in texts])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)  # padding is masked out
    assert not any(p.requires_grad for p in encoder.parameters())
    tuned = SentenceEncoder(trainable_layers=2)
    trainable = {name.split(".")[3] for name, p in tuned.named_parameters() if p.requires_grad}
    assert trainable == {"4", "5"}  # bert.encoder.layer.<index>: the top two of six
    loss = tuned(**tuned.tokenize(texts)).sum()
    loss.backward()
    assert tuned.bert.encoder.layer[5].output.dense.weight.grad is not None
    with pytest.raises(ValueError, match="trainable_layers must be in 0..6"):
        SentenceEncoder(trainable_layers=7)


def test_token_episodes_through_the_encoder_start_at_the_frozen_embeddings_and_train_its_top_layer(
        intent_data_root, monkeypatch):
    from innerloop.build import build_learner, build_sampler, load_splits
    from innerloop.config import config_from_dict
    from innerloop.data.intents import intent_store, intent_token_store

    monkeypatch.setenv("INNERLOOP_DATA", str(intent_data_root))
    tokens, embedded = intent_token_store("banking77"), intent_store("banking77")
    assert tokens.images.shape == (13083, 48) and torch.equal(tokens.class_counts, embedded.class_counts)
    assert torch.equal(tokens.images, tokens.images.round()) and tokens.images.max() < 2**24  # exact ids
    config = config_from_dict({"data": {"dataset": "banking77-tokens", "rotations": [0]},
                               "model": {"algorithm": "protonet", "backbone": "minilm"},
                               "train": {"ways": 3, "shots": 1, "queries": 2}, "num_threads": 1,
                               "eval": {"ways": 3, "shots": 1, "queries": 2}})
    learner = build_learner(config)
    rows = torch.tensor([0, 500, 9000])  # the encoder on token ids = the cached frozen embeddings
    with torch.no_grad():
        assert torch.allclose(learner.backbone(tokens.images[rows]), embedded.images[rows], atol=1e-5)
    trainable = {name for name, p in learner.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.5." in name for name in trainable)  # the top layer only
    sampler = build_sampler(config, load_splits(config, None, ["train"])["train"], 3, 1, 2)
    loss, _ = learner.meta_loss(sampler.sample(2, torch.Generator().manual_seed(0)))
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all())
               for p in learner.parameters() if p.requires_grad)
    assert all(p.grad is None for p in learner.parameters() if not p.requires_grad)
    with pytest.raises(ConfigError, match="holds token ids; use minilm"):
        config_from_dict({"data": {"dataset": "banking77-tokens", "rotations": [0]},
                          "model": {"algorithm": "protonet", "backbone": "mlp"}})
    with pytest.raises(ConfigError, match="interpolates inputs, and banking77-tokens holds token ids"):
        config_from_dict({"data": {"dataset": "banking77-tokens", "rotations": [0]},
                          "model": {"algorithm": "protonet", "backbone": "minilm"}, "train": {"task_mixup": 0.5}})
    with pytest.raises(ConfigError, match="use banking77-tokens with minilm"):
        config_from_dict({"data": {"dataset": "banking77", "rotations": [0]},
                          "model": {"algorithm": "protonet", "backbone": "minilm"}})
