from __future__ import annotations

from dataclasses import replace

import torch

from innerloop.algorithms import ProtoNet
from innerloop.algorithms.metric.protonet import class_means, negative_squared_distances
from innerloop.data.omniglot import omniglot_split
from innerloop.data.store import ClassSplit
from innerloop.evaluate import evaluate_episodes
from innerloop.nn import Conv4
from innerloop.tasks import EpisodeSampler, Episodes, FixedEpisodes
from tests.conftest import make_coded_store


def test_prototypes_are_per_class_means():
    embeddings = torch.randn(3, 12, 8, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 1, 2]).expand(3, -1)
    prototypes = class_means(embeddings, labels, ways=3)
    for task in range(3):
        for label in range(3):
            expected = embeddings[task][labels[task] == label].mean(0)
            assert torch.allclose(prototypes[task, label], expected)


def test_logits_are_negative_squared_euclidean_distances():
    queries, prototypes = torch.randn(2, 7, 5, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    expected = -torch.cdist(queries, prototypes) ** 2
    assert torch.allclose(negative_squared_distances(queries, prototypes), expected)


def test_batched_logits_match_adapt_then_predict_per_task():
    torch.manual_seed(0)
    learner = ProtoNet(Conv4(image_size=16)).double().eval()
    split = ClassSplit.with_rotations(make_coded_store([20] * 30, side=16), "coded", torch.arange(30))
    episodes = EpisodeSampler(split, ways=5, shots=3, queries=4).sample(6, torch.Generator().manual_seed(0))
    support_x, query_x = episodes.support_x.double(), episodes.query_x.double()
    batched = learner.query_logits(replace(episodes, support_x=support_x, query_x=query_x))
    looped = torch.stack([learner.predict(learner.adapt(support_x[t], episodes.support_y[t], 5), query_x[t])
                          for t in range(6)])
    assert batched.shape == (6, 20, 5)
    assert torch.allclose(batched, looped, atol=1e-10)


def test_meta_loss_gradient_matches_finite_differences():
    torch.manual_seed(1)
    learner = ProtoNet(torch.nn.Linear(6, 4)).double()
    support_x, query_x = torch.randn(2, 6, 6, dtype=torch.float64), torch.randn(2, 9, 6, dtype=torch.float64)
    episodes = Episodes(support_x, torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, -1), query_x,
                        torch.tensor([0, 1, 2] * 3).expand(2, -1), 3, 2, 3, torch.zeros(2, 3))
    loss, _ = learner.meta_loss(episodes)
    (gradient,) = torch.autograd.grad(loss, [learner.backbone.weight])
    step = 1e-6
    for index in [(0, 0), (1, 3), (3, 5)]:
        with torch.no_grad():
            learner.backbone.weight[index] += step
            up = learner.meta_loss(episodes)[0]
            learner.backbone.weight[index] -= 2 * step
            down = learner.meta_loss(episodes)[0]
            learner.backbone.weight[index] += step
        assert abs(float((up - down) / (2 * step)) - float(gradient[index])) < 1e-6


def test_short_real_omniglot_training_beats_chance_by_a_wide_margin(omniglot_store):
    torch.manual_seed(0)
    learner = ProtoNet(Conv4())
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sampler = EpisodeSampler(omniglot_split(omniglot_store, "train"), ways=20, shots=1, queries=5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss, _ = learner.meta_loss(sampler.sample(1, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = FixedEpisodes(EpisodeSampler(omniglot_split(omniglot_store, "test"), 5, 1, 15), 200, seed=0)
    result = evaluate_episodes(learner, test)
    assert result.mean > 0.75, result.mean  # chance is 0.20
    assert learner.training  # evaluation restores the mode
