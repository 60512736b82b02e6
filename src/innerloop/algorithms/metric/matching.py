"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

Inner loop: embed the support set, ``g(support_x[i])``. Predictor: attention over the support
set with a softmax over cosine similarities, and a label distribution that is the attention-
weighted sum of the support labels,

    a[q, i] = softmax_i cos(f(query_x[q]), g(support_x[i]))
    p[q, k] = sum_{i : support_y[i] = k} a[q, i],        logits[q, k] = log p[q, k].

Without full-context embeddings ``f = g = backbone`` and the method is a function of the support
*set*. With ``full_context_embeddings`` (FCE), as in the paper:

* ``g(x_i) = h_fwd_i + h_bwd_i + backbone(x_i)``: a bidirectional LSTM reads the support
  embeddings (in the support set's order, so the embedding depends on that order; training and
  evaluation both use the sampler's label-sorted order, as the paper fixes one order);
* ``f(x̂)`` runs ``attention_steps`` steps of an attention LSTM over the support set,

      h_hat_k, c_k = LSTM([backbone(x̂), r_{k-1}], (h_{k-1}, c_{k-1}))
      h_k = h_hat_k + backbone(x̂)
      r_k = sum_i softmax_i(h_k · g(x_i)) g(x_i),

  and ``f(x̂) = h_K``. The paper concatenates ``r`` to the hidden state; here it is an input of
  the cell next to ``backbone(x̂)``, which keeps the hidden size that of the embedding.

Each query is embedded from the support set and itself only: not transductive. Loss: the
cross-entropy of ``p`` on the queries.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.embedding_learner import EmbeddingLearner

PROBABILITY_FLOOR = 1e-12  # log p stays finite when a class gets no attention at all


class FullContextEmbeddings(nn.Module):
    """The two FCE LSTMs: support set context ``g`` and the attention LSTM ``f``."""

    def __init__(self, dim: int, attention_steps: int) -> None:
        super().__init__()
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.attention_cell = nn.LSTMCell(2 * dim, dim)
        self.attention_steps = attention_steps

    def support(self, embeddings: Tensor) -> Tensor:
        """``[T, S, D]`` → ``[T, S, D]``: ``h_fwd + h_bwd + embedding``."""
        outputs, _ = self.support_lstm(embeddings)
        forward, backward = outputs.chunk(2, dim=-1)
        return forward + backward + embeddings

    def query(self, embeddings: Tensor, support: Tensor) -> Tensor:
        """``[T, Q, D]`` queries, ``[T, S, D]`` context-embedded support → ``[T, Q, D]``."""
        num_tasks, num_queries, dim = embeddings.shape
        flat = embeddings.reshape(num_tasks * num_queries, dim)
        context = support.repeat_interleave(num_queries, dim=0)  # [T*Q, S, D]
        hidden = torch.zeros_like(flat)
        cell = torch.zeros_like(flat)
        readout = torch.zeros_like(flat)
        for _ in range(self.attention_steps):
            hidden, cell = self.attention_cell(torch.cat([flat, readout], dim=-1), (hidden, cell))
            hidden = hidden + flat
            attention = torch.softmax((context @ hidden.unsqueeze(-1)).squeeze(-1), dim=-1)
            readout = (attention.unsqueeze(-1) * context).sum(dim=1)
        return hidden.reshape(num_tasks, num_queries, dim)


def attention_log_probabilities(query: Tensor, support: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Cosine attention ``[T, Q, D]`` × ``[T, S, D]`` → log label probabilities ``[T, Q, ways]``."""
    cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(-1, -2)
    attention = torch.softmax(cosine, dim=-1)
    probabilities = attention @ F.one_hot(support_y, ways).to(attention.dtype)
    return probabilities.clamp_min(PROBABILITY_FLOOR).log()


class MatchingNet(EmbeddingLearner):
    """Matching Networks, optionally with full-context embeddings."""

    name = "matching"

    def __init__(self, backbone: nn.Module, full_context_embeddings: bool = False,
                 attention_steps: int = 5) -> None:
        super().__init__(backbone)
        if attention_steps < 1:
            raise ValueError(f"attention_steps must be >= 1, got {attention_steps}")
        self.context = (FullContextEmbeddings(backbone.embedding_dim, attention_steps)
                        if full_context_embeddings else None)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> MatchingNet:
        steps = config.model.attention_steps
        return cls(backbone, config.model.full_context_embeddings, 5 if steps is None else steps)

    def adaptation_cost(self) -> str:
        if self.context is None:
            return self.adaptation
        return (f"{self.adaptation}, a bidirectional LSTM over it, and {self.context.attention_steps} "
                f"attention-LSTM steps per query")

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        if self.context is not None:
            support = self.context.support(support)
            query = self.context.query(query, support)
        return attention_log_probabilities(query, support, support_y, ways)
