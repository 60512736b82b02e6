"""Conditional Neural Process (Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh,
Rezende & Eslami, ICML 2018, "Conditional Neural Processes").

Inner loop: one forward pass that encodes the support (context) set into one vector,

    r_i = encoder([support_x_i, support_y_i]),    representation = mean_i r_i

Predictor: every query gets its own Gaussian, ``(mean, std) = decoder([query_x, representation])``
with ``std = 0.1 + 0.9 * softplus(raw)``. Outer objective, over the tasks of a meta-batch:

    loss = mean_{t, q} -log N(query_y[t, q]; mean[t, q], std[t, q]^2)

The paper's training samples a random context subset and scores all points; here the context is
the episode's support set and the targets are its queries (the episodic split of the library).
The predictive is one Gaussian per query (``M = 1``). Invariant to the order of the support
points (a mean); each query is predicted independently (not transductive). Regression only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import GaussianMixturePredictive
from innerloop.algorithms.probabilistic.neural_process_modules import (
    DEFAULT_HIDDEN_SIZES,
    Decoder,
    DeterministicEncoder,
    check_regression_shapes,
    gaussian_log_likelihood,
    hidden_sizes_from_config,
    mean_aggregate,
)
from innerloop.tasks.episodes import Episodes


class ConditionalNeuralProcess(MetaLearner):
    """A deterministic set encoder and a Gaussian decoder (no latent variable).

    Args:
        x_dim, y_dim: input and output dimensions (the predictive needs ``y_dim = 1``).
        hidden_sizes: encoder layer widths (the last is the representation size) and the
            decoder's hidden widths.
    """

    name = "cnp"
    task_kinds = ("regression",)
    metric_name = "mse"
    higher_is_better = False
    adaptation = "one forward pass of the support set (mean of per-point encodings)"

    def __init__(self, x_dim: int = 1, y_dim: int = 1,
                 hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES) -> None:
        super().__init__()
        self.x_dim, self.y_dim = x_dim, y_dim
        self.encoder = DeterministicEncoder(x_dim, y_dim, hidden_sizes)
        self.decoder = Decoder(x_dim, self.encoder.representation_dim, hidden_sizes, y_dim)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> ConditionalNeuralProcess:
        """The CNP has its own encoder and decoder, so ``backbone`` is not used; the layer widths
        are ``config.model.hidden_sizes``."""
        return cls(hidden_sizes=hidden_sizes_from_config(config))

    def representation(self, support_x: Tensor, support_y: Tensor) -> Tensor:
        """``[T, S, x_dim], [T, S, y_dim] → [T, R]``: the mean of the per-point encodings."""
        check_regression_shapes(support_x, support_y, self.x_dim, self.y_dim)
        return mean_aggregate(self.encoder(support_x, support_y))

    def decode(self, representation: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor]:
        """``[T, R], [T, Q, x_dim] → (mean, std)``, each ``[T, Q, y_dim]``."""
        expanded = representation.unsqueeze(-2).expand(*query_x.shape[:-1], -1)
        return self.decoder(query_x, expanded)

    def query_distribution(self, episodes: Episodes) -> tuple[Tensor, Tensor]:
        """The predictive mean and std of every query, ``[T, Q, y_dim]`` each."""
        return self.decode(self.representation(episodes.support_x, episodes.support_y), episodes.query_x)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int = 1) -> Tensor:
        """One task: ``[S, x_dim], [S, y_dim] → representation [R]``."""
        return self.representation(support_x.unsqueeze(0), support_y.unsqueeze(0)).squeeze(0)

    def predict(self, state: Tensor, query_x: Tensor) -> Tensor:
        """The predictive mean ``[Q, y_dim]`` of one task's queries."""
        mean, _ = self.decode(state.unsqueeze(0), query_x.unsqueeze(0))
        return mean.squeeze(0)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Mean Gaussian NLL of the queries given the support; metrics ``mse`` and ``nll``."""
        mean, std = self.query_distribution(episodes)
        nll = -gaussian_log_likelihood(episodes.query_y, mean, std).mean()
        mse = (mean.detach() - episodes.query_y).square().mean()
        return nll, {"mse": float(mse), "nll": float(nll.detach())}

    def predictive(self, episodes: Episodes) -> GaussianMixturePredictive:
        """One Gaussian per query: means and stds ``[T, Q, 1]``."""
        if self.y_dim != 1:
            raise ValueError(f"GaussianMixturePredictive holds one output per query; this CNP has "
                             f"y_dim={self.y_dim}: use query_distribution for several outputs")
        mean, std = self.query_distribution(episodes)
        return GaussianMixturePredictive.gaussian(mean.squeeze(-1), std.squeeze(-1))
