"""The neural-process family (CNP, NP, ANP): closed forms, the ELBO, attention, invariance, training."""

from __future__ import annotations

import math

import pytest
import torch

from innerloop.algorithms.probabilistic.attentive_neural_process import AttentiveNeuralProcess
from innerloop.algorithms.probabilistic.conditional_neural_process import ConditionalNeuralProcess
from innerloop.algorithms.probabilistic.neural_process import NeuralProcess
from innerloop.algorithms.probabilistic.neural_process_modules import gaussian_kl
from innerloop.config import Config
from innerloop.data.sinusoid import SinusoidSplit
from innerloop.nn import MLP
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.regression import SinusoidTasks

SMALL = (32, 32, 32)


def sinusoid_episodes(num_tasks: int, shots: int = 10, queries: int = 10, seed: int = 0,
                      split: str = "train") -> Episodes:
    return SinusoidTasks(SinusoidSplit(split), shots=shots, queries=queries).sample(
        num_tasks, torch.Generator().manual_seed(seed))


def small_learners() -> list:
    torch.manual_seed(0)
    return [ConditionalNeuralProcess(hidden_sizes=SMALL),
            NeuralProcess(hidden_sizes=SMALL, latent_dim=8, num_samples=6),
            AttentiveNeuralProcess(hidden_sizes=SMALL, latent_dim=8, num_samples=6, num_heads=4)]


def test_gaussian_kl_matches_the_closed_form_by_hand_and_torch_distributions():
    mu_q, sigma_q = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.5])
    mu_p, sigma_p = torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0])
    # dim 1: log(2/1) + (1 + 0.25) / (2 * 4) - 1/2 = log 2 + 0.15625 - 0.5
    # dim 2: log(1/0.5) + (0.25 + 1) / (2 * 1) - 1/2 = log 2 + 0.625 - 0.5
    by_hand = 2 * math.log(2) + 0.15625 + 0.625 - 1.0
    assert float(gaussian_kl(mu_q, sigma_q, mu_p, sigma_p)) == pytest.approx(by_hand, abs=1e-6)

    torch.manual_seed(0)
    mu_q, mu_p = torch.randn(2, 3, 5, 4, dtype=torch.float64).unbind(0)
    sigma_q, sigma_p = (0.1 + torch.rand(2, 3, 5, 4, dtype=torch.float64) * 2).unbind(0)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Independent(torch.distributions.Normal(mu_q, sigma_q), 1),
        torch.distributions.Independent(torch.distributions.Normal(mu_p, sigma_p), 1))
    assert torch.allclose(gaussian_kl(mu_q, sigma_q, mu_p, sigma_p), reference, atol=1e-12)
    assert torch.allclose(gaussian_kl(mu_q, sigma_q, mu_q, sigma_q), torch.zeros(3, 5, dtype=torch.float64))


@torch.no_grad()
def test_np_elbo_terms_equal_a_hand_recomputation_from_the_submodules():
    torch.manual_seed(3)
    model = NeuralProcess(hidden_sizes=(6, 5), latent_dim=2).double()
    support_x, support_y = torch.tensor([[-1.0], [0.5]]), torch.tensor([[0.3], [-0.7]])
    query_x, query_y = torch.tensor([[1.5]]), torch.tensor([[0.9]])
    episodes = Episodes(support_x[None].double(), support_y[None].double(), query_x[None].double(),
                        query_y[None].double(), ways=1, shots=2, queries=1,
                        class_ids=torch.zeros(1, 1, dtype=torch.int64))
    noise = torch.tensor([[[0.4, -1.2]]], dtype=torch.float64)  # [K = 1, T = 1, latent_dim = 2]
    terms = model.elbo_terms(episodes, noise=noise)

    def latent(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = model.latent_encoder.point_network(torch.cat([x, y], -1).double()).mean(0)
        out = model.latent_encoder.head(pooled)
        return out[:2], 0.1 + 0.9 / (1 + torch.exp(-out[2:]))

    all_x, all_y = torch.cat([support_x, query_x]).double(), torch.cat([support_y, query_y]).double()
    prior_mu, prior_sigma = latent(support_x, support_y)
    posterior_mu, posterior_sigma = latent(all_x, all_y)
    z = posterior_mu + posterior_sigma * noise[0, 0]
    r_context = model.deterministic_encoder.network(torch.cat([support_x, support_y], -1).double()).mean(0)
    log_likelihood = 0.0
    for x, y in zip(all_x, all_y):
        out = model.decoder.network(torch.cat([x, r_context, z]))
        mean, std = out[0], 0.1 + 0.9 * torch.log1p(torch.exp(out[1]))
        log_likelihood += -0.5 * math.log(2 * math.pi) - torch.log(std) - 0.5 * ((y[0] - mean) / std) ** 2
    kl = sum(torch.log(prior_sigma[d] / posterior_sigma[d])
             + (posterior_sigma[d] ** 2 + (posterior_mu[d] - prior_mu[d]) ** 2) / (2 * prior_sigma[d] ** 2)
             - 0.5 for d in range(2))

    assert terms.num_targets == 3
    assert float(terms.expected_log_likelihood[0]) == pytest.approx(float(log_likelihood), abs=1e-10)
    assert float(terms.kl[0]) == pytest.approx(float(kl), abs=1e-10)
    assert float(terms.kl[0]) > 0
    assert float(terms.loss) == pytest.approx(float((kl - log_likelihood) / 3), abs=1e-10)
    # two samples average the two single-sample log-likelihoods
    other = torch.tensor([[[-0.3, 0.8]]], dtype=torch.float64)
    both = model.elbo_terms(episodes, noise=torch.cat([noise, other]))
    single = model.elbo_terms(episodes, noise=other).expected_log_likelihood
    assert torch.allclose(both.expected_log_likelihood, (terms.expected_log_likelihood + single) / 2)


@torch.no_grad()
def test_predictives_have_the_right_shapes_floored_stds_and_the_sampled_mixture_mean():
    cnp, np_model, anp = small_learners()
    episodes = sinusoid_episodes(3, shots=5, queries=7)
    single = cnp.predictive(episodes)
    assert single.means.shape == (3, 7, 1) and (single.stds >= 0.1).all()
    for model in (np_model, anp, NeuralProcess(hidden_sizes=SMALL, latent_dim=4, num_samples=5,
                                               deterministic_path=False)):
        torch.manual_seed(11)
        mixture = model.predictive(episodes)
        torch.manual_seed(11)
        means, stds = model.sampled_predictions(episodes.support_x, episodes.support_y, episodes.query_x)
        assert mixture.means.shape == mixture.stds.shape == (3, 7, model.num_samples)
        assert (mixture.stds >= 0.1).all()
        assert torch.allclose(mixture.mean, means.squeeze(-1).mean(0).double())
        assert torch.allclose(mixture.means, means.squeeze(-1).permute(1, 2, 0).double())
        assert float(mixture.means.std(-1).mean()) > 1e-4  # the latent changes the prediction
        assert model.episode_metric(episodes).shape == (3,)


@torch.no_grad()
def test_anp_cross_attention_to_one_context_point_returns_its_value_projection():
    torch.manual_seed(4)
    attention = AttentiveNeuralProcess(hidden_sizes=(16, 16), latent_dim=4, num_heads=4).cross_attention
    target_x = torch.randn(2, 9, 1)
    context_x, values = torch.randn(2, 1, 1), torch.randn(2, 1, 16)
    output = attention(target_x, context_x, values)
    expected = attention.output_projection(attention.value_projection(values))  # [2, 1, 16]
    assert torch.allclose(output, expected.expand(-1, 9, -1), atol=1e-6)
    # context points at the same input get equal weight: the output is their values' mean
    three_values = torch.randn(2, 3, 16)
    twins = attention(target_x, context_x.expand(-1, 3, -1), three_values)
    weights = attention.attention_weights(target_x, context_x.expand(-1, 3, -1))
    assert torch.allclose(weights, torch.full_like(weights, 1 / 3), atol=1e-6)
    mean_value = attention.output_projection(attention.value_projection(three_values).mean(1, keepdim=True))
    assert torch.allclose(twins, mean_value.expand(-1, 9, -1), atol=1e-6)


@torch.no_grad()
def test_anp_deterministic_path_depends_on_the_target_and_np_path_does_not():
    _, np_model, anp = small_learners()
    episodes = sinusoid_episodes(2, shots=6, queries=4)
    for model, varies in ((np_model, False), (anp, True)):
        encoding = model.encode_context(episodes.support_x, episodes.support_y)
        representation = model.deterministic_representation(encoding, episodes.query_x)
        spread = float((representation - representation[:, :1]).abs().max())
        assert (spread > 1e-4) == varies


@pytest.mark.parametrize("index", [0, 1, 2], ids=["cnp", "np", "anp"])
def test_prediction_is_invariant_to_the_order_of_the_support_points(index: int):
    model = small_learners()[index]
    episodes = sinusoid_episodes(3, shots=8, queries=5)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    shuffled = Episodes(episodes.support_x[:, order], episodes.support_y[:, order], episodes.query_x,
                        episodes.query_y, 1, 8, 5, episodes.class_ids)
    torch.manual_seed(7)
    original = model.predictive(episodes)
    torch.manual_seed(7)
    permuted = model.predictive(shuffled)
    assert torch.allclose(original.means, permuted.means, atol=1e-5)
    assert torch.allclose(original.stds, permuted.stds, atol=1e-5)
    # the single-task adapt/predict path agrees with the batched predictive (CNP: deterministic)
    if index == 0:
        state = model.adapt(episodes.support_x[1], episodes.support_y[1], 1)
        assert torch.allclose(model.predict(state, episodes.query_x[1]).squeeze(-1).double(),
                              original.mean[1], atol=1e-6)


def test_from_config_reads_the_model_options_and_ignores_the_backbone():
    config = Config()
    config.data.dataset = "sinusoid"
    config.model.hidden_sizes, config.model.latent_dim, config.model.num_samples = [24, 16], 4, 3
    backbone = MLP(1, (24, 16))
    for cls in (NeuralProcess, AttentiveNeuralProcess):
        model = cls.from_config(backbone, config)
        assert (model.latent_dim, model.num_samples) == (4, 3)
        assert model.predictive(sinusoid_episodes(2)).components == 3
        assert not any(p is q for p in model.parameters() for q in backbone.parameters())
    cnp = ConditionalNeuralProcess.from_config(backbone, config)
    assert cnp.encoder.representation_dim == 16 and cnp.metric_name == "mse" and not cnp.higher_is_better


def test_short_training_reduces_the_held_out_query_nll_of_every_method():
    held_out = sinusoid_episodes(32, seed=1, split="val")

    def query_nll(model) -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return float(-model.predictive(held_out).log_prob(held_out.query_y).mean())

    generator = torch.Generator().manual_seed(2)
    tasks = SinusoidTasks(SinusoidSplit("train"), shots=10, queries=10)
    for model in small_learners():
        before = query_nll(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(150):
            loss, metrics = model.meta_loss(tasks.sample(8, generator))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert math.isfinite(metrics["mse"]) and "nll" in metrics
        after = query_nll(model)
        assert after < before - 0.5, (model.name, before, after)
