"""Attentive Neural Process (Kim, Mnih, Schwarz, Garnelo, Eslami, Rosenbaum, Vinyals & Teh,
ICLR 2019, "Attentive Neural Processes").

The :class:`~innerloop.algorithms.probabilistic.neural_process.NeuralProcess` with its
deterministic path made target-specific: instead of one mean ``r_C`` for every target, each
target input attends to the context points with multi-head cross-attention,

    r(x*) = cross_attention(queries = e(x*), keys = e(support_x_i), values = r_i)
          = W_o concat_h softmax((W_q^h e(x*)) · (W_k^h e(support_x_i)) / sqrt(d_head)) W_v^h r_i

with ``e`` a shared MLP embedding of inputs and ``r_i = deterministic_encoder([x_i, y_i])``.
The latent path, the decoder ``decoder([x, r(x), z])``, the ELBO (context = support, targets =
support ∪ query, normalised by |T|) and the mixture predictive over ``z ~ q(z | C)`` are the NP's.

Deviation from the paper: no self-attention among the context points (the paper's 1D regression
models use cross-attention only; self-attention was added for 2D image regression), so ``r_i``
and the latent path's per-point codes are plain MLPs. Attention is a softmax over the context
points, so the prediction is invariant to the support order; queries do not attend to each
other (not transductive). Regression only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from innerloop.algorithms.probabilistic.neural_process import (
    DEFAULT_LATENT_DIM,
    DEFAULT_NUM_SAMPLES,
    ContextEncoding,
    NeuralProcess,
)
from innerloop.algorithms.probabilistic.neural_process_modules import (
    DEFAULT_HIDDEN_SIZES,
    MultiHeadCrossAttention,
    hidden_sizes_from_config,
)

DEFAULT_NUM_HEADS = 8


class AttentiveNeuralProcess(NeuralProcess):
    """A neural process whose deterministic path is multi-head cross-attention to the context.

    Args: those of :class:`NeuralProcess` (always with the deterministic path), and
        num_heads: attention heads; must divide ``hidden_sizes[-1]``.
    """

    name = "anp"
    adaptation = ("one forward pass of the support set, then per query one attention over the support "
                  "and num_samples decoder passes")

    def __init__(self, x_dim: int = 1, y_dim: int = 1, hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
                 latent_dim: int = DEFAULT_LATENT_DIM, num_samples: int = DEFAULT_NUM_SAMPLES,
                 train_samples: int = 1, num_heads: int = DEFAULT_NUM_HEADS) -> None:
        super().__init__(x_dim, y_dim, hidden_sizes, latent_dim, num_samples, train_samples,
                         deterministic_path=True)
        self.cross_attention = MultiHeadCrossAttention(x_dim, hidden_sizes[-1], hidden_sizes, num_heads)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> AttentiveNeuralProcess:
        """Own encoders, so ``backbone`` is not used. Reads ``model.hidden_sizes`` (the last width
        must be a multiple of 8 heads), ``model.latent_dim`` (128) and ``model.num_samples`` (16)."""
        model = config.model
        return cls(hidden_sizes=hidden_sizes_from_config(config),
                   latent_dim=model.latent_dim or DEFAULT_LATENT_DIM,
                   num_samples=model.num_samples or DEFAULT_NUM_SAMPLES)

    def deterministic_representation(self, encoding: ContextEncoding, target_x: Tensor) -> Tensor:
        """``r(x*) [T, N, R]``: each target's attention-weighted summary of the context values."""
        return self.cross_attention(target_x, encoding.context_x, encoding.point_representations)
