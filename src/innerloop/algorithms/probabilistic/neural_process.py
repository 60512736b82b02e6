"""Neural Process (Garnelo, Schwarz, Rosenbaum, Viola, Rezende, Eslami & Teh, ICML 2018 workshop,
"Neural Processes"), with the deterministic path of the later variants (Kim et al. 2019).

Inner loop (``encode_context``), one forward pass of the support (context) set C:

    point_representations r_i = deterministic_encoder([support_x_i, support_y_i])
    (latent_mu, latent_sigma) = latent_encoder(support)        q(z | C), sigma = 0.1 + 0.9 sigmoid(.)

Predictor, for target inputs x: ``r(x) = mean_i r_i`` (the same for every x here; the ANP
replaces it with attention) and ``(mean, std) = decoder([x, r(x), z])``, std floored at 0.1.

Training objective (the ELBO). The target set is T = support ∪ query (``|T| = S + Q``), the
posterior ``q(z | T)`` comes from the latent encoder on all targets and the prior is ``q(z | C)``:

    z_k = posterior_mu + posterior_sigma * noise_k,   noise_k ~ N(0, I),  k = 1..train_samples
    expected_log_likelihood = (1/K) sum_k sum_{i in T} log N(y_i; mean(x_i, r_C, z_k), std^2)
    kl = KL(q(z | T) || q(z | C))                                 (closed form, summed over z)
    loss = mean_tasks (kl - expected_log_likelihood) / |T|

Normalisation: both terms are divided by the number of target points |T| (a per-point ELBO, as
in Le et al. 2018), then averaged over the tasks of the meta-batch. :meth:`elbo_terms` returns
the unnormalised per-task terms.

Predictive at evaluation: ``z_m ~ q(z | C)`` for ``m = 1..num_samples``, an equal-weight mixture
of the ``num_samples`` decoded Gaussians per query. Invariant to the order of the support points;
queries do not interact (not transductive). Regression only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import GaussianMixturePredictive
from innerloop.algorithms.probabilistic.neural_process_modules import (
    DEFAULT_HIDDEN_SIZES,
    Decoder,
    DeterministicEncoder,
    LatentEncoder,
    check_regression_shapes,
    gaussian_kl,
    gaussian_log_likelihood,
    hidden_sizes_from_config,
    mean_aggregate,
    support_and_query,
)
from innerloop.tasks.episodes import Episodes

DEFAULT_LATENT_DIM = 128
DEFAULT_NUM_SAMPLES = 16


@dataclass(frozen=True)
class ContextEncoding:
    """What the inner loop keeps of a context set (leading task dimension ``T``)."""

    context_x: Tensor  # [T, C, x_dim]
    point_representations: Tensor  # [T, C, R]
    latent_mu: Tensor  # [T, latent_dim]: the prior q(z | C)
    latent_sigma: Tensor  # [T, latent_dim]


@dataclass(frozen=True)
class ElboTerms:
    """The ELBO's terms per task (not normalised) and the decoded query means."""

    expected_log_likelihood: Tensor  # [T]: MC mean over z_k of the sum over target points of log p
    kl: Tensor  # [T]: KL(q(z | T) || q(z | C))
    num_targets: int  # |T| = S + Q
    query_means: Tensor  # [K, T, Q, y_dim]

    @property
    def loss(self) -> Tensor:
        """The negative per-target-point ELBO, averaged over tasks."""
        return ((self.kl - self.expected_log_likelihood) / self.num_targets).mean()


class NeuralProcess(MetaLearner):
    """A global latent ``z`` and a deterministic path, trained by the ELBO.

    Args:
        x_dim, y_dim: input and output dimensions (the predictive needs ``y_dim = 1``).
        hidden_sizes: encoder widths (the last is the representation size) and decoder hidden widths.
        latent_dim: size of ``z``.
        num_samples: samples of ``z ~ q(z | C)`` in :meth:`predictive` (mixture components).
        train_samples: reparameterised samples of ``z ~ q(z | T)`` per task in :meth:`meta_loss`.
        deterministic_path: False gives the original latent-only NP of Garnelo et al. 2018b.
    """

    name = "np"
    task_kinds = ("regression",)
    metric_name = "mse"
    higher_is_better = False
    adaptation = "one forward pass of the support set, then num_samples decoder passes per query"

    def __init__(self, x_dim: int = 1, y_dim: int = 1, hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
                 latent_dim: int = DEFAULT_LATENT_DIM, num_samples: int = DEFAULT_NUM_SAMPLES,
                 train_samples: int = 1, deterministic_path: bool = True) -> None:
        super().__init__()
        if num_samples < 1 or train_samples < 1:
            raise ValueError(f"num_samples and train_samples must be >= 1, got num_samples={num_samples}, "
                             f"train_samples={train_samples}")
        self.x_dim, self.y_dim, self.latent_dim = x_dim, y_dim, latent_dim
        self.num_samples, self.train_samples = num_samples, train_samples
        self.deterministic_encoder = (DeterministicEncoder(x_dim, y_dim, hidden_sizes) if deterministic_path
                                      else None)
        self.latent_encoder = LatentEncoder(x_dim, y_dim, hidden_sizes, latent_dim)
        representation_dim = hidden_sizes[-1] if deterministic_path else 0
        self.decoder = Decoder(x_dim, representation_dim + latent_dim, hidden_sizes, y_dim)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> NeuralProcess:
        """Own encoders, so ``backbone`` is not used. Reads ``model.hidden_sizes``,
        ``model.latent_dim`` (128) and ``model.num_samples`` (16, the predictive's samples)."""
        model = config.model
        return cls(hidden_sizes=hidden_sizes_from_config(config),
                   latent_dim=model.latent_dim or DEFAULT_LATENT_DIM,
                   num_samples=model.num_samples or DEFAULT_NUM_SAMPLES)

    def encode_context(self, context_x: Tensor, context_y: Tensor) -> ContextEncoding:
        """The inner loop: per-point representations and the prior ``q(z | C)``."""
        check_regression_shapes(context_x, context_y, self.x_dim, self.y_dim)
        points = (self.deterministic_encoder(context_x, context_y) if self.deterministic_encoder is not None
                  else context_x.new_zeros(*context_x.shape[:-1], 0))
        latent_mu, latent_sigma = self.latent_encoder(context_x, context_y)
        return ContextEncoding(context_x, points, latent_mu, latent_sigma)

    def deterministic_representation(self, encoding: ContextEncoding, target_x: Tensor) -> Tensor:
        """``r(x) [T, N, R]`` for each target: here the mean ``r_C`` for all of them."""
        return mean_aggregate(encoding.point_representations).unsqueeze(-2).expand(*target_x.shape[:-1], -1)

    def decode(self, encoding: ContextEncoding, target_x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Targets ``[T, N, x_dim]`` and latents ``z [K, T, latent_dim]`` → (mean, std), each
        ``[K, T, N, y_dim]``; the decoder reads ``[x, r(x), z]``."""
        num_samples = z.shape[0]
        representation = self.deterministic_representation(encoding, target_x)
        latent = z.unsqueeze(-2).expand(-1, -1, target_x.shape[-2], -1)
        representation = representation.expand(num_samples, *representation.shape)
        return self.decoder(target_x.expand(num_samples, *target_x.shape),
                            torch.cat([representation, latent], dim=-1))

    @staticmethod
    def sample_latent(mu: Tensor, sigma: Tensor, num_samples: int, noise: Tensor | None = None) -> Tensor:
        """Reparameterised ``z = mu + sigma * noise``, ``[K, T, latent_dim]`` (``noise`` drawn if not
        given)."""
        if noise is None:
            noise = torch.randn(num_samples, *mu.shape, dtype=mu.dtype, device=mu.device)
        return mu + sigma * noise

    def elbo_terms(self, episodes: Episodes, num_samples: int | None = None,
                   noise: Tensor | None = None) -> ElboTerms:
        """The ELBO's terms per task with context = support and targets = support ∪ query.

        ``noise [K, T, latent_dim]`` fixes the reparameterisation noise (K = ``num_samples``,
        by default ``train_samples``)."""
        num_samples = num_samples or (noise.shape[0] if noise is not None else self.train_samples)
        encoding = self.encode_context(episodes.support_x, episodes.support_y)
        target_x, target_y = support_and_query(episodes)
        posterior_mu, posterior_sigma = self.latent_encoder(target_x, target_y)
        z = self.sample_latent(posterior_mu, posterior_sigma, num_samples, noise)
        mean, std = self.decode(encoding, target_x, z)
        log_likelihood = gaussian_log_likelihood(target_y, mean, std).sum(-1)  # [K, T]
        kl = gaussian_kl(posterior_mu, posterior_sigma, encoding.latent_mu, encoding.latent_sigma)
        query_means = mean[:, :, episodes.support_x.shape[-2]:]
        return ElboTerms(log_likelihood.mean(0), kl, target_x.shape[-2], query_means)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """The negative ELBO per target point; metrics ``mse`` (queries, mean over the training
        samples of z ~ q(z | T)), ``nll`` (-expected log-likelihood / |T|) and ``kl`` (KL / |T|)."""
        terms = self.elbo_terms(episodes)
        mse = (terms.query_means.detach().mean(0) - episodes.query_y).square().mean()
        per_point = terms.num_targets
        return terms.loss, {"mse": float(mse),
                            "nll": float(-(terms.expected_log_likelihood.detach() / per_point).mean()),
                            "kl": float((terms.kl.detach() / per_point).mean())}

    def sampled_predictions(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                            num_samples: int | None = None,
                            noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Means and stds ``[K, T, Q, y_dim]`` of the queries under ``z_k ~ q(z | C)``."""
        encoding = self.encode_context(support_x, support_y)
        num_samples = num_samples or (noise.shape[0] if noise is not None else self.num_samples)
        z = self.sample_latent(encoding.latent_mu, encoding.latent_sigma, num_samples, noise)
        return self.decode(encoding, query_x, z)

    def predictive(self, episodes: Episodes) -> GaussianMixturePredictive:
        """An equal-weight mixture of ``num_samples`` Gaussians per query, ``[T, Q, num_samples]``."""
        if self.y_dim != 1:
            raise ValueError(f"GaussianMixturePredictive holds one output per query; this model has "
                             f"y_dim={self.y_dim}: use sampled_predictions for several outputs")
        means, stds = self.sampled_predictions(episodes.support_x, episodes.support_y, episodes.query_x)
        return GaussianMixturePredictive.from_samples(means, stds)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int = 1) -> ContextEncoding:
        """One task ``[S, x_dim], [S, y_dim]`` → its context encoding (task dimension of size 1)."""
        return self.encode_context(support_x.unsqueeze(0), support_y.unsqueeze(0))

    def predict(self, state: ContextEncoding, query_x: Tensor) -> Tensor:
        """The predictive mean ``[Q, y_dim]`` of one task (mean over ``num_samples`` latents)."""
        z = self.sample_latent(state.latent_mu, state.latent_sigma, self.num_samples)
        mean, _ = self.decode(state, query_x.unsqueeze(0), z)
        return mean.mean(0).squeeze(0)
