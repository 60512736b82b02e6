"""LEO: latent embedding optimization (Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero & Hadsell, ICLR 2019).

The classifier weights of a task are decoded from a low-dimensional per-class latent code that
is inferred from the support set and then adapted by gradient descent *in the latent space*.
With support embeddings ``e_i = backbone(x_i)``:

    encoder:   h_i = encode(e_i)
               pair_i = mean_j relation([h_i, h_j])                (relation net over the task's pairs)
               [mu_k, log_sigma_k] = mean_{i : y_i = k} pair_i
               z_k ~ N(mu_k, sigma_k^2)                            (the mean at evaluation)
    decoder:   [w_mu_k, w_log_sigma_k] = decode(z_k),  w_k ~ N(w_mu_k, w_sigma_k^2)
    classifier: logits[q, k] = w_k · e_q

    latent inner loop (latent_steps; eval_latent_steps at evaluation):
                                        z ← z - latent_lr * ∇_z CE(support; decode(z))
    fine-tuning (finetune_steps):       w ← w - finetune_lr * ∇_w CE(support; w)

``latent_lr`` and ``finetune_lr`` are learned. The outer loss on the queries adds the paper's
regularizers:

    loss = CE(query; w) + kl_weight * KL(N(mu, sigma^2) || N(0, I))
           + encoder_penalty * ||stop_gradient(z_adapted) - z_initial||^2
           + orthogonality_penalty * ||C - I||^2,   C = correlations between the decoder
           weights of the latent dimensions (rows of the [latent_dim, 2D] kernel).

The embeddings ``e`` are scaled to unit length first: on raw Conv-4 features (norms in the tens)
the latent steps at the paper's step size diverged within a few outer steps. Second order while meta-training (the inner gradients are differentiated), first order at
evaluation. Deviation: the paper decodes from frozen pre-trained WRN-28-10 features; here the
backbone is Conv-4, trained through the same loss. Per-class latents make it way-agnostic.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import embed_episodes
from innerloop.algorithms.embedding_learner import EmbeddingLearner
from innerloop.algorithms.metric.protonet import class_means
from innerloop.functional.gaussians import diagonal_gaussian_kl
from innerloop.tasks.episodes import Episodes


def decoder_orthogonality(weight: Tensor) -> Tensor:
    """``||C - I||^2`` for the correlation matrix ``C`` of the rows of ``weight``."""
    normalized = F.normalize(weight - weight.mean(dim=1, keepdim=True), dim=1)
    correlation = normalized @ normalized.T
    return (correlation - torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)).pow(2).sum()


def gaussian_kl_to_standard(mean: Tensor, log_std: Tensor) -> Tensor:
    """``KL(N(mean, exp(log_std)^2) || N(0, 1))`` summed over the last dimension."""
    return diagonal_gaussian_kl(mean, log_std, 0.0, 0.0).sum(-1)


class LEO(EmbeddingLearner):
    """Latent embedding optimization on the backbone's embedding."""

    name = "leo"

    def __init__(self, backbone: nn.Module, latent_dim: int = 64, latent_steps: int = 5, latent_lr: float = 1.0,
                 finetune_steps: int = 5, finetune_lr: float = 0.001, kl_weight: float = 1e-3,
                 encoder_penalty: float = 1e-3, orthogonality_penalty: float = 1e-3,
                 eval_latent_steps: int | None = None) -> None:
        super().__init__(backbone)
        dim = backbone.embedding_dim
        self.encode = nn.Linear(dim, latent_dim)
        self.relation = nn.Sequential(nn.Linear(2 * latent_dim, 2 * latent_dim), nn.ReLU(),
                                      nn.Linear(2 * latent_dim, 2 * latent_dim), nn.ReLU(),
                                      nn.Linear(2 * latent_dim, 2 * latent_dim))
        self.decode = nn.Linear(latent_dim, 2 * dim)
        self.log_latent_lr = nn.Parameter(torch.tensor(math.log(latent_lr)))
        self.log_finetune_lr = nn.Parameter(torch.tensor(math.log(finetune_lr)))
        self.latent_steps, self.finetune_steps = latent_steps, finetune_steps
        self.eval_latent_steps = latent_steps if eval_latent_steps is None else eval_latent_steps
        self.kl_weight, self.encoder_penalty = kl_weight, encoder_penalty
        self.orthogonality_penalty = orthogonality_penalty

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> LEO:
        return cls(backbone, latent_dim=config.model.latent_dim or 64, latent_steps=config.inner.steps,
                   latent_lr=config.inner.lr, eval_latent_steps=config.inner.eval_steps)

    def adaptation_cost(self) -> str:
        return (f"one forward pass of the support set; {self.eval_latent_steps} latent gradient steps and "
                f"{self.finetune_steps} weight fine-tuning steps on the linear head (no backbone backward)")

    def _sample(self, mean: Tensor, log_std: Tensor) -> Tensor:
        if not self.training:
            return mean
        return mean + log_std.exp() * torch.randn_like(mean)

    def latent_distribution(self, support: Tensor, support_y: Tensor, ways: int) -> tuple[Tensor, Tensor]:
        """Per-class latent mean and log standard deviation ``[T, ways, L]`` each."""
        hidden = self.encode(support)  # [T, S, L]
        count = hidden.shape[1]
        pairs = torch.cat([hidden.unsqueeze(2).expand(-1, -1, count, -1),
                           hidden.unsqueeze(1).expand(-1, count, -1, -1)], -1)
        per_example = self.relation(pairs).mean(dim=2)  # [T, S, 2L]
        return class_means(per_example, support_y, ways).chunk(2, dim=-1)

    def weights(self, latent: Tensor) -> Tensor:
        mean, log_std = self.decode(latent).chunk(2, dim=-1)
        return self._sample(mean, log_std)

    def _adapt(self, support: Tensor, support_y: Tensor, ways: int) -> dict[str, Tensor]:
        """The latent inner loop and fine-tuning, batched over tasks."""
        second_order = self.training and torch.is_grad_enabled()
        with torch.enable_grad():
            if not second_order:
                support = support.detach()
            mean, log_std = self.latent_distribution(support, support_y, ways)
            initial = self._sample(mean, log_std)
            latent = initial if second_order else initial.detach().requires_grad_()

            def support_loss(weights: Tensor) -> Tensor:
                logits = support @ weights.transpose(-1, -2)
                return F.cross_entropy(logits.flatten(0, 1), support_y.flatten(), reduction="sum") / support_y.shape[1]

            for _ in range(self.latent_steps if self.training else self.eval_latent_steps):
                (gradient,) = torch.autograd.grad(support_loss(self.weights(latent)), latent, create_graph=second_order)
                latent = latent - self.log_latent_lr.exp() * gradient
            weights = self.weights(latent)
            if not second_order:
                weights = weights.detach().requires_grad_()
            for _ in range(self.finetune_steps):
                (gradient,) = torch.autograd.grad(support_loss(weights), weights, create_graph=second_order)
                weights = weights - self.log_finetune_lr.exp() * gradient
        return {"weights": weights, "mean": mean, "log_std": log_std, "initial": initial, "latent": latent}

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
        weights = self._adapt(support, support_y, ways)["weights"]
        if not (self.training and torch.is_grad_enabled()):
            weights = weights.detach()
        return query @ weights.transpose(-1, -2)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        support, query = (F.normalize(e, dim=-1) for e in embed_episodes(self.backbone, episodes))
        adapted = self._adapt(support, episodes.support_y, episodes.ways)
        logits = query @ adapted["weights"].transpose(-1, -2)
        loss, metrics = self._classification_loss(logits, episodes)
        kl = gaussian_kl_to_standard(adapted["mean"], adapted["log_std"]).mean()
        drift = (adapted["latent"].detach() - adapted["initial"]).pow(2).sum(-1).mean()
        orthogonality = decoder_orthogonality(self.decode.weight.T)  # rows: latent dimensions
        total = (loss + self.kl_weight * kl + self.encoder_penalty * drift
                 + self.orthogonality_penalty * orthogonality)
        return total, metrics | {"kl": float(kl.detach()), "latent_drift": float(drift.detach())}
