"""VERSA: the predictive objective against hand-written and closed-form values, the samplers'
moments, way-agnostic and order-invariant amortization, the predictives, and short training runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive
from innerloop.algorithms.probabilistic.versa import STD_FLOOR, VERSA, HeadPosterior, sample_linear_outputs
from innerloop.data.sinusoid import SinusoidSplit
from innerloop.nn import MLP, Conv4
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.regression import SinusoidTasks

TASKS, SHOTS, QUERIES = 2, 2, 2
NOISE = 0.3  # pixel noise of the prototype-image classes


def classifier(num_samples: int = 4, **options) -> VERSA:
    torch.manual_seed(0)
    backbone = Conv4(in_channels=1, hidden_channels=8, image_size=16, batch_norm="running")
    return VERSA(backbone, num_samples=num_samples, **options).double()


def regressor(num_samples: int = 4, **options) -> VERSA:
    torch.manual_seed(0)
    return VERSA(MLP(1, (16, 16)), task="regression", num_samples=num_samples, hidden_size=16,
                 **options).double()


def image_episodes(ways: int = 3, shots: int = SHOTS, seed: int = 0, tasks: int = TASKS) -> Episodes:
    generator = torch.Generator().manual_seed(seed)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).clone()
    query_y = torch.arange(ways).repeat_interleave(QUERIES).expand(tasks, -1).clone()
    support_x = torch.rand(tasks, ways * shots, 1, 16, 16, generator=generator, dtype=torch.float64)
    query_x = torch.rand(tasks, ways * QUERIES, 1, 16, 16, generator=generator, dtype=torch.float64)
    return Episodes(support_x, support_y, query_x, query_y, ways, shots, QUERIES,
                    torch.arange(ways).expand(tasks, -1).clone())


def sinusoid_episodes(num_tasks: int = TASKS, shots: int = 5, queries: int = 6, seed: int = 0,
                      split: str = "train") -> Episodes:
    tasks = SinusoidTasks(SinusoidSplit(split), shots=shots, queries=queries)
    episodes = tasks.sample(num_tasks, torch.Generator().manual_seed(seed))
    return Episodes(*(tensor.double() for tensor in (episodes.support_x, episodes.support_y,
                                                       episodes.query_x, episodes.query_y)),
                    1, shots, queries, episodes.class_ids)


def posterior_and_query(learner: VERSA, episodes: Episodes):
    """q(ψ | support) and the query features (BatchNorm in eval mode: per-image features)."""
    with torch.no_grad():
        support, query = learner.embed(episodes.support_x), learner.embed(episodes.query_x)
        return learner.head_posterior(support, episodes.support_y, episodes.ways), query


# --- (a) the objective against a hand-written log-mean-exp ----------------------------------
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_loss_is_minus_mean_log_of_the_mean_sampled_likelihood(task: str) -> None:
    learner = (classifier if task == "classification" else regressor)(num_samples=5)
    episodes = image_episodes() if task == "classification" else sinusoid_episodes()
    with torch.no_grad():  # bigger amortized variances, so the samples differ
        learner.log_variance_head.bias.fill_(-1.0)
    torch.manual_seed(7)
    loss, metrics = learner.meta_loss(episodes)
    torch.manual_seed(7)
    outputs = learner.sampled_outputs(episodes)  # [L, T, Q, K]: the same draws
    num_samples, num_tasks, num_queries, _ = outputs.shape
    total = 0.0
    for t in range(num_tasks):
        for q in range(num_queries):
            log_likelihoods = []
            for sample in outputs[:, t, q].tolist():
                if task == "classification":
                    label = int(episodes.query_y[t, q])
                    log_likelihoods.append(sample[label] - math.log(sum(math.exp(v) for v in sample)))
                else:
                    std = math.log1p(math.exp(sample[1])) + STD_FLOOR
                    target = float(episodes.query_y[t, q, 0])
                    log_likelihoods.append(-0.5 * ((target - sample[0]) / std) ** 2 - math.log(std)
                                           - 0.5 * math.log(2 * math.pi))
            peak = max(log_likelihoods)
            total += peak + math.log(sum(math.exp(v - peak) for v in log_likelihoods)) - math.log(num_samples)
    expected = -total / (num_tasks * num_queries)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-10)
    assert metrics["nll"] == pytest.approx(expected, rel=1e-10)
    assert len({round(v, 6) for v in outputs[:, 0, 0, 0].tolist()}) == num_samples  # really sampled


@pytest.mark.parametrize("local", [True, False])
def test_both_samplers_draw_outputs_with_the_closed_form_mean_and_variance(local: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    posterior_parts = [torch.randn(2, 5, 4, generator=generator, dtype=torch.float64),
                       torch.randn(2, 5, 4, generator=generator, dtype=torch.float64) - 1,
                       torch.randn(2, 5, generator=generator, dtype=torch.float64),
                       torch.randn(2, 5, generator=generator, dtype=torch.float64) - 1]
    posterior = HeadPosterior(*posterior_parts)
    torch.manual_seed(0)
    samples = sample_linear_outputs(features, posterior, 40000, local_reparameterization=local)
    mean = torch.einsum("tqd,tkd->tqk", features, posterior.weight_mean) + posterior.bias_mean[:, None]
    variance = (torch.einsum("tqd,tkd->tqk", features ** 2, posterior.weight_log_variance.exp())
                + posterior.bias_log_variance.exp()[:, None])
    standard_error = (variance / 40000).sqrt()
    assert ((samples.mean(0) - mean).abs() < 5 * standard_error).all()
    assert torch.allclose(samples.var(0), variance, rtol=0.05)


# --- (b) the zero-variance limit is the mean head's plain likelihood ------------------------
def collapse_variances(learner: VERSA) -> None:
    with torch.no_grad():
        learner.log_variance_head.weight.zero_()
        learner.log_variance_head.bias.fill_(-60.0)  # std ~ 1e-13


def test_zero_variance_limit_is_cross_entropy_of_the_mean_head() -> None:
    learner, episodes = classifier(num_samples=6).eval(), image_episodes()
    collapse_variances(learner)
    posterior, query = posterior_and_query(learner, episodes)
    mean_logits = query @ posterior.weight_mean.transpose(-1, -2) + posterior.bias_mean[:, None]
    loss, metrics = learner.meta_loss(episodes)
    expected = F.cross_entropy(mean_logits.flatten(0, 1), episodes.query_y.flatten())
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-9)
    accuracy = (mean_logits.argmax(-1) == episodes.query_y).double().mean()
    assert metrics["accuracy"] == pytest.approx(float(accuracy))


def test_zero_variance_limit_is_gaussian_nll_of_the_mean_head() -> None:
    learner, episodes = regressor(num_samples=6), sinusoid_episodes()
    collapse_variances(learner)
    posterior, query = posterior_and_query(learner, episodes)
    head = query @ posterior.weight_mean.transpose(-1, -2) + posterior.bias_mean[:, None]
    mean, std = head[..., 0], F.softplus(head[..., 1]) + STD_FLOOR
    expected = F.gaussian_nll_loss(mean, episodes.query_y[..., 0], std ** 2, full=True)
    loss, metrics = learner.meta_loss(episodes)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-9)
    assert metrics["mse"] == pytest.approx(float((mean - episodes.query_y[..., 0]).pow(2).mean()))


# --- (c) any number of ways, support order within a class does not matter -------------------
def test_one_model_serves_3_and_7_ways_class_by_class() -> None:
    learner = classifier().eval()
    seven = image_episodes(ways=7, shots=3)
    keep, keep_query = seven.support_y[0] < 3, seven.query_y[0] < 3  # the first 3 classes: a 3-way task
    three = Episodes(seven.support_x[:, keep], seven.support_y[:, keep], seven.query_x[:, keep_query],
                     seven.query_y[:, keep_query], 3, 3, QUERIES, seven.class_ids[:, :3])
    posterior_3, _ = posterior_and_query(learner, three)
    posterior_7, _ = posterior_and_query(learner, seven)
    assert posterior_7.weight_mean.shape == (TASKS, 7, learner.embedding_dim)
    assert torch.allclose(posterior_7.weight_mean[:, :3], posterior_3.weight_mean, atol=1e-12)
    assert torch.allclose(posterior_7.bias_log_variance[:, :3], posterior_3.bias_log_variance, atol=1e-12)
    assert learner.predictive(three).probs.shape == (TASKS, 3 * QUERIES, 3)
    assert learner.predictive(seven).probs.shape == (TASKS, 7 * QUERIES, 7)


def test_support_order_within_a_class_does_not_change_the_posterior_or_samples() -> None:
    learner, episodes = classifier().eval(), image_episodes(ways=3, shots=3)
    order = torch.tensor([2, 0, 1, 4, 5, 3, 8, 6, 7])  # shuffles within each class only
    shuffled = Episodes(episodes.support_x[:, order], episodes.support_y[:, order], episodes.query_x,
                        episodes.query_y, 3, 3, QUERIES, episodes.class_ids)
    assert torch.equal(shuffled.support_y, episodes.support_y)
    torch.manual_seed(1)
    original = learner.sampled_outputs(episodes)
    torch.manual_seed(1)
    assert torch.allclose(learner.sampled_outputs(shuffled), original, atol=1e-12)
    relabelled = Episodes(episodes.support_x, (episodes.support_y + 1) % 3, episodes.query_x,
                          (episodes.query_y + 1) % 3, 3, 3, QUERIES, episodes.class_ids)
    posterior, _ = posterior_and_query(learner, episodes)
    moved, _ = posterior_and_query(learner, relabelled)  # class c's weights move to row c + 1
    assert torch.allclose(moved.weight_mean.roll(-1, dims=1), posterior.weight_mean, atol=1e-12)


# --- (d) the predictives -------------------------------------------------------------------
def test_classification_predictive_is_the_mean_sampled_softmax() -> None:
    learner, episodes = classifier(eval_num_samples=30).eval(), image_episodes(ways=4)
    with torch.no_grad():
        learner.log_variance_head.bias.fill_(0.0)
    torch.manual_seed(3)
    predictive = learner.predictive(episodes)
    torch.manual_seed(3)
    outputs = learner.sampled_outputs(episodes)
    assert outputs.shape[0] == 30  # eval mode: eval_num_samples
    assert isinstance(predictive, CategoricalPredictive)
    assert torch.allclose(predictive.probs, outputs.softmax(-1).mean(0))
    assert torch.allclose(predictive.probs.sum(-1), torch.ones(TASKS, 4 * QUERIES, dtype=torch.float64))
    torch.manual_seed(3)
    accuracy = (predictive.probs.argmax(-1) == episodes.query_y).double().mean(1)
    assert torch.equal(learner.episode_metric(episodes), accuracy)


def test_regression_predictive_is_a_mixture_with_positive_stds() -> None:
    learner, episodes = regressor(eval_num_samples=25).eval(), sinusoid_episodes()
    with torch.no_grad():  # raw std outputs far below zero: softplus underflows, the floor holds
        learner.mean_head.bias.view(2, -1)[1, -1] = -800.0
        learner.log_variance_head.bias.fill_(0.0)
    predictive = learner.predictive(episodes)
    assert isinstance(predictive, GaussianMixturePredictive)
    assert predictive.means.shape == (TASKS, 6, 25)
    assert (predictive.stds > 0).all() and (predictive.stds >= STD_FLOOR * (1 - 1e-9)).all()
    assert learner.metric_name == "mse" and not learner.higher_is_better
    squared_error = (learner.predictive(episodes).mean - episodes.query_y[..., 0]).pow(2).mean(1)
    assert learner.episode_metric(episodes).shape == squared_error.shape == (TASKS,)


def test_meta_gradient_matches_finite_differences() -> None:
    learner, episodes = regressor(), sinusoid_episodes()
    parameter = learner.log_variance_head.bias
    direction = torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss_at(shift: float) -> torch.Tensor:
        with torch.no_grad():
            parameter.add_(shift * direction)
        torch.manual_seed(11)  # the same noise: the reparameterised loss is a smooth function
        loss = learner.meta_loss(episodes)[0]
        with torch.no_grad():
            parameter.sub_(shift * direction)
        return loss

    loss_at(0.0).backward()
    analytic = float((parameter.grad * direction).sum())
    numeric = float((loss_at(1e-5) - loss_at(-1e-5)).detach()) / 2e-5
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert abs(analytic) > 1e-6  # the amortized variances get a learning signal


def test_from_config_picks_the_mode_from_the_dataset() -> None:
    def config(dataset: str, num_samples: int | None) -> SimpleNamespace:
        return SimpleNamespace(data=SimpleNamespace(dataset=dataset),
                               model=SimpleNamespace(num_samples=num_samples), train=SimpleNamespace(ways=5))

    regression = VERSA.from_config(MLP(1, (8,)), config("sinusoid", None))
    assert (regression.task, regression.num_samples, regression.metric_name) == ("regression", 10, "mse")
    classification = VERSA.from_config(Conv4(1, 8, 16), config("omniglot", 3))
    assert (classification.task, classification.num_samples) == ("classification", 3)
    assert classification.eval_num_samples >= 3 and not classification.transductive
    with pytest.raises(ValueError, match="embedding_dim"):
        VERSA(torch.nn.Linear(2, 2))


# --- (e) short training runs lower the held-out loss ---------------------------------------
def prototype_episodes(prototypes: torch.Tensor, classes: torch.Tensor, num_tasks: int, ways: int,
                       generator: torch.Generator) -> Episodes:
    chosen = torch.stack([classes[torch.randperm(len(classes), generator=generator)[:ways]]
                          for _ in range(num_tasks)])  # [T, ways]

    def draw(per_class: int) -> torch.Tensor:
        images = prototypes[chosen].repeat_interleave(per_class, dim=1)
        return images + NOISE * torch.randn(images.shape, generator=generator)

    support_y = torch.arange(ways).repeat_interleave(1).expand(num_tasks, -1).clone()
    query_y = torch.arange(ways).repeat_interleave(QUERIES).expand(num_tasks, -1).clone()
    return Episodes(draw(1), support_y, draw(QUERIES), query_y, ways, 1, QUERIES, chosen)


def held_out_loss(learner: VERSA, episodes: Episodes) -> float:
    learner.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        loss = float(learner.meta_loss(episodes)[0])
    learner.train()
    return loss


def test_training_on_prototype_images_lowers_held_out_loss() -> None:
    generator = torch.Generator().manual_seed(0)  # 1000 training classes, 10 new ones held out
    prototypes = (torch.rand(1010, 1, 16, 16, generator=generator) > 0.5).float()
    held_out = prototype_episodes(prototypes, torch.arange(1000, 1010), 8, 5, generator)
    torch.manual_seed(0)
    learner = VERSA(Conv4(1, 16, 16, batch_norm="running"), num_samples=10)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)
    before = held_out_loss(learner, held_out)
    for _ in range(100):
        loss, _ = learner.meta_loss(prototype_episodes(prototypes, torch.arange(1000), 4, 5, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss(learner, held_out)
    learner.eval()
    accuracy = float(learner.episode_metric(held_out).mean())
    assert after < before - 0.25 and accuracy > 0.45, (before, after, accuracy)  # chance: log 5, 0.2


def test_training_on_sinusoids_lowers_held_out_nll() -> None:
    tasks = SinusoidTasks(SinusoidSplit("train"), shots=10, queries=10)
    held_out = SinusoidTasks(SinusoidSplit("val"), shots=10, queries=20).sample(
        50, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    learner = VERSA(MLP(1, (40, 40)), task="regression", num_samples=10)
    optimizer = torch.optim.Adam(learner.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    before = held_out_loss(learner, held_out)
    for _ in range(300):
        loss, _ = learner.meta_loss(tasks.sample(25, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss(learner, held_out)
    assert after < before - 1.0, (before, after)
    learner.eval()
    torch.manual_seed(0)  # the predictive's exact mixture density agrees
    with torch.no_grad():
        nll = -learner.predictive(held_out).log_prob(held_out.query_y).mean()
    assert float(nll) < before - 1.0, (before, float(nll))
