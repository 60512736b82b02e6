"""SVGD (innerloop.functional.svgd) and Bayesian MAML, checked against closed forms, hand-written
loops and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from innerloop.algorithms import MAML
from innerloop.algorithms.probabilistic.bayesian_maml import BayesianMAML
from innerloop.data.sinusoid import SinusoidSplit
from innerloop.functional import inner_loop
from innerloop.functional import svgd as svgd_module
from innerloop.functional.svgd import (
    SVGD,
    kernel_gradient_term,
    median_bandwidth,
    pairwise_squared_distances,
    rbf_kernel,
    svgd_direction,
    svgd_step,
)
from innerloop.nn import MLP, Conv4
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.regression import SinusoidTasks

WAYS = 3


def random_particles(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Particles in 4-D, split over two tensors so that the dict is flattened as one vector."""
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(count, 2, generator=generator, dtype=torch.float64),
            "b": torch.randn(count, 1, 2, generator=generator, dtype=torch.float64)}


def flat(particles: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(t.shape[0], -1) for t in particles.values()], dim=1)


def sinusoid_episodes(tasks: int, shots: int = 5, queries: int = 10, seed: int = 0,
                      split: str = "train") -> Episodes:
    return SinusoidTasks(SinusoidSplit(split), shots=shots, queries=queries).sample(
        tasks, torch.Generator().manual_seed(seed))


def regression_learner(seed: int = 0, hidden: tuple[int, ...] = (8,), **options) -> BayesianMAML:
    torch.manual_seed(seed)
    return BayesianMAML(MLP(1, hidden), 1, task="regression", **options)


def image_episodes(tasks: int = 2, seed: int = 0) -> Episodes:
    generator = torch.Generator().manual_seed(seed)
    return Episodes(
        support_x=torch.rand(tasks, WAYS, 1, 16, 16, generator=generator, dtype=torch.float64),
        support_y=torch.arange(WAYS).repeat(tasks, 1),
        query_x=torch.rand(tasks, 2 * WAYS, 1, 16, 16, generator=generator, dtype=torch.float64),
        query_y=torch.arange(WAYS).repeat_interleave(2).repeat(tasks, 1),
        ways=WAYS, shots=1, queries=2, class_ids=torch.zeros(tasks, WAYS, dtype=torch.int64))


def image_learner(**options) -> BayesianMAML:
    torch.manual_seed(0)
    backbone = Conv4(in_channels=1, hidden_channels=3, image_size=16, batch_norm="task")
    return BayesianMAML(backbone, WAYS, inner_lr=0.3, num_particles=3, **options).double()


# -- the SVGD step ------------------------------------------------------------------------------
def test_kernel_gradient_term_matches_the_explicit_formula_and_autograd():
    particles = random_particles(3)
    theta = flat(particles)
    bandwidth = 1.7
    kernel = rbf_kernel(pairwise_squared_distances(particles), bandwidth)
    term = flat(kernel_gradient_term(particles, kernel, bandwidth))
    explicit = torch.zeros_like(theta)
    for m in range(3):
        for j in range(3):
            k = math.exp(-float((theta[j] - theta[m]).square().sum()) / bandwidth)
            explicit[m] += -2.0 / bandwidth * (theta[j] - theta[m]) * k
    torch.testing.assert_close(term, explicit / 3)
    first = theta.clone().requires_grad_()  # k(first_j, second_m): differentiate the first argument
    matrix = torch.exp(-(first.unsqueeze(1) - theta.unsqueeze(0)).square().sum(-1) / bandwidth)
    by_autograd = torch.stack([torch.autograd.grad(matrix[:, m].sum(), first, retain_graph=True)[0].sum(0)
                               for m in range(3)])
    torch.testing.assert_close(term, by_autograd / 3)


def test_svgd_step_matches_a_hand_written_loop_on_a_gaussian_target():
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    theta = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    distances = sorted(float((theta[i] - theta[j]).norm()) for i in range(4) for j in range(i + 1, 4))
    bandwidth = ((distances[2] + distances[3]) / 2) ** 2 / math.log(4)  # median of 6 pairs
    expected = theta.clone()
    for m in range(4):
        direction = torch.zeros(2, dtype=torch.float64)
        for j in range(4):
            k = math.exp(-float((theta[j] - theta[m]).square().sum()) / bandwidth)
            direction += k * (mean - theta[j]) - 2.0 / bandwidth * (theta[j] - theta[m]) * k
        expected[m] += 0.1 * direction / 4
    assert float(median_bandwidth(pairwise_squared_distances({"t": theta}))) == pytest.approx(bandwidth)
    torch.testing.assert_close(svgd_step({"t": theta}, {"t": mean - theta}, 0.1)["t"], expected)

    def loss(params, step):  # -sum_m log p(theta_m), the inner loop's convention
        return 0.5 * (params["t"] - mean).square().sum()

    through_inner_loop = inner_loop(loss, {"t": theta}, {"t"}, SVGD(0.1), 1)
    torch.testing.assert_close(through_inner_loop["t"], expected)


def test_one_particle_step_is_gradient_ascent_on_the_log_density():
    particle, score = random_particles(1, seed=2), random_particles(1, seed=3)
    stepped = svgd_step(particle, score, 0.3)
    for name in particle:
        torch.testing.assert_close(stepped[name], particle[name] + 0.3 * score[name])


def test_one_particle_bmaml_adapts_exactly_as_maml():
    bmaml = regression_learner(num_particles=1, inner_lr=0.05, inner_steps=2).double()
    torch.manual_seed(1)
    maml = MAML(MLP(1, (8,)), 1, task="regression", inner_lr=0.05, inner_steps=2).double()
    with torch.no_grad():
        for name, parameter in maml.network.named_parameters():
            parameter.copy_(bmaml.start_particles()[name][0])
    episode = sinusoid_episodes(1)[0]
    support_x, support_y = episode.support_x.double(), episode.support_y.double()
    particles = bmaml.adapt(support_x, support_y, 1).particles
    adapted = maml.adapt(support_x, support_y, 1).params
    for name, tensor in adapted.items():
        torch.testing.assert_close(particles[name][0], tensor)
    state = bmaml.adapt(support_x, support_y, 1)
    torch.testing.assert_close(bmaml.predict(state, episode.query_x.double()),
                               maml.predict(maml.adapt(support_x, support_y, 1), episode.query_x.double()))


def test_svgd_particles_reach_the_mean_and_spread_of_a_gaussian_target():
    target_mean, target_std = 2.0, 0.5
    theta = {"t": 0.3 * torch.randn(20, 1, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64) - 1.0}
    for _ in range(500):
        theta = svgd_step(theta, {"t": -(theta["t"] - target_mean) / target_std ** 2}, 0.1)
    assert float(theta["t"].mean()) == pytest.approx(target_mean, abs=0.02)
    assert float(theta["t"].std()) == pytest.approx(target_std, rel=0.1)


# -- Bayesian MAML ------------------------------------------------------------------------------
def test_chaser_loss_meta_gradient_matches_finite_differences(monkeypatch):
    """The leader and the bandwidths are constants of the meta-gradient (stop-gradient), so the
    finite differences hold them at their base-point values."""
    learner = regression_learner(num_particles=3, inner_lr=0.1, inner_steps=2, leader_steps=2).double()
    episodes = sinusoid_episodes(2)
    episodes = Episodes(episodes.support_x.double(), episodes.support_y.double(), episodes.query_x.double(),
                        episodes.query_y.double(), 1, 5, 10, episodes.class_ids)
    starts = [p for name, p in learner.named_parameters() if name.startswith("particles.")]
    loss, metrics = learner.meta_loss(episodes)
    gradients = torch.autograd.grad(loss, starts)
    leaders = []
    for t in range(2):
        state = learner.adapt(episodes.support_x[t], episodes.support_y[t], 1)
        leaders.append(learner.leader(state.particles, state.shared, episodes.support_x[t],
                                      episodes.support_y[t], episodes.query_x[t], episodes.query_y[t]))
    recorded: list[torch.Tensor] = []
    replay: list[torch.Tensor] = []

    def bandwidth(squared_distances: torch.Tensor) -> torch.Tensor:
        if replay:
            return replay.pop(0)
        recorded.append(median_bandwidth(squared_distances))
        return recorded[-1]

    monkeypatch.setattr(svgd_module, "median_bandwidth", bandwidth)

    def chaser_loss() -> float:
        replay.extend(recorded)
        total = 0.0
        with torch.no_grad():
            for t in range(2):
                chaser = learner.adapt(episodes.support_x[t], episodes.support_y[t], 1).particles
                total += float(sum((chaser[n] - leaders[t][n]).square().sum() for n in chaser))
        return total / 2

    assert chaser_loss() == pytest.approx(metrics["chaser_loss"], rel=1e-10)
    assert len(recorded) == 4  # two tasks, two chaser steps each
    generator = torch.Generator().manual_seed(5)
    epsilon = 1e-6
    for _ in range(3):
        directions = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in starts]
        with torch.no_grad():
            for p, d in zip(starts, directions):
                p.add_(epsilon * d)
            plus = chaser_loss()
            for p, d in zip(starts, directions):
                p.sub_(2 * epsilon * d)
            minus = chaser_loss()
            for p, d in zip(starts, directions):
                p.add_(epsilon * d)
        analytic = float(sum((g * d).sum() for g, d in zip(gradients, directions)))
        assert analytic == pytest.approx((plus - minus) / (2 * epsilon), rel=1e-6)


def test_short_training_lowers_the_held_out_query_mse():
    learner = regression_learner(hidden=(40, 40), num_particles=3, inner_lr=0.05, vectorize=True)
    held_out = sinusoid_episodes(50, shots=10, queries=50, seed=123, split="val")
    tasks = SinusoidTasks(SinusoidSplit("train"), shots=10, queries=10)

    def held_out_mse() -> float:
        learner.eval()
        with torch.no_grad():
            mse = float(learner.episode_metric(held_out).mean())
        learner.train()
        return mse

    before = held_out_mse()
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss, metrics = learner.meta_loss(tasks.sample(5, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert set(metrics) == {"chaser_loss", "mse", "nll"}
    assert held_out_mse() < 0.8 * before


def test_regression_predictive_is_the_particle_mixture_and_metrics_score_its_mean():
    learner = regression_learner(num_particles=4, inner_lr=0.1)
    with torch.no_grad():
        learner.noise_log_std.fill_(math.log(0.3))
    episodes = sinusoid_episodes(3)
    with torch.no_grad():
        outputs = torch.stack([learner.particle_outputs(learner.adapt(e.support_x, e.support_y, 1), e.query_x)
                               for e in (episodes[t] for t in range(3))])  # [T, M, Q, 1]
        predictive = learner.predictive(episodes)
    torch.testing.assert_close(predictive.means, outputs.squeeze(-1).transpose(1, 2).double())
    torch.testing.assert_close(predictive.stds, torch.full_like(predictive.means, 0.3))
    loss, metrics = learner.meta_loss(episodes)
    mse = (outputs.mean(1) - episodes.query_y).square().mean()
    assert metrics["mse"] == pytest.approx(float(mse), rel=1e-5)
    assert metrics["nll"] == pytest.approx(float(-predictive.log_prob(episodes.query_y).mean()), rel=1e-5)
    torch.testing.assert_close(learner.episode_metric(episodes),
                               (outputs.mean(1) - episodes.query_y).square().mean((1, 2)).double())


def test_classification_averages_particle_probabilities_and_vmap_matches_the_loop():
    learner, vectorized = image_learner(), image_learner(vectorize=True)
    episodes = image_episodes()
    outputs = learner.task_particle_outputs(episodes)  # [T, M, Q, ways]
    probabilities = learner.predictive(episodes).probs
    torch.testing.assert_close(probabilities, torch.softmax(outputs, -1).mean(1))
    loss, metrics = learner.meta_loss(episodes)
    accuracy = (probabilities.argmax(-1) == episodes.query_y).double().mean()
    assert metrics["accuracy"] == pytest.approx(float(accuracy))
    torch.testing.assert_close(learner.episode_metric(episodes),
                               (probabilities.argmax(-1) == episodes.query_y).double().mean(1))
    vectorized_loss, _ = vectorized.meta_loss(episodes)
    torch.testing.assert_close(vectorized_loss, loss)
    for a, b in zip(torch.autograd.grad(loss, list(learner.parameters())),
                    torch.autograd.grad(vectorized_loss, list(vectorized.parameters()))):
        torch.testing.assert_close(a, b)


def test_non_transductive_queries_are_predicted_from_the_support_set_and_themselves_only():
    learner = image_learner(transductive=False)
    episode = image_episodes(1)[0]
    state = learner.adapt(episode.support_x, episode.support_y, WAYS)
    changed = episode.query_x.clone()
    changed[1:] = torch.rand_like(changed[1:])
    first = learner.predict(state, episode.query_x)[0]
    torch.testing.assert_close(learner.predict(state, changed)[0], first)
    alone = learner.predict(state, episode.query_x[:1])[0]
    torch.testing.assert_close(alone, first)
    assert not torch.allclose(learner.predict(state, changed)[1], learner.predict(state, episode.query_x)[1])


def test_head_only_particles_share_the_body_and_the_kernel_sees_the_head_only():
    learner = image_learner(adapt="head", inner_steps=1)
    assert {n.split(".", 2)[2] for n, _ in learner.named_parameters() if n.startswith("particles.")} \
        == {"head/weight", "head/bias"}
    assert "head.weight" not in dict(learner.network.named_parameters())
    episode = image_episodes(1)[0]
    start = learner.start_particles()
    features = learner.network.body(episode.support_x)
    head = {n: t.detach().requires_grad_() for n, t in start.items()}
    logits = torch.stack([F.linear(features, head["head.weight"][m], head["head.bias"][m]) for m in range(3)])
    log_posterior = -sum(F.cross_entropy(logits[m], episode.support_y) for m in range(3))
    scores = dict(zip(head, torch.autograd.grad(log_posterior, list(head.values()))))
    expected = svgd_step({n: t.detach() for n, t in start.items()}, scores, 0.3)
    adapted = learner.adapt(episode.support_x, episode.support_y, WAYS).particles
    for name in expected:
        torch.testing.assert_close(adapted[name], expected[name])
    loss, _ = learner.meta_loss(image_episodes())
    body_gradient = torch.autograd.grad(loss, learner.network.body.blocks[0][0].weight)[0]
    assert float(body_gradient.abs().sum()) > 0  # the shared body learns through the chaser's steps


def test_direction_without_scores_for_every_tensor_and_bad_options_are_refused():
    with pytest.raises(KeyError, match="no score"):
        svgd_direction(random_particles(2), {"a": torch.zeros(2, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="inner optimizer"):
        regression_learner(inner_optimizer="adam")
    with pytest.raises(ValueError, match="num_particles"):
        regression_learner(num_particles=0)
