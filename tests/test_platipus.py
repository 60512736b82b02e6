"""PLATIPUS: the Gaussian KL, the training loss recomputed by hand, the MAML limit, meta-gradients
against finite differences, test-time sampling, and a short sinusoid run that learns."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F

from innerloop.algorithms.optimization.maml import MAML
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive
from innerloop.algorithms.probabilistic.platipus import PLATIPUS, gaussian_kl
from innerloop.build import gradient_learner_options
from innerloop.config import config_from_dict
from innerloop.data.sinusoid import SinusoidSplit
from innerloop.nn import MLP, Conv4
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.regression import SinusoidTasks

INNER_LR = 0.05


def regression_learner(inner_steps: int = 2, **options) -> PLATIPUS:
    """A tiny float64 PLATIPUS (MLP 1-5-1) whose stds and steps are all different from each other."""
    torch.manual_seed(0)
    learner = PLATIPUS(MLP(1, (5,)), outputs=1, task="regression", inner_steps=inner_steps,
                       inner_lr=INNER_LR, **options).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for log_std, centre in ((learner.prior_log_std, 0.2), (learner.posterior_log_std, 0.05)):
            for value in log_std.values():
                value.copy_(math.log(centre) + 0.3 * torch.randn(value.shape, generator=generator,
                                                                 dtype=torch.float64))
        learner.prior_step.fill_(0.03)
        learner.posterior_step.fill_(0.07)
        learner.noise_log_std.fill_(-0.4)
    return learner


def sinusoid_episodes(tasks: int = 2, shots: int = 5, queries: int = 6, seed: int = 0,
                      split: str = "train") -> Episodes:
    episodes = SinusoidTasks(SinusoidSplit(split), shots, queries).sample(tasks, torch.Generator().manual_seed(seed))
    return Episodes(episodes.support_x.double(), episodes.support_y.double(), episodes.query_x.double(),
                    episodes.query_y.double(), 1, shots, queries, episodes.class_ids)


def image_episodes(ways: int = 3, shots: int = 2, queries: int = 2, tasks: int = 2) -> Episodes:
    generator = torch.Generator().manual_seed(0)
    support_x = torch.rand(tasks, ways * shots, 1, 28, 28, generator=generator, dtype=torch.float64)
    query_x = torch.rand(tasks, ways * queries, 1, 28, 28, generator=generator, dtype=torch.float64)
    return Episodes(support_x, torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1), query_x,
                    torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1), ways, shots, queries,
                    torch.arange(ways).repeat(tasks, 1))


def fixed_noise(learner: PLATIPUS, tasks: int, samples: int, seed: int = 2) -> dict[str, torch.Tensor]:
    return learner.sample_noise(tasks, samples, torch.Generator().manual_seed(seed))


# -- (a) the KL between diagonal Gaussians ------------------------------------------------------
def test_gaussian_kl_matches_a_hand_computed_three_dimensional_case():
    # per dimension log(sp/sq) + (sq^2 + (mq-mp)^2) / (2 sp^2) - 1/2:
    # 0 + 1.25/2 - 0.5 = 0.125;  log 2 + 0.25/2 - 0.5;  -log 2 + 5/2 - 0.5;  total 1.75
    mean_q, std_q = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 0.5, 2.0])
    mean_p, std_p = torch.tensor([0.5, 1.0, 0.0]), torch.ones(3)
    kl = gaussian_kl(mean_q, std_q.log(), mean_p, std_p.log())
    assert float(kl) == pytest.approx(1.75, abs=1e-6)


def test_gaussian_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean_q, mean_p, log_std_q, log_std_p = torch.randn(4, 2, 7, generator=generator, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean_q, log_std_q.exp()),
                                                 torch.distributions.Normal(mean_p, log_std_p.exp())).sum()
    assert torch.allclose(gaussian_kl(mean_q, log_std_q, mean_p, log_std_p), expected, rtol=1e-12)
    assert float(gaussian_kl(mean_q, log_std_q, mean_q, log_std_q)) == pytest.approx(0.0, abs=1e-12)


# -- (b) the training loss, recomputed by hand ----------------------------------------------------
def mlp(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    hidden = torch.relu(inputs @ params["body.layers.0.weight"].T + params["body.layers.0.bias"])
    return hidden @ params["head.weight"].T + params["head.bias"]


def hand_written_loss(learner: PLATIPUS, episodes: Episodes, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 for the MLP 1-5-1, written out with torch.autograd.grad (two inner steps)."""
    mean = dict(learner.network.named_parameters())
    names = list(mean)
    prior_std = {n: learner.prior_log_std[n.replace(".", "/")].exp() for n in names}
    posterior_std = {n: learner.posterior_log_std[n.replace(".", "/")].exp() for n in names}

    def gradient(params, inputs, targets):
        loss = F.mse_loss(mlp(params, inputs), targets)
        return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)))

    losses, kls = [], []
    for t in range(episodes.num_tasks):
        sx, sy, qx, qy = episodes.support_x[t], episodes.support_y[t], episodes.query_x[t], episodes.query_y[t]
        support_gradient, query_gradient = gradient(mean, sx, sy), gradient(mean, qx, qy)
        prior_mean = {n: mean[n] - learner.prior_step * support_gradient[n] for n in names}
        posterior_mean = {n: mean[n] - learner.posterior_step * query_gradient[n] for n in names}
        theta = {n: posterior_mean[n] + posterior_std[n] * noise[n][t, 0] for n in names}
        for _ in range(2):
            step = gradient(theta, sx, sy)
            theta = {n: theta[n] - INNER_LR * step[n] for n in names}
        outputs = mlp(theta, qx)
        noise_std = learner.noise_log_std.exp()
        noise_nll = (0.5 * math.log(2 * math.pi) + noise_std.log()
                     + (qy - outputs.detach()).square() / (2 * noise_std ** 2)).mean()
        kl = sum((prior_std[n].log() - posterior_std[n].log()
                  + (posterior_std[n] ** 2 + (posterior_mean[n] - prior_mean[n]) ** 2) / (2 * prior_std[n] ** 2)
                  - 0.5).sum() for n in names)
        losses.append(F.mse_loss(outputs, qy) + learner.kl_weight * kl + noise_nll)
        kls.append(kl)
    return torch.stack(losses).mean(), torch.stack(kls).mean()


def test_training_loss_and_its_gradient_match_a_hand_written_recomputation():
    learner, episodes = regression_learner(kl_weight=0.1), sinusoid_episodes()
    noise = fixed_noise(learner, episodes.num_tasks, samples=1)
    loss, metrics = learner.meta_loss(episodes, noise)
    expected, expected_kl = hand_written_loss(learner, episodes, noise)
    assert metrics["kl"] == pytest.approx(float(expected_kl.detach()), rel=1e-10) and metrics["kl"] > 1.0
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
    parameters = list(learner.parameters())
    gradients = torch.autograd.grad(loss, parameters)
    expected_gradients = torch.autograd.grad(expected, parameters)
    for got, want in zip(gradients, expected_gradients):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_the_test_time_predictor_is_the_prior_mean_step_then_sgd_written_by_hand():
    learner, episodes = regression_learner(eval_inner_steps=2, num_samples=2), sinusoid_episodes()
    learner.eval()
    noise = fixed_noise(learner, episodes.num_tasks, samples=2)
    with torch.no_grad():
        means = learner.predictive(episodes, noise).means  # [T, Q, M]
    mean = {n: p.detach() for n, p in learner.network.named_parameters()}

    def gradient(params, inputs, targets):
        params = {n: p.detach().requires_grad_() for n, p in params.items()}
        loss = F.mse_loss(mlp(params, inputs), targets)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    for t in range(episodes.num_tasks):
        sx, sy, qx = episodes.support_x[t], episodes.support_y[t], episodes.query_x[t]
        support_gradient = gradient(mean, sx, sy)
        prior_mean = {n: mean[n] - learner.prior_step.detach() * support_gradient[n] for n in mean}
        for m in range(2):
            prior_std = {n: learner.prior_log_std[n.replace(".", "/")].detach().exp() for n in mean}
            theta = {n: prior_mean[n] + prior_std[n] * noise[n][t, m] for n in mean}
            for _ in range(2):
                step = gradient(theta, sx, sy)
                theta = {n: theta[n] - INNER_LR * step[n] for n in mean}
            assert torch.allclose(means[t, :, m], mlp(theta, qx).squeeze(-1), rtol=1e-12, atol=1e-14)


# -- (c) the MAML limit ---------------------------------------------------------------------------
def shrink_to_maml(learner: PLATIPUS) -> None:
    with torch.no_grad():
        for value in [*learner.prior_log_std.values(), *learner.posterior_log_std.values()]:
            value.fill_(-80.0)  # std 1.8e-35: the samples are the means to float64 precision
        learner.prior_step.zero_()
        learner.posterior_step.zero_()


def test_with_vanishing_stds_and_steps_platipus_is_maml_at_test_time_and_in_training():
    learner, episodes = regression_learner(inner_steps=2, eval_inner_steps=3, num_samples=3), sinusoid_episodes()
    shrink_to_maml(learner)
    maml = MAML(copy.deepcopy(learner.network.body), outputs=1, task="regression", inner_steps=2,
                eval_inner_steps=3, inner_lr=INNER_LR).double()
    maml.load_state_dict({k: v for k, v in learner.state_dict().items() if k.startswith("network.")}
                         | {"noise_log_std": learner.noise_log_std.detach()})
    loss, metrics = learner.meta_loss(episodes)
    maml_loss, maml_metrics = maml.meta_loss(episodes)
    assert float(loss.detach()) == pytest.approx(float(maml_loss.detach()), rel=1e-12) and metrics["kl"] == 0.0
    for got, want in zip(torch.autograd.grad(loss, list(learner.network.parameters())),
                         torch.autograd.grad(maml_loss, list(maml.network.parameters()))):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)
    learner.eval(), maml.eval()
    with torch.no_grad():
        predictive = learner.predictive(episodes)
        assert isinstance(predictive, GaussianMixturePredictive) and predictive.components == 3
        assert torch.allclose(predictive.mean, maml.query_logits(episodes).squeeze(-1), rtol=1e-12, atol=1e-14)


def test_the_maml_limit_holds_for_a_conv4_classifier():
    torch.manual_seed(0)
    backbone = Conv4(in_channels=1, hidden_channels=4, image_size=28, batch_norm="task")
    learner = PLATIPUS(backbone, outputs=3, inner_steps=1, eval_inner_steps=2, inner_lr=0.4, num_samples=2).double()
    maml = MAML(copy.deepcopy(backbone), outputs=3, inner_steps=1, eval_inner_steps=2, inner_lr=0.4).double()
    maml.network.load_state_dict(learner.network.state_dict())
    shrink_to_maml(learner)
    learner.eval(), maml.eval()
    with torch.no_grad():
        probs = learner.predictive(image_episodes()).probs
        expected = CategoricalPredictive.from_logits(maml.query_logits(image_episodes())).probs
    assert torch.allclose(probs, expected, rtol=1e-10, atol=1e-12)


# -- (d) meta-gradients against finite differences -----------------------------------------------
@pytest.mark.parametrize("which", ["prior_log_std", "prior_step", "posterior_log_std", "posterior_step"])
def test_meta_gradients_of_the_prior_and_posterior_match_finite_differences(which):
    learner, episodes = regression_learner(kl_weight=0.1), sinusoid_episodes()
    noise = fixed_noise(learner, episodes.num_tasks, samples=2)
    learner.train_samples = 2
    tensor = getattr(learner, which)
    tensor = tensor["body/layers/0/weight"] if isinstance(tensor, torch.nn.ParameterDict) else tensor
    index = (2, 0) if tensor.dim() == 2 else ()
    (gradient,) = torch.autograd.grad(learner.meta_loss(episodes, noise)[0], tensor)

    def objective() -> float:  # the noise NLL sees the outputs detached: leave it out
        loss, metrics = learner.meta_loss(episodes, noise)
        return float(loss) - metrics["nll"]

    step = 1e-6
    with torch.no_grad():
        tensor[index] += step
        plus = objective()
        tensor[index] -= 2 * step
        minus = objective()
        tensor[index] += step
    assert abs(float(gradient[index])) > 1e-4
    assert float(gradient[index]) == pytest.approx((plus - minus) / (2 * step), rel=1e-5)


# -- (e) sampling at test time ----------------------------------------------------------------------
def test_test_time_samples_differ_by_seed_and_widen_the_predictive():
    learner, episodes = regression_learner(num_samples=5), sinusoid_episodes()
    learner.eval()
    with torch.no_grad():
        for value in learner.prior_log_std.values():
            value.fill_(math.log(0.3))
        torch.manual_seed(0)
        first = learner.predictive(episodes)
        torch.manual_seed(1)
        second = learner.predictive(episodes)
        torch.manual_seed(0)
        again = learner.predictive(episodes)
    assert torch.equal(first.means, again.means)
    assert (first.means - second.means).abs().min() > 1e-6
    noise_variance = math.exp(2 * learner.noise_log_std.item())
    assert bool((first.variance > noise_variance * (1 + 1e-6)).all())
    assert torch.allclose(first.variance, noise_variance + first.means.var(-1, unbiased=False))


@pytest.mark.parametrize("adapt", ["all", "head"])
def test_classifier_metrics_and_meta_gradient_reach_every_parameter(adapt):
    torch.manual_seed(0)
    backbone = Conv4(in_channels=1, hidden_channels=4, image_size=28, batch_norm="task")
    learner = PLATIPUS(backbone, outputs=3, inner_lr=0.4, adapt=adapt, num_samples=4, train_samples=2).double()
    episodes = image_episodes()
    loss, metrics = learner.meta_loss(episodes)
    assert set(metrics) == {"query_loss", "kl", "accuracy"} and metrics["kl"] > 0
    loss.backward()
    for name, parameter in learner.named_parameters():
        # A convolution's bias before batch norm changes no output: its gradient is exactly 0,
        # so its prior and posterior stay equal and its std gradients vanish too.
        if re.search(r"blocks[./]\d[./]0[./]bias", name):
            assert parameter.grad is None or parameter.grad.abs().max() < 1e-12, name
            continue
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert len(learner.prior_log_std) == (2 if adapt == "head" else len(list(learner.network.parameters())))
    learner.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        probs = learner.predictive(episodes).probs
        torch.manual_seed(3)
        accuracy = learner.episode_metric(episodes)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    assert torch.equal(accuracy, (probs.argmax(-1) == episodes.query_y).double().mean(1))


@pytest.mark.parametrize("kind", ["regression", "classification-all", "classification-head"])
def test_the_vmapped_path_gives_the_numbers_of_the_loop(kind):
    if kind == "regression":
        make = lambda vectorize: regression_learner(vectorize=vectorize, num_samples=3)  # noqa: E731
        episodes = sinusoid_episodes()
    else:
        adapt = kind.removeprefix("classification-")

        def make(vectorize: bool) -> PLATIPUS:
            torch.manual_seed(0)
            backbone = Conv4(in_channels=1, hidden_channels=4, image_size=28, batch_norm="task")
            return PLATIPUS(backbone, outputs=3, inner_lr=0.4, adapt=adapt, num_samples=3, train_samples=2,
                            vectorize=vectorize).double()
        episodes = image_episodes()
    loop, vmapped = make(False), make(True)
    noise = fixed_noise(loop, episodes.num_tasks, loop.train_samples)
    loop_loss, loop_metrics = loop.meta_loss(episodes, noise)
    vmapped_loss, vmapped_metrics = vmapped.meta_loss(episodes, noise)
    assert float(loop_loss.detach()) == pytest.approx(float(vmapped_loss.detach()), rel=1e-12)
    assert loop_metrics == pytest.approx(vmapped_metrics, rel=1e-10)
    for got, want in zip(torch.autograd.grad(vmapped_loss, list(vmapped.parameters())),
                         torch.autograd.grad(loop_loss, list(loop.parameters()))):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    noise = fixed_noise(loop, episodes.num_tasks, 3, seed=5)
    with torch.no_grad():
        loop_predictive, vmapped_predictive = loop.predictive(episodes, noise), vmapped.predictive(episodes, noise)
    for field in ("probs",) if kind != "regression" else ("means", "stds"):
        assert torch.allclose(getattr(loop_predictive, field), getattr(vmapped_predictive, field), rtol=1e-10)


def test_the_library_builds_it_from_a_config_and_refuses_what_it_cannot_do():
    config = config_from_dict({"data": {"dataset": "sinusoid"}, "model": {"algorithm": "maml", "backbone": "mlp"},
                               "inner": {"lr": 0.01}, "train": {"ways": 1}, "eval": {"ways": 1}})
    learner = PLATIPUS(MLP(1, (40, 40)), **gradient_learner_options(config), num_samples=7)
    assert (learner.num_samples, learner.metric_name) == (7, "mse")
    assert learner.prior_step.item() == learner.posterior_step.item() == pytest.approx(0.01)
    assert learner.kl_weight == pytest.approx(20 / 1761)  # inner_lr == initial_std; 1761 entries
    omniglot_rates = PLATIPUS(MLP(1, (4,)), outputs=1, task="regression", inner_lr=0.4)
    assert omniglot_rates.kl_weight == pytest.approx(20 / 40 ** 2 / 13)  # the mean gap scales with the rates
    with pytest.raises(ValueError, match="leave inner.batch_size unset"):
        PLATIPUS(MLP(1, (4,)), outputs=1, task="regression", inner_batch_size=2)
    classifier = PLATIPUS(Conv4(in_channels=1, hidden_channels=4, batch_norm="task"), outputs=3)
    with pytest.raises(ValueError, match="train and evaluate with the same ways"):
        classifier.meta_loss(image_episodes(ways=2))


# -- (f) a short training run learns ----------------------------------------------------------------
def test_a_short_sinusoid_run_lowers_the_held_out_query_mse():
    torch.manual_seed(0)
    learner = PLATIPUS(MLP(1, (40, 40)), outputs=1, task="regression", inner_lr=0.01, num_samples=5,
                       vectorize=True)
    sampler = SinusoidTasks(SinusoidSplit("train"), shots=10, queries=10)
    held_out = SinusoidTasks(SinusoidSplit("val"), shots=10, queries=20).sample(20, torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)

    def held_out_mse() -> float:
        learner.eval()
        with torch.no_grad():
            torch.manual_seed(0)
            score = float(learner.episode_metric(held_out).mean())
        learner.train()
        return score

    before = held_out_mse()
    for step in range(300):
        loss, metrics = learner.meta_loss(sampler.sample(5, torch.Generator().manual_seed(step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_mse()
    assert after < 0.55 * before, (before, after)  # 0.42-0.44 of it over three seeds
