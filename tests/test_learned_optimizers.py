"""Learned optimizers: the LSTM optimizer (Andrychowicz et al. 2016) and the meta-learner LSTM
(Ravi & Larochelle 2017) — preprocessing, meta-gradients against finite differences in float64,
and that meta-training makes a better optimizer than the untrained one."""

from __future__ import annotations

import math

import pytest
import torch
from test_functional import WAYS, make_episodes, make_learner
from test_optimization_training import sinusoid_config

from innerloop.algorithms import MetaLearnerLSTM
from innerloop.algorithms.optimization.lstm_optimizer import LSTMOptimizer, preprocess_gradients
from innerloop.config import config_from_dict
from innerloop.errors import ConfigError
from innerloop.functional import SGD
from innerloop.tasks.optimizees import Problem, QuadraticProblems
from innerloop.train.learned_optimizer import meta_train_optimizer, optimize, window_meta_loss
from innerloop.train.trainer import Trainer


def test_gradient_preprocessing_follows_the_paper():
    grads = torch.tensor([2.0, -1e-3, 1e-6, -1e-6, 0.0], dtype=torch.float64)
    out = preprocess_gradients(grads, exponent=10.0)
    torch.testing.assert_close(out[0], torch.tensor([math.log(2.0) / 10, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[1], torch.tensor([math.log(1e-3) / 10, -1.0], dtype=torch.float64))
    # below e^-10 ~ 4.5e-5: (-1, e^10 g)
    torch.testing.assert_close(out[2], torch.tensor([-1.0, 1e-6 * math.exp(10)], dtype=torch.float64))
    torch.testing.assert_close(out[3], torch.tensor([-1.0, -1e-6 * math.exp(10)], dtype=torch.float64))
    torch.testing.assert_close(out[4], torch.tensor([-1.0, 0.0], dtype=torch.float64))


def test_unrolled_meta_gradient_of_the_lstm_optimizer_matches_finite_differences():
    torch.manual_seed(0)
    optimizer = LSTMOptimizer(hidden_size=5, detach_gradients=False).double()
    generator = torch.Generator().manual_seed(3)
    weights = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(4, generator=generator, dtype=torch.float64)
    problem = Problem({"theta": torch.randn(4, generator=generator, dtype=torch.float64)},
                      lambda params, step: (weights @ params["theta"] - targets).pow(2).sum())

    def meta_loss() -> torch.Tensor:
        start = dict(problem.params)
        return window_meta_loss(optimizer, problem, start, optimizer.init(start), 0, 5)[0]

    analytic = torch.autograd.grad(meta_loss(), list(optimizer.parameters()))
    directions = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in optimizer.parameters()]
    shifted = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, v in zip(optimizer.parameters(), directions):
                p.add_(sign * 1e-6 * v)
        shifted.append(float(meta_loss().detach()))
        with torch.no_grad():
            for p, v in zip(optimizer.parameters(), directions):
                p.sub_(sign * 1e-6 * v)
    numeric = (shifted[0] - shifted[1]) / 2e-6
    exact = sum(float((g * v).sum()) for g, v in zip(analytic, directions))
    assert abs(exact - numeric) < 1e-6 * max(1.0, abs(numeric))


def test_meta_training_makes_the_lstm_optimizer_better_on_held_out_quadratics():
    torch.manual_seed(0)
    family = QuadraticProblems()
    untrained, trained = LSTMOptimizer(), LSTMOptimizer()
    trained.load_state_dict(untrained.state_dict())
    history = meta_train_optimizer(trained, family.sample, meta_steps=60, unroll=20, truncation=10, lr=3e-3)
    assert len(history) == 60 and all(math.isfinite(h) for h in history)
    held_out = [family.sample(torch.Generator().manual_seed(10_000 + i)) for i in range(10)]

    def final_loss(optimizer) -> float:
        return sum(optimize(problem, optimizer, 20)[-1] for problem in held_out) / len(held_out)

    start = sum(optimize(problem, SGD(0.0), 0)[0] for problem in held_out) / len(held_out)
    assert final_loss(trained) < 0.2 * final_loss(untrained) and final_loss(trained) < 0.1 * start
    with pytest.raises(ValueError, match="truncation"):
        meta_train_optimizer(trained, family.sample, meta_steps=1, unroll=5, truncation=10)


def test_lstm_optimizer_is_an_inner_optimizer_of_the_functional_core():
    optimizer = LSTMOptimizer()
    params = {"a": torch.ones(2, 3), "b": torch.zeros(4)}
    state = optimizer.init(params)
    assert len(state) == 2 and state[0][0].shape == (10, 20)
    updated, new_state = optimizer.update({"a": torch.ones(2, 3), "b": torch.ones(4)}, state, params)
    assert {n: t.shape for n, t in updated.items()} == {n: t.shape for n, t in params.items()}
    assert not torch.equal(new_state[0][0], state[0][0])


def test_meta_learner_lstm_meta_gradient_matches_finite_differences_when_inputs_are_exact():
    from test_functional import directional_check

    learner = make_learner(MetaLearnerLSTM, "task", inner_steps=2)
    learner.cell.detach_inputs = False
    learner.cell.exponent = 1.0  # log|g| / p is strongly curved for tiny gradients at p = 10
    assert directional_check(learner, make_episodes(tasks=2), eps=1e-6) < 1e-7


def test_meta_learner_lstm_starts_as_a_small_learning_rate_and_trains_its_gates():
    learner = make_learner(MetaLearnerLSTM, "task", inner_steps=1)
    episodes = make_episodes(tasks=2)
    episode = episodes[0]
    state = learner.adapt(episode.support_x, episode.support_y, WAYS)
    name = "head.weight"
    start = dict(learner.network.named_parameters())[name]
    moved = (state.params[name] - start).abs().max()
    assert 0 < float(moved.detach()) < 0.1  # input gate ~ sigmoid(-4.5), forget gate ~ sigmoid(5)
    loss, _ = learner.meta_loss(episodes)
    grads = dict(zip([n for n, _ in learner.named_parameters()],
                     torch.autograd.grad(loss, list(learner.parameters()), allow_unused=True)))
    for key in ("cell.input_gate.weight", "cell.forget_gate.bias", "cell.lstm.weight_ih", "network.head.weight"):
        assert grads[key] is not None and float(grads[key].abs().sum()) > 0, key
    with pytest.raises(ValueError, match="per task"):
        make_learner(MetaLearnerLSTM, "task", vectorize=True)


def test_meta_learner_lstm_trains_from_a_config(tmp_path):
    values = sinusoid_config("metalstm", steps=3)
    values["inner"] |= {"vectorize": False, "steps": 2}
    trainer = Trainer(config_from_dict(values), tmp_path, progress=False)
    before = trainer.learner.cell.input_gate.bias.detach().clone()
    trainer.fit()
    assert not torch.equal(before, trainer.learner.cell.input_gate.bias.detach())
    with pytest.raises(ConfigError, match="metalstm"):
        config_from_dict({**values, "inner": {**values["inner"], "vectorize": True}})
