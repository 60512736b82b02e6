"""OML and naive fine-tuning: the inner step by hand, the meta-gradient against finite differences,
and online updates that touch only the PLN (OML) or every weight (fine-tuning)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from innerloop.functional import parameters_of
from innerloop.online import OML, ClassStream, NaiveFineTuning, OnlineNetwork
from innerloop.online.network import OUTPUT_BIAS, OUTPUT_WEIGHT


def tiny_network(dtype: torch.dtype = torch.float64, outputs: int = 4) -> OnlineNetwork:
    torch.manual_seed(0)
    return OnlineNetwork(outputs, backbone="mlp", image_size=4, hidden_size=5, mlp_sizes=(6,)).to(dtype)


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_one_inner_step_on_the_pln_by_hand():
    oml = OML(tiny_network(), inner_lr=0.5)
    x, y = images(1, 0), torch.tensor([2])
    features = oml.network.body(x)
    adapted = oml.adapt_pln(features, y)
    w1, b1 = oml.network.head[0].weight, oml.network.head[0].bias
    w2, b2 = oml.network.head[2].weight.clone(), oml.network.head[2].bias.clone()
    w2[2], b2[2] = 0.0, 0.0  # the trajectory's class starts from a reset output row
    pre = features @ w1.T + b1
    hidden = torch.relu(pre)
    error = torch.softmax(hidden @ w2.T + b2, dim=1) - F.one_hot(y, 4).double()  # dL/dlogits
    back = (error @ w2) * (pre > 0).double()  # dL/dpre
    expected = {"head.2.weight": w2 - 0.5 * error.T @ hidden, "head.2.bias": b2 - 0.5 * error[0],
                "head.0.weight": w1 - 0.5 * back.T @ features, "head.0.bias": b1 - 0.5 * back[0]}
    assert set(adapted) == set(expected)  # the inner loop touches the PLN only
    for name, value in expected.items():
        torch.testing.assert_close(adapted[name], value)


def test_meta_gradient_into_rln_and_pln_matches_finite_differences():
    oml = OML(tiny_network(), inner_lr=0.3)
    trajectory_x, trajectory_y = images(3, 1), torch.tensor([1, 1, 1])
    remember_x, remember_y = images(4, 2), torch.tensor([0, 2, 3, 1])
    params = list(oml.network.parameters())

    def loss() -> torch.Tensor:
        return oml.meta_loss(trajectory_x, trajectory_y, remember_x, remember_y)[0]

    grads = torch.autograd.grad(loss(), params)
    directions = [torch.randn_like(p, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions))
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, directions):
            p.add_(eps * d)
        plus = float(loss())
        for p, d in zip(params, directions):
            p.sub_(2 * eps * d)
        minus = float(loss())
        for p, d in zip(params, directions):
            p.add_(eps * d)
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-6)
    named = dict(zip([n for n, _ in oml.network.named_parameters()], grads))
    assert float(named["body.1.layers.0.weight"].abs().sum()) > 0  # the RLN is meta-learned
    # the reset row of the trajectory's class gets no gradient through its initial value...
    assert float(named[OUTPUT_WEIGHT][1].abs().sum()) == 0.0 and float(named[OUTPUT_BIAS][1]) == 0.0
    # ...the remembered classes' rows do
    assert float(named[OUTPUT_WEIGHT][0].abs().sum()) > 0


def test_online_updates_change_the_pln_and_leave_the_rln_untouched(coded_split):
    oml = OML(tiny_network(torch.float32, outputs=7), online_lr=0.2)
    before = {n: t.detach().clone() for n, t in parameters_of(oml.network).items()}
    stream = ClassStream(coded_split, 6, train_shots=3, test_shots=2, classes_per_arrival=2, seed=0)
    oml.start_stream(6, seed=0)
    assert oml.stream_params[OUTPUT_WEIGHT].shape == (6, 5) and not oml.stream_params[OUTPUT_WEIGHT].any()
    probes = []
    oml.learn(stream.arrival(0), probe=probes.append)
    assert len(probes) == 1 + 6  # before, then after each of the 6 single-image SGD steps
    for name, value in oml.stream_params.items():
        if name.startswith("body."):
            assert torch.equal(value, before[name]), name
    assert not torch.equal(oml.stream_params["head.0.weight"], before["head.0.weight"])
    assert oml.stream_params[OUTPUT_WEIGHT][:2].abs().sum() > 0  # the two new classes' rows moved
    for name, value in parameters_of(oml.network).items():  # the meta-learned network is kept as is
        assert torch.equal(value, before[name])


def test_one_online_step_is_plain_sgd_on_one_image(coded_split):
    learner = NaiveFineTuning(tiny_network(torch.float32, outputs=3), online_lr=0.1)
    stream = ClassStream(coded_split, 4, train_shots=2, test_shots=2, classes_per_arrival=2, seed=1)
    learner.start_stream(4, seed=1)
    start = {n: t.clone().requires_grad_() for n, t in learner.stream_params.items()}
    arrival = stream.arrival(0)
    loss = F.cross_entropy(torch.func.functional_call(learner.network, start, (arrival.train_x[:1],)),
                           arrival.train_y[:1])
    grads = dict(zip(start, torch.autograd.grad(loss, list(start.values()))))
    seen = []
    learner.learn(arrival, probe=lambda predict: seen.append(predict(arrival.train_x[:1]).detach()))
    expected_first = {n: (start[n] - 0.1 * grads[n]).detach() for n in start}
    logits_after_first = torch.func.functional_call(learner.network, expected_first, (arrival.train_x[:1],))
    torch.testing.assert_close(seen[1], logits_after_first[:, arrival.classes])
    # fine-tuning moves the representation too
    assert not torch.equal(learner.stream_params["body.1.layers.0.weight"], start["body.1.layers.0.weight"].detach())
    assert learner.logits(stream.test_x, torch.tensor([0, 1])).shape == (stream.test_x.shape[0], 2)


def test_streams_restart_from_the_trained_network(coded_split):
    learner = OML(tiny_network(torch.float32, outputs=3), online_lr=0.3)
    stream = ClassStream(coded_split, 4, train_shots=2, test_shots=2, classes_per_arrival=2, seed=2)
    learner.start_stream(4, 0)
    learner.learn(stream.arrival(0))
    learner.start_stream(4, 0)
    assert not learner.stream_params[OUTPUT_WEIGHT].any() and not learner.stream_params[OUTPUT_BIAS].any()
    with pytest.raises(RuntimeError, match="start_stream"):
        OML(tiny_network(torch.float32)).learn(stream.arrival(0))
