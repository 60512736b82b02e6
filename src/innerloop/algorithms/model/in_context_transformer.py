"""In-context learning with a transformer: adaptation is one forward pass over the episode.

Every support example becomes a token ``proj(backbone(x_i)) + label_embedding[y_i]``; every
query a token ``proj(backbone(x_q)) + label_embedding[unknown]``. A transformer encoder (no
positional encoding) reads all tokens at once under an attention mask that lets

* support tokens attend to the support tokens,
* each query token attend to the support tokens and to itself only,

and a linear readout of each query token gives its ``ways`` logits. So the prediction for a
query depends on the support *set* (any order gives the same numbers) and on that query alone:
not transductive, even though all queries share one forward pass. Trained by the query
cross-entropy, like every other learner; it has one label embedding and one output per label,
so it is built for ``ways``-way tasks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innerloop.algorithms.embedding_learner import EmbeddingLearner


def support_and_self_mask(num_support: int, num_queries: int, device: torch.device | None = None) -> Tensor:
    """Boolean attention mask ``[S + Q, S + Q]``, True where attention is *not* allowed."""
    size = num_support + num_queries
    allowed = torch.zeros(size, size, dtype=torch.bool, device=device)
    allowed[:, :num_support] = True
    allowed |= torch.eye(size, dtype=torch.bool, device=device)
    return ~allowed


class InContextTransformer(EmbeddingLearner):
    """A transformer encoder over (embedding + label) support tokens and query tokens."""

    name = "transformer"
    fixed_ways = True
    adaptation = "one forward pass of the support set and one transformer pass over all tokens"

    def __init__(self, backbone: nn.Module, ways: int | None = None, model_dim: int = 128,
                 layers: int = 4, heads: int = 4, feedforward_dim: int = 256) -> None:
        super().__init__(backbone, ways)
        self.project = nn.Linear(backbone.embedding_dim, model_dim)
        self.label_embedding = nn.Embedding(self.ways + 1, model_dim)  # index `ways`: unknown label
        layer = nn.TransformerEncoderLayer(model_dim, heads, feedforward_dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(model_dim)
        self.readout = nn.Linear(model_dim, self.ways)

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        num_support, num_queries = support.shape[1], query.shape[1]
        unknown = torch.full(query.shape[:2], self.ways, dtype=torch.long, device=query.device)
        tokens = torch.cat([self.project(support) + self.label_embedding(support_y),
                            self.project(query) + self.label_embedding(unknown)], dim=1)
        mask = support_and_self_mask(num_support, num_queries, tokens.device)
        hidden = self.encoder(tokens, mask=mask)
        return self.readout(self.norm(hidden[:, num_support:]))
