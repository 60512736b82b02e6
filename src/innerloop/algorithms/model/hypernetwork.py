"""A hypernetwork for few-shot classification (after Ha, Dai & Le, ICLR 2017, applied to few-shot).

A set encoder reads the support set and generates the weights of a small target network that
classifies the queries. With support embeddings ``e_i = backbone(x_i)``:

    context = mean_i phi(e_i)                                       (DeepSets set encoder)
    hidden_weight = base_weight + reshape(generate_hidden(context))  (target layer 1, [H, D])
    t(x) = relu(hidden_weight · backbone(x) + hidden_bias)
    class_code[k] = mean_{i : support_y[i] = k} t(x_i)
    [class_weight[k], class_bias[k]] = generate_output([class_code[k], context])
    logits[q, k] = class_weight[k] · t(query_x[q]) + class_bias[k]

The last layer of ``generate_hidden`` starts at zero, so training starts from a fixed first
layer. Every step is a mean over the support set or a per-class function, so the prediction is
invariant to the support order and equivariant to relabelling the classes; any number of ways
works. Not transductive.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innerloop.algorithms.embedding_learner import EmbeddingLearner
from innerloop.algorithms.metric.protonet import class_means


class HyperNetwork(EmbeddingLearner):
    """A support-set encoder that generates a two-layer classifier on the backbone's embedding."""

    name = "hypernet"
    adaptation = "one forward pass of the support set and one pass of the weight generators"

    def __init__(self, backbone: nn.Module, context_dim: int = 128, target_hidden: int = 64) -> None:
        super().__init__(backbone)
        dim = backbone.embedding_dim
        self.set_encoder = nn.Sequential(nn.Linear(dim, context_dim), nn.ReLU(), nn.Linear(context_dim, context_dim))
        self.base_weight = nn.Parameter(torch.empty(target_hidden, dim))
        nn.init.kaiming_uniform_(self.base_weight, a=5 ** 0.5)
        self.hidden_bias = nn.Parameter(torch.zeros(target_hidden))
        self.generate_hidden = nn.Sequential(nn.ReLU(), nn.Linear(context_dim, target_hidden * dim))
        nn.init.zeros_(self.generate_hidden[1].weight)
        nn.init.zeros_(self.generate_hidden[1].bias)
        # no bias in the last layer: a constant added to every class's weights or bias would move
        # all logits of a query together, which the softmax ignores
        self.generate_output = nn.Sequential(nn.Linear(target_hidden + context_dim, context_dim), nn.ReLU(),
                                             nn.Linear(context_dim, target_hidden + 1, bias=False))
        self.target_hidden = target_hidden

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        context = self.set_encoder(support).mean(dim=1)  # [T, C]
        hidden_weight = self.base_weight + self.generate_hidden(context).view(-1, *self.base_weight.shape)
        support_hidden = torch.relu(support @ hidden_weight.transpose(-1, -2) + self.hidden_bias)
        query_hidden = torch.relu(query @ hidden_weight.transpose(-1, -2) + self.hidden_bias)
        codes = class_means(support_hidden, support_y, ways)  # [T, ways, H]
        generated = self.generate_output(torch.cat([codes, context.unsqueeze(1).expand(-1, ways, -1)], -1))
        class_weight, class_bias = generated[..., :-1], generated[..., -1]
        return query_hidden @ class_weight.transpose(-1, -2) + class_bias.unsqueeze(1)
