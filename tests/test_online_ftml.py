"""FTML: the zero-head inner step by hand, the meta-gradient against finite differences, the
task buffer and where its meta-updates draw from, and streams that restart from the same θ."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from innerloop.functional import parameters_of
from innerloop.online import FTML, ClassStream, OnlineNetwork, evaluate_stream
from innerloop.online.network import OUTPUT_BIAS, OUTPUT_WEIGHT
from innerloop.tasks.episodes import Episodes


def tiny_ftml(dtype: torch.dtype = torch.float64, **options) -> FTML:
    torch.manual_seed(0)
    network = OnlineNetwork(3, backbone="mlp", image_size=4, hidden_size=5, mlp_sizes=(6,)).to(dtype)
    return FTML(network, **options)


def task(seed: int, ways: int = 3, shots: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(ways * shots, 1, 4, 4, generator=generator, dtype=torch.float64)
    return images, torch.arange(ways).repeat_interleave(shots)


def test_first_inner_step_from_the_zero_output_layer_by_hand():
    learner = tiny_ftml(inner_lr=0.5)
    images, labels = task(0)
    adapted = learner.adapt(images, labels, ways=3, num_steps=1)
    hidden = torch.relu(learner.network.head[0](learner.network.body(images)))  # h_i
    # zero logits: p = 1/3 for every class, so grad W = mean_i (1/3 - onehot_i) h_i^T
    error = F.one_hot(labels, 3).double() - 1 / 3
    torch.testing.assert_close(adapted[OUTPUT_WEIGHT], 0.5 * error.T @ hidden / labels.numel())
    torch.testing.assert_close(adapted[OUTPUT_BIAS], 0.5 * error.mean(dim=0))
    # the body and hidden layer get no gradient through a zero output layer on the first step
    for name, tensor in parameters_of(learner.network).items():
        if name not in (OUTPUT_WEIGHT, OUTPUT_BIAS):
            torch.testing.assert_close(adapted[name], tensor)
    two_steps = learner.adapt(images, labels, ways=3, num_steps=2)
    assert not torch.allclose(two_steps["body.1.layers.0.weight"], parameters_of(learner.network)["body.1.layers.0.weight"])


def test_meta_gradient_matches_finite_differences():
    learner = tiny_ftml(inner_lr=0.3, num_inner_steps=2, order="second")
    support_x, support_y = task(1)
    query_x, query_y = task(2)
    theta = learner.meta_parameters()

    def loss() -> torch.Tensor:
        return learner.task_loss(support_x, support_y, query_x, query_y, ways=3)[0]

    grads = torch.autograd.grad(loss(), list(theta.values()))
    directions = [torch.randn_like(t, generator=torch.Generator().manual_seed(i)) for i, t in enumerate(theta.values())]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions))
    eps = 1e-6
    with torch.no_grad():
        for t, d in zip(theta.values(), directions):
            t.add_(eps * d)
        plus = float(loss())
        for t, d in zip(theta.values(), directions):
            t.sub_(2 * eps * d)
        minus = float(loss())
        for t, d in zip(theta.values(), directions):
            t.add_(eps * d)
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-6)
    assert all(float(g.abs().sum()) > 0 for g in grads)  # every part of θ is meta-learned


def test_offline_meta_update_changes_theta_but_not_the_unused_output_layer():
    learner = tiny_ftml(meta_lr=0.01)
    support_x, support_y = task(3)
    query_x, query_y = task(4)
    episodes = Episodes(support_x.unsqueeze(0), support_y.unsqueeze(0), query_x.unsqueeze(0), query_y.unsqueeze(0),
                        ways=3, shots=2, queries=2, class_ids=torch.arange(3).unsqueeze(0))
    before = {n: t.detach().clone() for n, t in parameters_of(learner.network).items()}
    metrics = learner.meta_update(episodes)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    after = parameters_of(learner.network)
    assert not torch.equal(before["head.0.weight"], after["head.0.weight"])
    assert torch.equal(before[OUTPUT_WEIGHT], after[OUTPUT_WEIGHT])


def test_buffer_grows_by_one_task_per_arrival_and_meta_updates_draw_only_seen_tasks(coded_split):
    learner = tiny_ftml(torch.float32, meta_steps_per_arrival=3, meta_batch_size=4, support_shots=2, eval_inner_steps=3)
    stream = ClassStream(coded_split, 12, train_shots=4, test_shots=4, classes_per_arrival=3, seed=0)
    learner.start_stream(stream.num_classes, seed=0)
    theta = {n: t.detach().clone() for n, t in learner.meta_parameters().items()}
    drawn_so_far = 0
    for index in range(stream.num_arrivals):
        calls = []
        learner.learn(stream.arrival(index), probe=lambda predict: calls.append(predict))
        assert len(learner.buffer) == index + 1
        assert len(calls) == 1 + learner.eval_inner_steps  # before the first step and after each
        drawn = learner.sampled_arrivals[drawn_so_far:]
        drawn_so_far = len(learner.sampled_arrivals)
        assert len(drawn) == 3 * 4 and max(drawn) <= index and min(drawn) >= 0
    assert set(learner.sampled_arrivals) == {0, 1, 2, 3}  # old tasks are revisited
    assert any(not torch.equal(theta[n], t) for n, t in learner.meta_parameters().items())
    with pytest.raises(ValueError, match="only score classes it has seen"):
        learner.logits(stream.test_x[:2], torch.tensor([0, 12 - 1, 13]))


def test_every_stream_starts_from_the_same_meta_parameters(coded_split):
    learner = tiny_ftml(torch.float32, meta_steps_per_arrival=2, support_shots=1, eval_inner_steps=2)
    stream = ClassStream(coded_split, 6, train_shots=2, test_shots=3, classes_per_arrival=3, seed=5)
    first = evaluate_stream(learner, stream)
    second = evaluate_stream(learner, stream)
    for view in first.accuracy:
        torch.testing.assert_close(first.accuracy[view], second.accuracy[view], rtol=0, atol=0, equal_nan=True)
    assert first.new_class_curve == second.new_class_curve


def test_one_class_arrivals_are_refused(coded_split):
    learner = tiny_ftml(torch.float32)
    stream = ClassStream(coded_split, 4, train_shots=2, test_shots=2, classes_per_arrival=1, seed=0)
    learner.start_stream(4, 0)
    with pytest.raises(ValueError, match="classes_per_arrival >= 2"):
        learner.learn(stream.arrival(0))
