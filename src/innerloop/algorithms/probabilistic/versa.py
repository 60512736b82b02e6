"""VERSA (Gordon, Bronskill, Bauer, Nowozin & Turner, ICLR 2019, "Meta-Learning Probabilistic
Inference for Prediction").

A shared feature extractor ``backbone`` maps inputs to ``features [..., D]``. An amortization
network maps a task's support set, in one forward pass, to a diagonal Gaussian
``q(ψ | support)`` over the task's linear head ``ψ = (weights [K, D], bias [K])``; the head's
outputs are ``outputs = features @ weights.T + bias``.

Classification (``K = ways``; the paper's few-shot classifier): one network shared by the classes,
so any number of ways works,

    class_features[c] = mean_{i : support_y[i] = c} backbone(support_x[i])
    weight_mean[c], weight_log_variance[c], bias_mean[c], bias_log_variance[c]
        = amortization(class_features[c])

Regression (``K = 2``: a mean and a raw standard deviation, so the noise may vary with x),

    pooled = mean_i point_encoder([backbone(support_x[i]), support_y[i]])
    weight_mean, weight_log_variance, bias_mean, bias_log_variance = amortization(pooled)
    mean = outputs[..., 0],  std = softplus(outputs[..., 1]) + 1e-3

Pooling ``[backbone(x_i), y_i]`` directly would give ``[mean φ, mean y]``, which loses which y
goes with which x, so each point first goes through ``point_encoder`` (a DeepSets encoder) and
the mean is taken after it.

Objective (the paper's amortized predictive objective; it has no KL term, and neither has this
code): with ``L = num_samples`` reparameterised samples ``ψ_l ~ q`` per task,

    loss = -mean_{t, q} [logsumexp_l log p(query_y[t, q] | query_x[t, q], ψ_l) - log L]

Sampling: the outputs are linear in ψ, so by default (``local_reparameterization``, Kingma,
Salimans & Welling 2015) each query's outputs are drawn directly,

    output_mean = features @ weight_mean.T + bias_mean
    output_variance = features² @ exp(weight_log_variance).T + exp(bias_log_variance)
    outputs_l = output_mean + sqrt(output_variance) * noise_l,

which gives every query exactly the distribution of outputs that sampling ψ_l gives (the same
expected objective and predictive) with lower-variance gradients. With it off, ψ_l itself is
drawn and shared by a task's queries (coherent sampled functions). Training uses
``num_samples`` samples; evaluation (``eval()`` mode) uses ``eval_num_samples``. The predictive
is the mean of the sampled softmaxes, or the equal-weight mixture of the sampled Gaussians. The
backbone's BatchNorm keeps running statistics for evaluation: not transductive.

``amortization`` is ``Linear → ELU`` blocks of width ``hidden_size`` followed by two linear
layers, ``mean_head`` and ``log_variance_head`` (the latter starts at ``initial_log_variance``, a
nearly deterministic head; the objective learns the spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner, embed_episodes
from innerloop.algorithms.metric.protonet import class_means
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive, Predictive
from innerloop.functional.gaussians import gaussian_log_density
from innerloop.tasks.episodes import Episodes

STD_FLOOR = 1e-3  # regression: std = softplus(raw) + STD_FLOOR


@dataclass(frozen=True)
class HeadPosterior:
    """q(ψ | support) per task: ``weight_* [T, K, D]``, ``bias_* [T, K]``."""

    weight_mean: Tensor
    weight_log_variance: Tensor
    bias_mean: Tensor
    bias_log_variance: Tensor


def mlp(sizes: list[int]) -> nn.Sequential:
    """``Linear → ELU`` blocks through ``sizes`` (the last block has its ELU too)."""
    layers: list[nn.Module] = []
    for width, size in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width, size), nn.ELU()]
    return nn.Sequential(*layers)


def sample_linear_outputs(features: Tensor, posterior: HeadPosterior, num_samples: int,
                          local_reparameterization: bool = True) -> Tensor:
    """``features [T, N, D]`` through ``num_samples`` heads ψ ~ q → outputs ``[L, T, N, K]``."""
    p = posterior
    if local_reparameterization:
        mean = features @ p.weight_mean.transpose(-1, -2) + p.bias_mean.unsqueeze(-2)
        variance = (features.square() @ p.weight_log_variance.exp().transpose(-1, -2)
                    + p.bias_log_variance.exp().unsqueeze(-2))
        noise = torch.randn((num_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        return mean + variance.clamp_min(1e-30).sqrt() * noise
    shape = (num_samples, *p.weight_mean.shape)
    weights = p.weight_mean + (0.5 * p.weight_log_variance).exp() * torch.randn(
        shape, dtype=features.dtype, device=features.device)
    bias = p.bias_mean + (0.5 * p.bias_log_variance).exp() * torch.randn(
        shape[:-1], dtype=features.dtype, device=features.device)
    return features @ weights.transpose(-1, -2) + bias.unsqueeze(-2)


class VERSA(MetaLearner):
    """Amortized Gaussian posterior over a linear head, trained on the predictive likelihood."""

    name = "versa"
    transductive = False
    backbone_batch_norm = "running"
    task_kinds = ("classification", "regression")
    adaptation = "one forward pass of the support set and of the amortization network"

    def __init__(self, backbone: nn.Module, task: str = "classification", num_samples: int = 10,
                 eval_num_samples: int | None = None, hidden_size: int | None = None,
                 initial_log_variance: float = -6.0, local_reparameterization: bool = True) -> None:
        super().__init__()
        if task not in self.task_kinds:
            raise ValueError(f"VERSA handles task kinds {self.task_kinds}, got task={task!r}")
        if num_samples < 1 or (eval_num_samples is not None and eval_num_samples < 1):
            raise ValueError(f"num_samples and eval_num_samples must be >= 1, got {num_samples} "
                             f"and {eval_num_samples}")
        embedding_dim = getattr(backbone, "embedding_dim", None)
        if not isinstance(embedding_dim, int):
            raise ValueError("VERSA needs a backbone with an integer `embedding_dim` attribute (the "
                             "width of its output features), such as innerloop.nn.Conv4 or MLP")
        self.backbone, self.task = backbone, task
        self.num_samples = num_samples
        self.eval_num_samples = eval_num_samples or max(100, num_samples)
        self.local_reparameterization = local_reparameterization
        self.metric_name = "accuracy" if task == "classification" else "mse"
        self.higher_is_better = task == "classification"
        if task == "classification":  # one class's pooled features → that class's (w_c, b_c)
            hidden = hidden_size or embedding_dim
            self.point_encoder = None
            self.amortization = mlp([embedding_dim, hidden, hidden])
            self.head_outputs = 1
        else:  # the whole support set → the (mean, raw std) head's 2 x (D + 1) numbers
            hidden = hidden_size or max(embedding_dim, 128)
            self.point_encoder = mlp([embedding_dim + 1, hidden, hidden])
            self.amortization = mlp([hidden, hidden])
            self.head_outputs = 2
        self.embedding_dim = embedding_dim
        size = self.head_outputs * (embedding_dim + 1)  # per class (or per task): weights and bias
        self.mean_head = nn.Linear(hidden, size)
        self.log_variance_head = nn.Linear(hidden, size)
        with torch.no_grad():  # start nearly deterministic; the objective sets the spread
            self.log_variance_head.weight.mul_(0.1)
            self.log_variance_head.bias.fill_(initial_log_variance)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> VERSA:
        from innerloop.data import DATASETS

        return cls(backbone, task=DATASETS[config.data.dataset].kind,
                   num_samples=config.model.num_samples or 10)

    # --- the inner loop: support set → q(ψ | support) -------------------------------------
    def embed(self, inputs: Tensor) -> Tensor:
        """``[T, N, ...]`` → features ``[T, N, D]`` in one backbone call."""
        return self.backbone(inputs.flatten(0, 1)).unflatten(0, inputs.shape[:2])

    def head_posterior(self, support: Tensor, support_y: Tensor, ways: int) -> HeadPosterior:
        """Support features ``[T, S, D]`` and labels (``[T, S]`` or targets ``[T, S, 1]``) → q."""
        if self.point_encoder is None:
            hidden = self.amortization(class_means(support, support_y, ways))  # [T, ways, H]
        else:
            points = torch.cat([support, support_y.to(support.dtype)], dim=-1)
            hidden = self.amortization(self.point_encoder(points).mean(dim=1, keepdim=True))  # [T, 1, H]
        shape = (*hidden.shape[:-1], self.head_outputs, self.embedding_dim + 1)
        mean = self.mean_head(hidden).reshape(shape).flatten(1, 2)  # [T, K, D + 1]
        log_variance = self.log_variance_head(hidden).reshape(shape).flatten(1, 2)
        return HeadPosterior(mean[..., :-1], log_variance[..., :-1], mean[..., -1], log_variance[..., -1])

    def sampled_outputs(self, episodes: Episodes, num_samples: int | None = None) -> Tensor:
        """Query outputs of ``L`` sampled heads ``[L, T, Q, K]`` (K = ways, or 2 for regression).
        ``L`` defaults to ``num_samples`` in training mode and ``eval_num_samples`` otherwise."""
        if num_samples is None:
            num_samples = self.num_samples if self.training else self.eval_num_samples
        if self.task == "classification":  # all images in one backbone call (BatchNorm: one batch)
            support, query = embed_episodes(self.backbone, episodes)
        else:
            support, query = self.embed(episodes.support_x), self.embed(episodes.query_x)
        posterior = self.head_posterior(support, episodes.support_y, episodes.ways)
        return sample_linear_outputs(query, posterior, num_samples, self.local_reparameterization)

    @staticmethod
    def gaussian_parameters(outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Regression head outputs ``[..., 2]`` → mean and std (softplus + floor), ``[...]``."""
        return outputs[..., 0], F.softplus(outputs[..., 1]) + STD_FLOOR

    # --- the outer objective -------------------------------------------------------------
    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """-mean over queries and tasks of log (1/L) Σ_l p(y | x, ψ_l)."""
        outputs = self.sampled_outputs(episodes)
        num_samples = outputs.shape[0]
        if self.task == "classification":
            labels = episodes.query_y.expand(num_samples, -1, -1).unsqueeze(-1)
            log_likelihood = outputs.log_softmax(-1).gather(-1, labels).squeeze(-1)  # [L, T, Q]
        else:
            mean, std = self.gaussian_parameters(outputs)
            targets = episodes.query_y.squeeze(-1)
            log_likelihood = gaussian_log_density(targets, mean, std)
        log_predictive = torch.logsumexp(log_likelihood, dim=0) - math.log(num_samples)  # [T, Q]
        loss = -log_predictive.mean()
        with torch.no_grad():
            metrics = {"nll": float(loss.detach())}
            if self.task == "classification":
                probs = outputs.softmax(-1).mean(0)
                metrics["accuracy"] = float((probs.argmax(-1) == episodes.query_y).float().mean())
            else:
                metrics["mse"] = float((mean.mean(0) - targets).square().mean())
        return loss, metrics

    # --- predictions ---------------------------------------------------------------------
    def predictive(self, episodes: Episodes) -> Predictive:
        """Mean sampled softmax ``[T, Q, ways]``, or the mixture of ``L`` sampled Gaussians."""
        outputs = self.sampled_outputs(episodes)
        if self.task == "classification":
            return CategoricalPredictive.average(outputs, dim=0)
        return GaussianMixturePredictive.from_samples(*self.gaussian_parameters(outputs))

    def query_logits(self, episodes: Episodes) -> Tensor:
        """Log predictive probabilities ``[T, Q, ways]`` (regression: the predictive mean ``[T, Q, 1]``)."""
        predictive = self.predictive(episodes)
        dtype = episodes.query_x.dtype
        if isinstance(predictive, CategoricalPredictive):
            return predictive.probs.clamp_min(1e-30).log().to(dtype)
        return predictive.mean.unsqueeze(-1).to(dtype)

    def episode_metric(self, episodes: Episodes) -> Tensor:
        """Per task: accuracy of the argmax of the averaged probabilities, or the query MSE of
        the predictive mean (float64 ``[T]``; a task with non-finite predictions scores nan)."""
        if self.task == "regression":
            return super().episode_metric(episodes)
        probs = self.predictive(episodes).probs
        accuracy = (probs.argmax(-1) == episodes.query_y).to(torch.float64).mean(dim=1)
        finite = torch.isfinite(probs).flatten(1).all(dim=1)
        return torch.where(finite, accuracy, torch.full_like(accuracy, float("nan")))

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> HeadPosterior:
        """q(ψ | support) for one task (leading task dimension of size 1)."""
        return self.head_posterior(self.embed(support_x[None]), support_y[None], ways)

    def predict(self, state: HeadPosterior, query_x: Tensor) -> Tensor:
        """One task's log predictive probabilities ``[Q, ways]`` (regression: mean ``[Q, 1]``)."""
        num_samples = self.num_samples if self.training else self.eval_num_samples
        outputs = sample_linear_outputs(self.embed(query_x[None]), state, num_samples,
                                        self.local_reparameterization)[:, 0]
        if self.task == "classification":
            return CategoricalPredictive.average(outputs).probs.clamp_min(1e-30).log().to(query_x.dtype)
        return self.gaussian_parameters(outputs)[0].mean(0).unsqueeze(-1)
